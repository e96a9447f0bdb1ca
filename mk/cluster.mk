# Local Kubernetes for tests and the demo (tests/cluster/): kube-apiserver, controller-manager,
# kube-scheduler and kubelet built from Debian's source package, containerd from Debian (one real
# node, root needed), plus a Python stand-in for the CSI driver (provisioning, snapshots).
CLUSTER_STATE ?= $(HOME)/.cache/snapmover/cluster
# NODES=2: a second real node, node-2 (its own kubelet and containerd in a private mount namespace)
NODES ?= 1

.PHONY: cluster-build cluster-up cluster-down cluster-status
cluster-build: ## Build and cache kube-apiserver, controller-manager, scheduler, kubelet 1.20.2 (once per machine, ~6 min)
	scripts/kube-build.sh

cluster-up: venv cluster-build images ## Start the local cluster (etcd, API server, controller-manager, kube-scheduler, a real kubelet on containerd running the image, the CSI stand-in; NODES=2: a second real node); prints KUBECONFIG
	scripts/node-setup.sh
	$(PY) -m tests.cluster up --state $(CLUSTER_STATE) --nodes $(NODES)

cluster-down: venv ## Stop every process cluster-up started (by PID)
	$(PY) -m tests.cluster down --state $(CLUSTER_STATE)

cluster-status: venv ## Say whether the local cluster is running
	$(PY) -m tests.cluster status --state $(CLUSTER_STATE)
