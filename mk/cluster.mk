# Local Kubernetes for tests and the demo (tests/cluster/): real kube-apiserver + controller-manager
# built from Debian's source package, plus a Python node harness.
CLUSTER_STATE ?= $(HOME)/.cache/snapmover/cluster

.PHONY: cluster-build cluster-up cluster-down cluster-status
cluster-build: ## Build and cache kube-apiserver/kube-controller-manager 1.20.2 (once per machine, ~4 min)
	scripts/kube-build.sh

cluster-up: venv cluster-build ## Start the local cluster (etcd, API server, controller-manager, harness); prints KUBECONFIG
	$(PY) -m tests.cluster up --state $(CLUSTER_STATE)

cluster-down: venv ## Stop every process cluster-up started (by PID)
	$(PY) -m tests.cluster down --state $(CLUSTER_STATE)

cluster-status: venv ## Say whether the local cluster is running
	$(PY) -m tests.cluster status --state $(CLUSTER_STATE)
