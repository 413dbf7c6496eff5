# shellcheck shell=bash
# The whole local stack for the demo and the end-to-end suite (sourced, not run):
# the real control plane (hack/kube/cluster.sh), the process kubelet (hack/process-kubelet) and the
# operator installed by Helm from charts/. Every process is started in its own process group with
# its PID recorded under $STACK_DIR/pids, and stopped by that PID.
#
#   source hack/lib/stack.sh
#   stack_init NAME BRIDGE SUBNET    # e.g. stack_init demo rcdemo 10.241.10.0/24
#   stack_build                      # control-plane binaries (cached) + cargo build
#   stack_up                         # control plane + process kubelet, node Ready
#   stack_install_operator           # helm install from charts/, operator pod Ready
#   stack_down                       # kubelet, control plane, PV directories, $STACK_DIR
#
# Needs root (network and mount namespaces), iproute2, curl, openssl.

STACK_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
STACK_OPERATOR_NS=rc-system
STACK_NODE=proc-node-0
STACK_KUBELET_PORT=${STACK_KUBELET_PORT:-10250}   # the process kubelet's API (kubectl logs)

stack_log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*"; }
stack_die() { stack_log "ERROR: $*" >&2; exit 1; }
stack_now() { date +%s.%N; }
stack_since() { awk -v a="$1" -v b="$(stack_now)" 'BEGIN { printf "%.1f", b - a }'; }

