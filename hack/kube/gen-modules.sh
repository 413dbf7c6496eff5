#!/usr/bin/env bash
# Regenerate the three tooling-only Go modules under hack/kube/ (k8s/, etcd/, helm/).
#
# You only need this when changing a version; build.sh uses the committed go.mod/go.sum as they are.
#
# Why the replace block: k8s.io/kubernetes requires every staging module (k8s.io/api, client-go, ...)
# at the non-existent version v0.0.0 and maps them to ./staging/... with replace directives, which
# only apply in the main module. A consumer must pin each one itself; the published tags v0.X.Y
# correspond to Kubernetes v1.X.Y. The list is read from the exact kubernetes go.mod, never
# hard-coded, because it changes between minors (1.36 added cri-streaming and streaming).
#
# Each module holds nothing but its tools so that minimal version selection keeps exactly the
# dependency versions upstream pinned (never run `go get -u` here). etcd and helm live in their own
# modules because they pin different versions of shared dependencies (grpc, otel, k8s.io/*).
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-1.37.2}
ETCD_VERSION=${ETCD_VERSION:-3.6.16}
HELM_MODULE=${HELM_MODULE:-helm.sh/helm/v4}
HELM_VERSION=${HELM_VERSION:-4.3.1}
# Lowest Go the modules need (what kubernetes, etcd and helm declare); `go mod init` would
# otherwise write the local toolchain version and force a toolchain download on older Go 1.26.x.
GO_DIRECTIVE=${GO_DIRECTIVE:-1.26.0}

here=$(cd "$(dirname "$0")" && pwd)
export GOWORK=off GOFLAGS=-mod=mod
staging="v0.${K8S_VERSION#1.}"

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*"; }

# new_module DIR: an empty module local.invalid/rc-kube/DIR in hack/kube/DIR, made the current
# directory.
new_module() {
  cd "$here/$1"
  rm -f go.mod go.sum
  go mod init "local.invalid/rc-kube/$1"
  go mod edit -go="$GO_DIRECTIVE"
}

# --- k8s.io/kubernetes tools ------------------------------------------------------------------
log "k8s: k8s.io/kubernetes v$K8S_VERSION, staging modules pinned to $staging"
new_module k8s
kmod=$(go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')
# Every module the kubernetes go.mod maps to ./staging/src/k8s.io/<name> (superset of the v0.0.0 requires).
mapfile -t staging_mods < <(awk '$1 ~ /^k8s\.io\// && $2 == "=>" && $3 ~ /^\.\/staging\// {print $1}' "$kmod" | sort -u)
if [ "${#staging_mods[@]}" -lt 25 ]; then
  echo "found only ${#staging_mods[@]} staging modules in $kmod; go.mod format changed?" >&2
  exit 1
fi
for m in "${staging_mods[@]}"; do
  go mod edit -replace="$m=$m@$staging"
done
log "k8s: pinned ${#staging_mods[@]} staging modules"
go get -tool \
  "k8s.io/kubernetes/cmd/kube-apiserver@v$K8S_VERSION" \
  "k8s.io/kubernetes/cmd/kube-controller-manager@v$K8S_VERSION" \
  "k8s.io/kubernetes/cmd/kube-scheduler@v$K8S_VERSION" \
  "k8s.io/kubernetes/cmd/kubectl@v$K8S_VERSION"
go mod tidy

# --- etcd -------------------------------------------------------------------------------------
log "etcd: go.etcd.io/etcd/server/v3 v$ETCD_VERSION"
new_module etcd
go get -tool "go.etcd.io/etcd/server/v3@v$ETCD_VERSION"
go mod tidy

# --- helm -------------------------------------------------------------------------------------
log "helm: $HELM_MODULE v$HELM_VERSION"
new_module helm
go get -tool "$HELM_MODULE/cmd/helm@v$HELM_VERSION"
go mod tidy

log "done; commit hack/kube/{k8s,etcd,helm}/go.{mod,sum}"
