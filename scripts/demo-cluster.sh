#!/usr/bin/env bash
# The cluster half of `make demo`: a local Kubernetes (built on first use), snapmover installed
# with `kubectl apply -k manifests/overlays/without-velero`, a DataUpload of a sample PVC, a DataDownload into a new PVC,
# the data verified. Everything through kubectl, as a user would. Usage: demo-cluster.sh PYTHON
set -euo pipefail
cd "$(dirname "$0")/.."
py=${1:-.venv/bin/python}
state=${CLUSTER_STATE:-$HOME/.cache/snapmover/cluster}
export KUBECONFIG=$state/kubeconfig
say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
k() { kubectl "$@"; }
wait_jsonpath() {  # wait_jsonpath WANTED_REGEX TIMEOUT kubectl-get-args...
    local want=$1 timeout=$2; shift 2
    local end=$((SECONDS + timeout)) value=""
    while [ $SECONDS -lt $end ]; do
        value=$(k get "$@" 2>/dev/null || true)
        if [[ $value =~ $want ]]; then echo "$value"; return 0; fi
        sleep 1
    done
    echo "timed out waiting for $* (last: $value)" >&2; return 1
}

say "local cluster with a real node (builds Kubernetes from Debian's source on first use, ~6 min)"
scripts/kube-build.sh
scripts/node-setup.sh
images/build.sh
"$py" -m tests.cluster up --state "$state"
# a previous run: deleting its DataUploads (while its launcher runs) forgets their snapshots
k delete datauploads --all -n snapmover --ignore-not-found --timeout=120s >/dev/null 2>&1 || true
for ns in demo-app snapmover; do k delete namespace "$ns" --ignore-not-found --wait=true --timeout=120s >/dev/null; done

say "installing snapmover (no Velero here, so with the CRDs): kubectl apply -k manifests/overlays/without-velero"
k apply -k manifests/overlays/without-velero
k apply -f manifests/examples/storage-location-filesystem.yaml
k -n snapmover patch configmap snapmover-config --type merge \
  -p '{"data": {"storageLocations": "{\"default\": {\"provider\": \"filesystem\", \"pvc\": \"snapmover-repository\"}}"}}'
# the image `make images` built, imported into the node (it cannot pull): what
# `kustomize edit set image snapmover=…` writes, in the Deployment and the ConfigMap
image=localhost/snapmover:$("$py" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
k -n snapmover set image deployment/snapmover-launcher "launcher=$image"
k -n snapmover patch configmap snapmover-config --type merge -p "{\"data\": {\"image\": \"$image\"}}"
k -n snapmover rollout status deployment/snapmover-launcher --timeout=180s

say "an application with data: manifests/examples/app.yaml (its busybox image swapped for $image)"
sed "s|busybox:1.36|$image|" manifests/examples/app.yaml | k apply -f -
k -n demo-app wait --for=condition=complete job/write-sample-data --timeout=120s
k apply -f manifests/examples/volumesnapshot.yaml
wait_jsonpath '^true$' 60 -n demo-app volumesnapshot data-snapshot -o 'jsonpath={.status.readyToUse}' >/dev/null

say "backup: kubectl create -f manifests/examples/dataupload.yaml"
du=$(k create -f manifests/examples/dataupload.yaml -o name | cut -d/ -f2)
end=$((SECONDS + 300))
while :; do
    k get datauploads -n snapmover "$du" --no-headers
    phase=$(k get dataupload -n snapmover "$du" -o 'jsonpath={.status.phase}')
    case $phase in Completed|Failed|Canceled) break ;; esac
    [ $SECONDS -lt $end ] || { echo "timed out" >&2; exit 1; }
    sleep 2
done
k get datauploads -n snapmover
[ "$phase" = Completed ] || { k get dataupload -n snapmover "$du" -o 'jsonpath={.status.message}'; exit 1; }
say "kubectl logs job/snapmover-du-$du"
k logs -n snapmover "job/snapmover-du-$du"
sid=$(k get dataupload -n snapmover "$du" -o 'jsonpath={.status.snapshotID}')

say "restore: a new PVC + a DataDownload of snapshot ${sid:0:16}…"
k apply -f manifests/examples/restore-pvc.yaml
dd=$(sed "s/SNAPSHOT_ID/$sid/" manifests/examples/datadownload.yaml | k create -f - -o name | cut -d/ -f2)
wait_jsonpath '^(Completed|Failed)$' 300 -n snapmover datadownload "$dd" -o 'jsonpath={.status.phase}' >/dev/null
k get datadownloads -n snapmover
[ "$(k get datadownload -n snapmover "$dd" -o 'jsonpath={.status.phase}')" = Completed ]

say "verifying: source and restored volumes must be identical"
src=$(k get pv "$(k -n demo-app get pvc data -o 'jsonpath={.spec.volumeName}')" -o 'jsonpath={.spec.hostPath.path}')
dst=$(k get pv "$(k -n demo-app get pvc data-restored -o 'jsonpath={.spec.volumeName}')" -o 'jsonpath={.spec.hostPath.path}')
diff -r "$src" "$dst"
files=$(find "$dst" -type f | wc -l)
bytes=$(k get dataupload -n snapmover "$du" -o 'jsonpath={.status.progress.totalBytes}')
say "done: backed up and restored $files files ($bytes bytes) through DataUpload $du and DataDownload $dd; identical"
cat <<EOT

Explore the cluster:
  export KUBECONFIG=$KUBECONFIG
  kubectl get datauploads,datadownloads -n snapmover
  kubectl describe dataupload -n snapmover $du
Stop it with: make cluster-down
EOT
