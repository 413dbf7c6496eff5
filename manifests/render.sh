#!/usr/bin/env bash
# Renders manifests/install.yaml (the plain-YAML install, for users without Helm) from the chart.
#   manifests/render.sh            write manifests/install.yaml
#   manifests/render.sh --check    fail if manifests/install.yaml is out of date (CI)
# Needs helm (HELM, else helm on PATH, else hack/kube's build in ~/.cache/rc-kube/*/).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
helm=${HELM:-$(command -v helm || ls -d "$HOME"/.cache/rc-kube/*/helm 2>/dev/null | head -1)}
[ -x "$helm" ] || { echo "helm not found (set HELM)" >&2; exit 1; }
render() {
  cat <<'HEADER'
# rc-operator: plain-YAML install, rendered from charts/rc-operator by manifests/render.sh.
# Do not edit by hand. Installs into namespace rc-system and watches all namespaces.
#   kubectl apply --server-side -f manifests/install.yaml
apiVersion: v1
kind: Namespace
metadata:
  name: rc-system
  labels:
    app.kubernetes.io/name: rc-operator
HEADER
  "$helm" template rc-operator "$root/charts/rc-operator" --namespace rc-system
}
if [ "${1:-}" = "--check" ]; then
  if ! diff -u "$root/manifests/install.yaml" <(render) >/dev/null; then
    echo "manifests/install.yaml is out of date: run manifests/render.sh" >&2
    exit 1
  fi
  echo "manifests/install.yaml is up to date"
else
  render >"$root/manifests/install.yaml"
fi
