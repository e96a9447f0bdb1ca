# Reliability and security suite (tests/reliability/): crashes, concurrency, tampering, secrets.
.PHONY: reliability
reliability: venv ## Whole reliability suite incl. slow runs (kill -9, S3 faults/outages, tampering, hostile CRs and 200-DataUpload load on the local cluster); writes tests/reliability/RESULTS.md
	SNAPMOVER_REQUIRE_SERVERS=1 SNAPMOVER_RELIABILITY_RESULTS=1 $(PY) -m pytest tests/reliability -q -m "slow or not slow"
