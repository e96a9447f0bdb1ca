# Release artefacts: one install manifest rendered from the default kustomization.
.PHONY: release
release: ## Render the default install (CRDs + launcher, namespace snapmover) into build/install.yaml with kubectl kustomize
	@mkdir -p build
	kubectl kustomize manifests > build/install.yaml.tmp
	mv build/install.yaml.tmp build/install.yaml
	@echo "build/install.yaml: $$(grep -c '^kind:' build/install.yaml) objects"
