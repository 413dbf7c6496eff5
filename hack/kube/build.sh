#!/usr/bin/env bash
# Build the local control-plane binaries from the Go module proxy into a version-keyed cache dir:
#   etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, helm
#
# Usage: hack/kube/build.sh            (prints the bin dir on its last line)
#   RC_KUBE_BIN=/some/dir hack/kube/build.sh    to choose the output dir
#   RC_KUBE_FORCE=1 hack/kube/build.sh          to rebuild even if the binaries are current
#
# Needs only Go (>= 1.26; an older go fetches the right toolchain itself) and access to the Go
# module proxy. Versions come from the committed go.mod files next to this script
# (regenerate them with gen-modules.sh). Binaries that already report the right version are skipped.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { log "ERROR: $*" >&2; exit 1; }

command -v go >/dev/null || die "go is not on PATH"

# Versions, read from the committed modules so this script cannot drift from them.
modver() { awk -v m="$2" '$1 == m && $2 ~ /^v/ {print $2; exit} $1 == "require" && $2 == m {print $3; exit}' "$here/$1/go.mod"; }
K8S_VERSION=$(modver k8s k8s.io/kubernetes)
ETCD_VERSION=$(modver etcd go.etcd.io/etcd/server/v3)
HELM_VERSION=$(modver helm helm.sh/helm/v4)
if [ -z "$K8S_VERSION" ] || [ -z "$ETCD_VERSION" ] || [ -z "$HELM_VERSION" ]; then
  die "could not read versions from hack/kube/{k8s,etcd,helm}/go.mod"
fi
K8S_MINOR=$(echo "$K8S_VERSION" | cut -d. -f2)

BIN=${RC_KUBE_BIN:-$HOME/.cache/rc-kube/$K8S_VERSION}
LOGDIR="$BIN/.build-logs"
mkdir -p "$BIN" "$LOGDIR" "$BIN/.stamps"

export GOWORK=off CGO_ENABLED=0
# -mod=readonly: the committed go.sum is the source of truth; never resolve anything new here.
export GOFLAGS="-mod=readonly -buildvcs=false"

# --- is a binary current? ---------------------------------------------------------------------
version_of() {
  local b="$BIN/$1"
  [ -x "$b" ] || return 0
  case "$1" in
    etcd) "$b" --version 2>/dev/null | sed -n 's/^etcd Version: /v/p' ;;
    kubectl) "$b" version --client 2>/dev/null | sed -n 's/^Client Version: //p' ;;
    helm) HOME=$LOGDIR "$b" version --template '{{.Version}}' 2>/dev/null ;;
    *) "$b" --version 2>/dev/null | sed -n 's/^Kubernetes //p' ;;
  esac
}
want_version() {
  case "$1" in
    etcd) echo "$ETCD_VERSION" ;;
    helm) echo "$HELM_VERSION" ;;
    *) echo "$K8S_VERSION" ;;
  esac
}

# -ldflags per module. Kubernetes: the variables upstream's hack/lib/version.sh sets, for every
# binary (gitCommit is not known from the module, so it is set empty instead of "$Format:%H$").
K8S_LDFLAGS="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  K8S_LDFLAGS+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$K8S_MINOR"
  K8S_LDFLAGS+=" -X $p.gitCommit= -X $p.gitTreeState=clean"
done
ETCD_LDFLAGS="-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=$ETCD_VERSION"
h=helm.sh/helm/v4/internal/version
HELM_LDFLAGS="-s -w -X $h.version=$HELM_VERSION -X $h.metadata= -X $h.gitTreeState=clean"

# stamp_key NAME: changes whenever the binary's module pins or build flags change.
stamp_key() {
  local mod ldf
  case "$1" in
    etcd) mod=etcd ldf=$ETCD_LDFLAGS ;;
    helm) mod=helm ldf=$HELM_LDFLAGS ;;
    *) mod=k8s ldf=$K8S_LDFLAGS ;;
  esac
  { echo "$ldf"; cat "$here/$mod/go.mod" "$here/$mod/go.sum"; } | sha256sum | cut -c1-16
}
write_stamp() { stamp_key "$1" >"$BIN/.stamps/$1"; }
# needs_build NAME: missing, wrong version, or built from other pins/flags (stamp file differs).
needs_build() {
  [ "${RC_KUBE_FORCE:-0}" = 1 ] && return 0
  [ "$(version_of "$1")" != "$(want_version "$1")" ] && return 0
  [ "$(cat "$BIN/.stamps/$1" 2>/dev/null)" != "$(stamp_key "$1")" ]
}

