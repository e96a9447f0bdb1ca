# snapmover — every target documents itself: a `## ` comment after the target name is its help line.
# Area-specific targets live in mk/*.mk (one file per area, so they can evolve independently).
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV ?= .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: help venv lint test test-unit demo bench clean
help: ## List every target with its one-line description
	@grep -hE '^[a-zA-Z0-9_.-]+:.*## ' $(MAKEFILE_LIST) | sort -u | \
		awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}'

venv: $(VENV)/.stamp ## Create .venv and install snapmover with its dev dependencies (idempotent)
$(VENV)/.stamp: pyproject.toml scripts/bootstrap.sh
	@scripts/bootstrap.sh $(VENV)

lint: venv ## ruff (lint + format check), mypy --strict, import-linter layer contracts
	$(VENV)/bin/ruff check jobs launcher tests bench
	$(VENV)/bin/ruff format --check jobs launcher tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

test-unit: venv ## Unit tests only (fast, no servers)
	$(PY) -m pytest tests/unit -q

test: lint ## Everything CI runs: lint, then unit, integration (S3) and e2e (local cluster) tests
	scripts/test.sh

clean: ## Remove build output (keeps the venv and the cached Kubernetes binaries)
	rm -rf build .pytest_cache .mypy_cache .ruff_cache

-include mk/*.mk
