# Container images (images/): one snapmover image serving as launcher and mover.
.PHONY: images images-lock
images: ## Build the snapmover image (docker, podman or buildah; no daemon needed) into build/images/*.oci.tar
	images/build.sh

images-lock: ## Regenerate images/requirements.lock (exact versions + hashes) from pyproject.toml's dependencies
	images/lock.sh
