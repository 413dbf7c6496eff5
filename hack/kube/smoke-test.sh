#!/usr/bin/env bash
# Check that a control plane started by cluster.sh really works, using the built kubectl:
#   hack/kube/smoke-test.sh DIR
# - the API answers and reports the expected version
# - a new namespace gets its `default` ServiceAccount (serviceaccount controller, RBAC, SA tokens)
# - a StatefulSet with a volumeClaimTemplate gets its PVC Bound (hostpath provisioner, default
#   StorageClass) and its Pod <name>-0 created; the Pod stays Pending (no kubelet/Node yet: expected)
# - helm runs
# The test namespace is deleted at the end (RC_KUBE_KEEP=1 keeps it).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
[ $# = 1 ] || {
  echo "usage: $0 DIR" >&2
  exit 2
}
DIR=$(cd "$1" && pwd)
# shellcheck source=/dev/null
. "$DIR/env"
K8S_VERSION=$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v/ {print $2; exit}' "$here/k8s/go.mod")
NS=smoke-$RANDOM

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() {
  log "FAIL: $*" >&2
  exit 1
}
# retry SECONDS CMD...: run CMD every 0.5 s until it succeeds.
retry() {
  local deadline=$(($(date +%s) + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || return 1
    sleep 0.5
  done
}

log "kubectl $(command -v kubectl)"
kubectl get ns
got=$(kubectl get --raw /version | sed -n 's/.*"gitVersion": *"\([^"]*\)".*/\1/p')
[ "$got" = "$K8S_VERSION" ] || die "/version reports '$got', expected $K8S_VERSION"
log "ok: /version gitVersion $got"

t0=$(date +%s)
kubectl create namespace "$NS" >/dev/null
retry 30 kubectl -n "$NS" get serviceaccount default || die "no default ServiceAccount in $NS after 30 s"
log "ok: ServiceAccount $NS/default created in $(($(date +%s) - t0)) s"

kubectl -n "$NS" apply -f - >/dev/null <<'EOF'
apiVersion: v1
kind: Service
metadata: { name: web }
spec:
  clusterIP: None
  selector: { app: web }
  ports: [ { name: http, port: 80 } ]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: { name: web }
spec:
  serviceName: web
  replicas: 1
  selector: { matchLabels: { app: web } }
  template:
    metadata: { labels: { app: web } }
    spec:
      containers:
      - name: main
        image: registry.invalid/never-pulled:0   # there is no kubelet; nothing pulls it
        volumeMounts: [ { name: data, mountPath: /data } ]
  volumeClaimTemplates:
  - metadata: { name: data }
    spec:
      accessModes: [ ReadWriteOnce ]
      resources: { requests: { storage: 16Mi } }
EOF
t0=$(date +%s)
retry 60 kubectl -n "$NS" get pod web-0 || die "StatefulSet did not create pod web-0 within 60 s"
log "ok: pod $NS/web-0 created in $(($(date +%s) - t0)) s"
kubectl -n "$NS" wait --for=jsonpath='{.status.phase}'=Bound pvc/data-web-0 --timeout=60s >/dev/null ||
  die "PVC data-web-0 not Bound within 60 s"
pv=$(kubectl -n "$NS" get pvc data-web-0 -o jsonpath='{.spec.volumeName}')
log "ok: PVC $NS/data-web-0 Bound to $pv (hostPath $(kubectl get pv "$pv" -o jsonpath='{.spec.hostPath.path}')) in $(($(date +%s) - t0)) s"
kubectl -n "$NS" get statefulset,pod,pvc
phase=$(kubectl -n "$NS" get pod web-0 -o jsonpath='{.status.phase}')
[ "$phase" = Pending ] || die "web-0 phase is '$phase'; expected Pending (no nodes)"
retry 30 sh -c "kubectl -n $NS get pod web-0 -o jsonpath='{.status.conditions[?(@.type==\"PodScheduled\")].reason}' | grep -q Unschedulable" ||
  die "scheduler did not mark web-0 Unschedulable"
log "ok: web-0 is Pending/Unschedulable: $(kubectl -n "$NS" get pod web-0 -o jsonpath='{.status.conditions[0].message}')"

helm version
log "ok: helm runs"

if [ "${RC_KUBE_KEEP:-0}" = 1 ]; then
  log "keeping namespace $NS"
else
  kubectl delete namespace "$NS" --wait=true --timeout=60s >/dev/null
  log "namespace $NS deleted"
fi
log "smoke test passed"
