# `make demo`: first the local round trip (demo-local): generate a sample tree,
# upload it to a file:// repository in a temporary directory, upload again (dedup), restore,
# verify bytes and metadata entry by entry, print the figures, clean up.
.PHONY: demo demo-local demo-cluster

define DEMO_SCRIPT
set -euo pipefail
work=$$(mktemp -d /tmp/snapmover-demo.XXXXXX)
trap 'rm -rf "$$work"' EXIT
export SNAPMOVER_REPOSITORY="file://$$work/repo"
export SNAPMOVER_PASSWORD="demo-$$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
say() { printf '\033[1m==> %s\033[0m\n' "$$*"; }
now() { date +%s.%N; }
json() { $(PY) -c "import json,sys; d=json.load(sys.stdin); print(d$$1)"; }

say "generating a sample tree in $$work/src"
$(PY) - "$$work/src" <<'PYEOF'
import sys
from pathlib import Path
from tests.unit.jobs.volume.treecompare import make_sample_tree, text_bytes, write_sparse
import random
root = Path(sys.argv[1])
make_sample_tree(root, large_bytes=24 * 1024 * 1024)
rng = random.Random(7)
for d in range(20):
    sub = root / "small" / f"d{d:02}"
    sub.mkdir(parents=True)
    for i in range(100):
        (sub / f"f{i:03}.txt").write_bytes(text_bytes(rng, rng.randrange(100, 8000)))
(root / "logs.txt").write_bytes(text_bytes(rng, 32 * 1024 * 1024))
(root / "random-copy.bin").write_bytes((root / "large.bin").read_bytes())  # deduplicated
write_sparse(root / "disk.img", 256 * 1024 * 1024, [(0, rng.randbytes(1024 * 1024))])
PYEOF
logical=$$(du -sb --apparent-size "$$work/src" | cut -f1)
files=$$(find "$$work/src" -type f | wc -l)
echo "    $$files files, $$logical bytes (apparent size, incl. a 256 MiB sparse image)"

say "snapmover repo init"
snapmover repo init --json | json "['repository_id']" | sed 's/^/    repository id: /'

say "snapmover upload (first)"
t0=$$(now); out=$$(snapmover upload --source "$$work/src" --tag demo=yes --json); t1=$$(now)
snap=$$(echo "$$out" | json "['snapshot_id']")
new1=$$(echo "$$out" | json "['incremental_bytes']")
stored1=$$(echo "$$out" | json "['stored_bytes']")
echo "    snapshot $$snap: new data $$new1 B, stored $$stored1 B, $$(echo "$$t1 - $$t0" | bc) s"

say "snapmover upload (unchanged: incremental, nothing read, nothing new stored)"
t2=$$(now); out=$$(snapmover upload --source "$$work/src" --tag demo=yes --json); t3=$$(now)
new2=$$(echo "$$out" | json "['incremental_bytes']")
echo "    snapshot $$(echo "$$out" | json "['snapshot_id']"): new data $$new2 B, $$(echo "$$t3 - $$t2" | bc) s"

say "snapmover snapshots"
snapmover snapshots --tag demo=yes | sed 's/^/    /'

say "snapmover download"
t4=$$(now); snapmover download --snapshot "$$snap" --target "$$work/restore" >/dev/null; t5=$$(now)
echo "    restored into $$work/restore in $$(echo "$$t5 - $$t4" | bc) s"

say "verifying bytes and metadata of every entry"
$(PY) - "$$work/src" "$$work/restore" <<'PYEOF'
import sys
from pathlib import Path
from tests.unit.jobs.volume.treecompare import compare_trees
diffs = compare_trees(Path(sys.argv[1]), Path(sys.argv[2]))
for d in diffs:
    print("    DIFF", d)
print("    identical: bytes, modes, owners, times (ns), xattrs, symlinks, hardlinks, holes" if not diffs else "    FAILED")
sys.exit(1 if diffs else 0)
PYEOF

say "snapmover repo check --read-data"
snapmover repo check --read-data | sed 's/^/    /'

repo_bytes=$$(du -sb "$$work/repo" | cut -f1)
say "figures"
$(PY) - "$$logical" "$$repo_bytes" "$$t0" "$$t1" "$$t4" "$$t5" "$$new2" <<'PYEOF'
import sys
logical, repo, t0, t1, t4, t5, new2 = (float(x) for x in sys.argv[1:])
mb = 1e6
print(f"    logical data      {logical / mb:10.1f} MB")
print(f"    repository size   {repo / mb:10.1f} MB  ({logical / repo:.1f}x smaller: dedup + zero runs + compression)")
print(f"    first upload      {t1 - t0:10.2f} s   ({logical / mb / (t1 - t0):.0f} MB/s logical, incl. process start)")
print(f"    restore           {t5 - t4:10.2f} s   ({logical / mb / (t5 - t4):.0f} MB/s logical)")
print(f"    2nd upload new    {new2 / mb:10.3f} MB")
PYEOF
endef
export DEMO_SCRIPT

demo: demo-local demo-cluster ## The whole demo: local round trip, then DataUpload/DataDownload on a local cluster

demo-local: venv ## Local round trip: sample tree -> file:// repository -> restore -> verify, with figures
	@bash -c "$$DEMO_SCRIPT"

demo-cluster: venv ## Local cluster: install with kubectl apply -k, back up a PVC (DataUpload), restore it (DataDownload)
	@scripts/demo-cluster.sh $(PY)
