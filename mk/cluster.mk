# Local Kubernetes for tests and the demo (tests/cluster/): real kube-apiserver + controller-manager
# built from Debian's source package, plus a Python node harness.
CLUSTER_STATE ?= $(HOME)/.cache/snapmover/cluster

.PHONY: cluster-build cluster-up cluster-down cluster-status
cluster-build: ## Build and cache kube-apiserver/kube-controller-manager 1.20.2 (once per machine, ~4 min)
	scripts/kube-build.sh

# REAL_NODE=1: kube-scheduler + a real kubelet on containerd run the pods (root; the image from
# `make images` is imported), the harness keeps only the CSI driver's part.
REAL_NODE ?=
cluster-up: venv cluster-build $(if $(REAL_NODE),images) ## Start the local cluster (etcd, API server, controller-manager, harness; REAL_NODE=1: real kubelet); prints KUBECONFIG
	$(if $(REAL_NODE),scripts/node-setup.sh)
	$(PY) -m tests.cluster up --state $(CLUSTER_STATE) $(if $(REAL_NODE),--real-node)

cluster-down: venv ## Stop every process cluster-up started (by PID)
	$(PY) -m tests.cluster down --state $(CLUSTER_STATE)

cluster-status: venv ## Say whether the local cluster is running
	$(PY) -m tests.cluster status --state $(CLUSTER_STATE)
