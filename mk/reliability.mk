# Reliability and security suite (tests/reliability/): crashes, concurrency, tampering, secrets.
.PHONY: reliability
reliability: venv ## Whole reliability suite incl. slow runs (20 kill -9 rounds per backend); writes tests/reliability/RESULTS.md
	SNAPMOVER_REQUIRE_SERVERS=1 SNAPMOVER_RELIABILITY_RESULTS=1 $(PY) -m pytest tests/reliability -q -m "slow or not slow"