# --- one `go build` step with progress, timing and peak RSS -----------------------------------
# run_build NAME MODULE_DIR OUTPUT LDFLAGS PKG...   (OUTPUT: a file name, or "" for one binary per package)
run_build() {
  local name=$1 dir=$2 out=$3 ldflags=$4
  shift 4
  local tmp="$BIN/.tmp-$name" blog="$LOGDIR/$name.log" tlog="$LOGDIR/$name.time"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  log "$name: downloading modules / resolving packages"
  local total
  total=$(cd "$dir" && go list -deps "$@" | wc -l)
  log "$name: compiling up to $total packages (go build -p 2; progress every 100 packages; full log $blog)"
  local timer=()
  if [ -x /usr/bin/time ]; then timer=(/usr/bin/time -v -o "$tlog"); fi
  local rc=0
  (cd "$dir" && "${timer[@]}" go build -v -p 2 -trimpath -ldflags "$ldflags" -o "$tmp/$out" "$@") 2>&1 |
    tee "$blog" | awk -v name="$name" -v total="$total" '
      { n++ }
      n % 100 == 0 { cmd = "date +%H:%M:%S"; cmd | getline t; close(cmd); printf "[%s] %s: %d/%d packages\n", t, name, n, total; fflush() }' ||
    rc=$?
  if [ "$rc" != 0 ]; then
    tail -n 40 "$blog" >&2
    die "$name: go build failed (exit $rc); see $blog"
  fi
  mv -f "$tmp"/* "$BIN/"
  rmdir "$tmp"
  if [ -s "$tlog" ]; then
    log "$name: built in $(sed -n 's/.*Elapsed (wall clock) time (h:mm:ss or m:ss): //p' "$tlog")," \
      "peak RSS of the largest single process $(($(sed -n 's/.*Maximum resident set size (kbytes): //p' "$tlog") / 1024)) MiB"
  else
    log "$name: built"
  fi
}

log "Go $(go env GOVERSION); output dir $BIN"
log "versions: kubernetes $K8S_VERSION, etcd $ETCD_VERSION, helm $HELM_VERSION"

k8s_bins=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
todo_k8s=()
for b in "${k8s_bins[@]}"; do needs_build "$b" && todo_k8s+=("$b"); done
todo_etcd=0; needs_build etcd && todo_etcd=1
todo_helm=0; needs_build helm && todo_helm=1

if [ "${#todo_k8s[@]}" = 0 ] && [ "$todo_etcd" = 0 ] && [ "$todo_helm" = 0 ]; then
  log "all binaries present with the right versions and stamps; nothing to build"
else
  log "NOTE: a cold build (empty Go module and build caches) takes a long time on 2 cores:"
  log "      about 15 minutes for everything (measured), most of it kube-apiserver, and ~2.6 GB RAM."
  log "      With a warm Go build cache it is about a minute (linking only)."
  start=$(date +%s)

  if [ "$todo_etcd" = 1 ]; then
    run_build etcd "$here/etcd" etcd "$ETCD_LDFLAGS" go.etcd.io/etcd/server/v3
    write_stamp etcd
  else
    log "etcd: $ETCD_VERSION present, skipping"
  fi

  if [ "${#todo_k8s[@]}" -gt 0 ]; then
    pkgs=()
    for b in "${todo_k8s[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
    run_build kubernetes "$here/k8s" "" "$K8S_LDFLAGS" "${pkgs[@]}"
    for b in "${todo_k8s[@]}"; do write_stamp "$b"; done
  else
    log "kubernetes: $K8S_VERSION binaries present, skipping"
  fi

  if [ "$todo_helm" = 1 ]; then
    run_build helm "$here/helm" "" "$HELM_LDFLAGS" helm.sh/helm/v4/cmd/helm
    write_stamp helm
  else
    log "helm: $HELM_VERSION present, skipping"
  fi
  log "total build time $(($(date +%s) - start)) s"
fi

for b in etcd "${k8s_bins[@]}" helm; do
  got=$(version_of "$b")
  [ "$got" = "$(want_version "$b")" ] || die "$b reports version '$got', expected $(want_version "$b")"
  log "ok: $b $got"
done
{
  echo "kubernetes=$K8S_VERSION"
  echo "etcd=$ETCD_VERSION"
  echo "helm=$HELM_VERSION"
} >"$BIN/VERSIONS"
log "bin dir:"
echo "$BIN"
