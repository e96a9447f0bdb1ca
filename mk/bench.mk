# Benchmarks (bench/): snapmover vs restic and borg on the same generated data, in one run.
.PHONY: bench bench-quick bench-deps
bench-deps: ## Install restic, borgbackup and GNU time from Debian (idempotent)
	@missing=""; for p in restic borgbackup time; do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | \
		grep -q "install ok installed" || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "==> apt-get install$$missing"; apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; fi

bench: venv bench-deps ## Full benchmark (~2 GiB tree + 4 GiB image, local + S3); writes bench/results/latest.{md,json}
	$(PY) bench/run_bench.py

bench-quick: venv bench-deps ## Same at 1/10 scale (BENCH_SCALE=0.1) for quick iterations
	BENCH_SCALE=0.1 $(PY) bench/run_bench.py