# stack_init NAME BRIDGE SUBNET: where state lives ($STACK_DIR, default /tmp/rc-NAME) and the
# pod network (bridge name <= 8 chars, a private /24 that nothing else on the machine uses).
stack_init() {
  STACK_NAME=$1
  STACK_BRIDGE=$2
  STACK_SUBNET=$3
  # The bridge's .1: the node's InternalIP, where the kubelet API listens.
  STACK_NODE_IP=${STACK_SUBNET%/*}
  STACK_NODE_IP=${STACK_NODE_IP%.*}.1
  STACK_DIR=${STACK_DIR:-/tmp/rc-$STACK_NAME}
  STACK_TARGET=${CARGO_TARGET_DIR:-$STACK_REPO/target}/debug
  [ "$(id -u)" = 0 ] || stack_die "run as root: the process kubelet creates network namespaces, a bridge and mounts"
  local pair cmd pkg need=()
  for pair in ip:iproute2 curl:curl openssl:openssl; do
    cmd=${pair%%:*} pkg=${pair#*:}
    command -v "$cmd" >/dev/null 2>&1 || need+=("$pkg")
  done
  if ((${#need[@]})); then
    stack_log "installing Debian packages: ${need[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null ||
      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null; }
  fi
}

# stack_build: control-plane binaries (hack/kube/build.sh: ~15 min cold, <1 s when cached) and
# the three Rust binaries (debug profile).
stack_build() {
  local t0
  t0=$(stack_now)
  stack_log "control-plane binaries (hack/kube/build.sh; a cold build takes ~15 min on 2 cores)"
  KUBE_BIN=$("$STACK_REPO/hack/kube/build.sh" | tail -n1)
  [ -x "$KUBE_BIN/kube-apiserver" ] || stack_die "hack/kube/build.sh did not produce $KUBE_BIN/kube-apiserver"
  stack_log "cargo build -p rc-node -p rc-operator -p rc-process-kubelet"
  (cd "$STACK_REPO" && cargo build --quiet -p rc-node -p rc-operator -p rc-process-kubelet)
  local b
  for b in rc-node rc-history rc-operator rc-process-kubelet; do
    [ -x "$STACK_TARGET/$b" ] || stack_die "$STACK_TARGET/$b missing after cargo build"
  done
  stack_log "build done in $(stack_since "$t0") s"
}

# stack_pid NAME: the recorded PID if that process is alive and still runs NAME.
stack_pid() {
  local f="$STACK_DIR/pids/$1.pid" pid
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  [[ "$pid" =~ ^[0-9]+$ ]] || return 0
  if { tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null | grep -q "$1"; then
    echo "$pid"
  fi
}

# stack_wait DESC TIMEOUT_S CMD...: poll CMD every second; fail with DESC after TIMEOUT_S.
stack_wait() {
  local desc=$1 timeout=$2 deadline
  shift 2
  deadline=$(($(date +%s) + timeout))
  until "$@" >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      stack_log "timed out after ${timeout} s waiting for: $desc" >&2
      return 1
    fi
    sleep 1
  done
}

# stack_kubelet_cert: the kubelet API's serving certificate (SAN: node IP and name), issued by
# the cluster CA that cluster.sh created in $STACK_DIR/pki, valid 30 days like the rest. The API
# server does not verify it (no --kubelet-certificate-authority, as with kubeadm's self-signed
# kubelet certs); clients that trust the cluster CA can. Kept while it has more than a day left.
stack_kubelet_cert() {
  local pki=$STACK_DIR/pki name=kubelet-$STACK_NODE
  if [ -f "$pki/$name.crt" ] && openssl x509 -checkend 86400 -noout -in "$pki/$name.crt" >/dev/null 2>&1 &&
    [ "$pki/$name.crt" -nt "$pki/ca.crt" ]; then
    return 0
  fi
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$STACK_NODE" \
    -keyout "$pki/$name.key" -out "$pki/$name.csr" 2>/dev/null &&
    openssl x509 -req -in "$pki/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
      -days 30 -out "$pki/$name.crt" -extfile <(printf '%s\n' \
        'basicConstraints=CA:FALSE' \
        'keyUsage=critical,digitalSignature,keyEncipherment' \
        'extendedKeyUsage=serverAuth' \
        "subjectAltName=IP:$STACK_NODE_IP,DNS:$STACK_NODE") 2>/dev/null ||
    stack_die "generating the kubelet serving certificate in $pki"
  rm -f "$pki/$name.csr"
  chmod 600 "$pki/$name.key"
}

stack_up() {
  [ -n "${KUBE_BIN:-}" ] || KUBE_BIN=$("$STACK_REPO/hack/kube/build.sh" | tail -n1)
  if [ -d "$STACK_DIR" ]; then
    stack_log "cleaning up an earlier run in $STACK_DIR"
    STACK_KEEP=0 stack_down
  fi
  mkdir -p "$STACK_DIR"
  local t0
  t0=$(stack_now)
  RC_KUBE_BIN=$KUBE_BIN "$STACK_REPO/hack/kube/cluster.sh" up "$STACK_DIR" | sed 's/^/  /'
  STACK_CP_SECONDS=$(stack_since "$t0")
  stack_log "control plane up in $STACK_CP_SECONDS s"
  export KUBECONFIG=$STACK_DIR/admin.kubeconfig
  export PATH="$KUBE_BIN:$PATH"

  t0=$(stack_now)
  stack_kubelet_cert
  # Pods get the process kubelet's faster back-off (2 s doubling to 20 s) so tests recover quickly.
  # The kubelet API (kubectl logs) accepts only client certificates of the cluster CA.
  setsid "$STACK_TARGET/rc-process-kubelet" run \
    --kubeconfig "$KUBECONFIG" --node-name "$STACK_NODE" \
    --port "$STACK_KUBELET_PORT" --tls-cert-file "$STACK_DIR/pki/kubelet-$STACK_NODE.crt" \
    --tls-private-key-file "$STACK_DIR/pki/kubelet-$STACK_NODE.key" --client-ca-file "$STACK_DIR/pki/ca.crt" \
    --image-map "ghcr.io/replicated-dev/rc-node=$STACK_TARGET/rc-node" \
    --image-map "ghcr.io/replicated-dev/rc-operator=$STACK_TARGET/rc-operator" \
    --state-dir "$STACK_DIR/kubelet" --bridge "$STACK_BRIDGE" --pod-subnet "$STACK_SUBNET" \
    --backoff-seconds 2 --backoff-max-seconds 20 \
    >>"$STACK_DIR/logs/process-kubelet.log" 2>&1 </dev/null &
  echo $! >"$STACK_DIR/pids/rc-process-kubelet.pid"
  if ! stack_wait "node $STACK_NODE Ready" 60 \
    kubectl wait --for=condition=Ready "node/$STACK_NODE" --timeout=2s; then
    tail -n 20 "$STACK_DIR/logs/process-kubelet.log" >&2
    return 1
  fi
  stack_log "process kubelet: node $STACK_NODE Ready after $(stack_since "$t0") s (pid $(stack_pid rc-process-kubelet), bridge $STACK_BRIDGE, pods in $STACK_SUBNET, kubelet API https://$STACK_NODE_IP:$STACK_KUBELET_PORT, log $STACK_DIR/logs/process-kubelet.log)"
}

stack_install_operator() {
  local t0
  t0=$(stack_now)
  helm install rc-operator "$STACK_REPO/charts/rc-operator" -n "$STACK_OPERATOR_NS" --create-namespace \
    --set logFormat=text --wait --timeout 120s >"$STACK_DIR/logs/helm-install.log" 2>&1 ||
    { cat "$STACK_DIR/logs/helm-install.log" >&2; stack_die "helm install failed"; }
  stack_log "operator installed by Helm and Ready in $(stack_since "$t0") s ($(kubectl -n "$STACK_OPERATOR_NS" get pods -o jsonpath='{.items[0].metadata.name} on {.items[0].spec.nodeName} at {.items[0].status.podIP}'))"
}

# stack_node_pid POD: the PID of the pod's rc-node process (the process kubelet runs it directly).
stack_node_pid() {
  local p
  for p in $(pgrep -x rc-node); do
    if tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx "RC_NODE_ID=$1"; then
      echo "$p"
      return 0
    fi
  done
  return 1
}

# stack_pod_ip NS POD
stack_pod_ip() { kubectl -n "$1" get pod "$2" -o jsonpath='{.status.podIP}'; }

# stack_log_file NS POD [CONTAINER]: the file the process kubelet writes the container's stdout
# and stderr to (every run appended; `kubectl logs` serves the current or previous run of it).
stack_log_file() {
  local uid c=${3:-}
  uid=$(kubectl -n "$1" get pod "$2" -o jsonpath='{.metadata.uid}') || return 1
  [ -n "$c" ] || c=$(kubectl -n "$1" get pod "$2" -o jsonpath='{.spec.containers[0].name}') || return 1
  echo "$STACK_DIR/kubelet/pods/$1_$2_$uid/logs/$c.log"
}

# stack_down: stop the kubelet (it stops every pod and removes its namespaces and bridge), the
# control plane, the hostpath PV directories this cluster provisioned, then $STACK_DIR
# (kept with STACK_KEEP=1).
stack_down() {
  [ -n "${STACK_DIR:-}" ] && [ -d "$STACK_DIR" ] || return 0
  local pv_dirs="" pid i
  if [ -f "$STACK_DIR/admin.kubeconfig" ] && [ -n "$(cat "$STACK_DIR"/pids/kube-apiserver.pid 2>/dev/null)" ]; then
    pv_dirs=$(KUBECONFIG=$STACK_DIR/admin.kubeconfig timeout 10 "${KUBE_BIN:-$HOME/.cache/rc-kube/v1.37.2}/kubectl" get pv \
      -o jsonpath='{range .items[*]}{.spec.hostPath.path}{"\n"}{end}' 2>/dev/null || true)
  fi
  pid=$(stack_pid rc-process-kubelet)
  if [ -n "$pid" ]; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 300; i++)); do
      [ -n "$(stack_pid rc-process-kubelet)" ] || break
      sleep 0.1
    done
    if [ -n "$(stack_pid rc-process-kubelet)" ]; then
      stack_log "process kubelet still running after 30 s; SIGKILL"
      kill -KILL -- "-$pid" 2>/dev/null || true
    fi
    stack_log "process kubelet stopped"
  fi
  # A SIGKILLed kubelet leaves its namespaces and bridge: remove them (only ours, by name).
  local ns
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^${STACK_BRIDGE}-" || true); do
    ip netns pids "$ns" 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
  done
  ip link show "$STACK_BRIDGE" >/dev/null 2>&1 && ip link del "$STACK_BRIDGE" 2>/dev/null
  RC_KUBE_BIN=${KUBE_BIN:-} "$STACK_REPO/hack/kube/cluster.sh" down "$STACK_DIR" | sed 's/^/  /'
  local d
  for d in $pv_dirs; do
    case "$d" in /tmp/hostpath_pv/?*) rm -rf -- "$d" ;; esac
  done
  if [ "${STACK_KEEP:-0}" = 1 ]; then
    stack_log "state, logs and data kept in $STACK_DIR (STACK_KEEP=1)"
  else
    rm -rf -- "$STACK_DIR"
  fi
}
