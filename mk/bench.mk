# Benchmarks (bench/): snapmover vs restic and borg on the same data, in one run per dataset.
.PHONY: bench bench-quick bench-deps
BENCH_PACKAGES := restic borgbackup time radosgw ceph-mon ceph-osd
bench-deps: ## Install restic, borgbackup, GNU time and Ceph (mon, osd, radosgw) from Debian (idempotent)
	@missing=""; for p in $(BENCH_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | \
		grep -q "install ok installed" || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "==> apt-get install$$missing"; apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=300 $$missing >/dev/null; fi

bench: venv bench-deps ## Full benchmark: datasets mixed (+ block, S3 on moto and Ceph RGW), realtree, small-100k, small-1m (BENCH_DATASETS picks; hours); writes bench/results/
	$(PY) bench/run_bench.py

bench-quick: venv bench-deps ## The mixed tree and its block/S3 rounds at 1/10 scale (BENCH_SCALE=0.1), for quick iterations
	BENCH_SCALE=0.1 BENCH_DATASETS=mixed $(PY) bench/run_bench.py
