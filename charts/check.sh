#!/usr/bin/env bash
# Chart and manifest checks for CI:
#   1. helm lint (default values and a namespaced, ServiceMonitor-enabled variant)
#   2. manifests/install.yaml is up to date with the chart
#   3. the rendered chart, the CRD and the examples validate against a real kube-apiserver
#      (server-side dry-run), and the CRD's CEL rules reject a bad spec there too.
# Step 3 starts a private control plane with hack/kube/cluster.sh unless KUBECONFIG points at one
# (set RC_CHART_CHECK_REUSE=1 to use the current KUBECONFIG).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${RC_KUBE_BIN:-$(ls -d "$HOME"/.cache/rc-kube/*/ 2>/dev/null | head -1)}
export PATH="${bin%/}:$PATH"
export HELM=${HELM:-$(command -v helm)}
chart="$root/charts/rc-operator"

echo "== helm lint"
helm lint "$chart"
helm lint "$chart" --set 'watchNamespaces={a,b}' --set serviceMonitor.enabled=true

echo "== manifests/install.yaml"
"$root/manifests/render.sh" --check

echo "== server-side validation"
if [ "${RC_CHART_CHECK_REUSE:-}" != 1 ]; then
  dir=$(mktemp -d)
  trap 'bash "$root/hack/kube/cluster.sh" down "$dir" >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
  bash "$root/hack/kube/cluster.sh" up "$dir" >/dev/null
  eval "$(bash "$root/hack/kube/cluster.sh" env "$dir")"
fi
kubectl apply --server-side -f "$root/crds/replicatedclusters.yaml"
kubectl wait --for condition=established --timeout=60s crd/replicatedclusters.replicated.dev
kubectl create namespace rc-system --dry-run=client -o yaml | kubectl apply -f -
kubectl create namespace rc-examples --dry-run=client -o yaml | kubectl apply -f -
kubectl apply --server-side --dry-run=server -f "$root/manifests/install.yaml"
helm template x "$chart" -n rc-system --set 'watchNamespaces={rc-system,rc-examples}' \
  --set crds.create=false | kubectl apply --server-side --dry-run=server -f -
kubectl apply -n rc-examples --dry-run=server -f "$root/manifests/examples/"
bad='{"apiVersion":"replicated.dev/v1alpha1","kind":"ReplicatedCluster","metadata":{"name":"bad"},"spec":{"mode":"Leaderless","leaderless":{"writeQuorum":4}}}'
if echo "$bad" | kubectl apply -n rc-examples --dry-run=server -f - 2>/dev/null; then
  echo "the API server accepted writeQuorum > replicationFactor" >&2
  exit 1
fi
echo "chart checks passed"
