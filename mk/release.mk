# Release artefacts: the install manifests rendered from the kustomizations.
.PHONY: release
release: ## Render build/install.yaml (the default: launcher, namespace snapmover, no CRD) and build/install-without-velero.yaml (+ the CRDs)
	@mkdir -p build
	kubectl kustomize manifests > build/install.yaml.tmp
	kubectl kustomize manifests/overlays/without-velero > build/install-without-velero.yaml.tmp
	mv build/install.yaml.tmp build/install.yaml
	mv build/install-without-velero.yaml.tmp build/install-without-velero.yaml
	@echo "build/install.yaml: $$(grep -c '^kind:' build/install.yaml) objects (no CRD: Velero's, or apply build/install-without-velero.yaml)"
	@echo "build/install-without-velero.yaml: $$(grep -c '^kind:' build/install-without-velero.yaml) objects (with the CRDs)"
