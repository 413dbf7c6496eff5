#!/usr/bin/env bash
# A real local Kubernetes control plane (no kubelet, no nodes) for tests and the demo:
# etcd + kube-apiserver + kube-controller-manager + kube-scheduler as plain processes on 127.0.0.1.
#
#   hack/kube/cluster.sh up DIR     start (or restart) the cluster whose state lives in DIR
#   hack/kube/cluster.sh down DIR   stop it (SIGTERM, SIGKILL after 10 s); safe to run twice
#   hack/kube/cluster.sh env DIR    print `export KUBECONFIG=...` and PATH lines: eval "$(... env DIR)"
#
# Binaries come from hack/kube/build.sh (RC_KUBE_BIN overrides the directory).
# DIR layout: pki/ (CA, certs, service-account keys), *.kubeconfig, etcd/ (data), logs/<name>.log,
# pids/<name>.pid, ports.env, env. Ports are picked free at `up` (the previous ones are reused when
# still free, so kubeconfigs stay valid across down/up). Needs openssl and curl.
# Everything binds to 127.0.0.1 only.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
K8S_VERSION=$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v/ {print $2; exit}' "$here/k8s/go.mod")
BIN=${RC_KUBE_BIN:-$HOME/.cache/rc-kube/$K8S_VERSION}
TIMEOUT=${RC_KUBE_TIMEOUT:-60}   # seconds per component health wait
CERT_DAYS=30                     # long enough for a long-running demo
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler)   # start order

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { log "ERROR: $*" >&2; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

usage() {
  echo "usage: $0 up|down|env DIR" >&2
  exit 2
}

# --- processes --------------------------------------------------------------------------------

# pid_of NAME: the recorded PID if that process is still alive and still ours, else nothing.
pid_of() {
  local f="$DIR/pids/$1.pid" pid
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  [[ "$pid" =~ ^[0-9]+$ ]] || return 0
  # Guard against PID reuse: the process must still be the binary we started (and not a zombie).
  local exe
  exe=$({ tr '\0' '\n' <"/proc/$pid/cmdline"; } 2>/dev/null | sed -n 1p) || return 0
  if [[ "$exe" == */"$1" ]] && group_alive "$pid"; then
    echo "$pid"
  fi
}

# group_alive PGID: does the process group have a member that is not a zombie?
group_alive() {
  ps -e -o pgid=,stat= | awk -v g="$1" '$1 == g && $2 !~ /^Z/ { found = 1 } END { exit !found }'
}

# start NAME ARGS...: run $BIN/NAME in its own session/process group, log to logs/NAME.log.
start() {
  local name=$1
  shift
  # From a non-interactive shell the background job is not a group leader, so setsid does not
  # fork: $! is the daemon itself and its PGID equals its PID (checked below).
  setsid "$BIN/$name" "$@" >>"$DIR/logs/$name.log" 2>&1 </dev/null &
  local pid=$!
  echo "$pid" >"$DIR/pids/$name.pid"
  sleep 0.1
  local pgid
  pgid=$(awk '{print $5}' "/proc/$pid/stat" 2>/dev/null || true)
  if [ -n "$pgid" ] && [ "$pgid" != "$pid" ]; then
    die "$name: expected its own process group (pid $pid, pgid $pgid)"
  fi
  log "$name: started, pid $pid, log $DIR/logs/$name.log"
}

# stop NAME: SIGTERM the process group, SIGKILL it after 10 s. No-op when not running.
stop() {
  local name=$1 pid i
  pid=$(pid_of "$name")
  if [ -z "$pid" ]; then
    rm -f "$DIR/pids/$name.pid"
    return 0
  fi
  kill -TERM -- "-$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    group_alive "$pid" || break
    sleep 0.1
  done
  if group_alive "$pid"; then
    log "$name: still running after 10 s, sending SIGKILL"
    kill -KILL -- "-$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
      group_alive "$pid" || break
      sleep 0.1
    done
  fi
  STOPPED_PIDS+=("$pid")
  rm -f "$DIR/pids/$name.pid"
  log "$name: stopped (pid $pid)"
}

# wait_healthy NAME CURL_ARGS...: poll until curl succeeds; fail fast if the process died.
wait_healthy() {
  local name=$1 t0 deadline
  shift
  t0=$(now)
  deadline=$(($(date +%s) + TIMEOUT))
  while :; do
    if curl -fsS --max-time 2 -o /dev/null "$@" 2>/dev/null; then
      log "$name: healthy after $(since "$t0") s"
      return 0
    fi
    if [ -z "$(pid_of "$name")" ]; then
      tail -n 30 "$DIR/logs/$name.log" >&2 || true
      die "$name exited during start-up; see $DIR/logs/$name.log"
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
      tail -n 30 "$DIR/logs/$name.log" >&2 || true
      die "$name not healthy after ${TIMEOUT} s; see $DIR/logs/$name.log"
    fi
    sleep 0.2
  done
}

rss_mib() { awk '/^VmRSS:/ {printf "%d", $2 / 1024}' "/proc/$1/status" 2>/dev/null || echo "?"; }

# --- ports ------------------------------------------------------------------------------------

# port_in_use PORT: is anything bound to PORT on any local IPv4/IPv6 address?
port_in_use() {
  local hex
  hex=$(printf ':%04X' "$1")
  awk -v h="$hex\$" '$2 ~ h { found = 1 } END { exit !found }' /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

pick_ports() {
  local reuse=0 p
  if [ -f "$DIR/ports.env" ]; then
    # shellcheck source=/dev/null
    . "$DIR/ports.env"
    reuse=1
    for p in "$ETCD_CLIENT_PORT" "$ETCD_PEER_PORT" "$APISERVER_PORT" "$KCM_PORT" "$SCHEDULER_PORT"; do
      port_in_use "$p" && reuse=0
    done
  fi
  if [ "$reuse" = 1 ]; then
    log "reusing ports from $DIR/ports.env"
    return 0
  fi
  local chosen=() n
  while [ "${#chosen[@]}" -lt 5 ]; do
    n=$((20000 + RANDOM % 12000)) # below the ephemeral range (32768+) used by outgoing connections
    port_in_use "$n" && continue
    [[ " ${chosen[*]-} " == *" $n "* ]] && continue
    chosen+=("$n")
  done
  ETCD_CLIENT_PORT=${chosen[0]} ETCD_PEER_PORT=${chosen[1]} APISERVER_PORT=${chosen[2]}
  KCM_PORT=${chosen[3]} SCHEDULER_PORT=${chosen[4]}
  cat >"$DIR/ports.env" <<EOF
ETCD_CLIENT_PORT=$ETCD_CLIENT_PORT
ETCD_PEER_PORT=$ETCD_PEER_PORT
APISERVER_PORT=$APISERVER_PORT
KCM_PORT=$KCM_PORT
SCHEDULER_PORT=$SCHEDULER_PORT
EOF
}

# --- PKI --------------------------------------------------------------------------------------

# client_cert NAME CN [O]: an ECDSA P-256 client certificate signed by the cluster CA
# (or by the CA named in $CA_NAME).
client_cert() {
  local name=$1 cn=$2 org=${3:-} subj ca=${CA_NAME:-ca}
  subj="/CN=$cn"
  [ -n "$org" ] && subj="/O=$org/CN=$cn"
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "$subj" \
    -keyout "$PKI/$name.key" -out "$PKI/$name.csr" 2>/dev/null
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/$ca.crt" -CAkey "$PKI/$ca.key" -CAcreateserial \
    -days "$CERT_DAYS" -out "$PKI/$name.crt" \
    -extfile <(printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n') 2>/dev/null
  rm -f "$PKI/$name.csr"
}

# kubelet_client_cert: the identity the API server presents to kubelets (logs, exec, ...), as
# kubeadm's apiserver-kubelet-client: a kubelet that authorizes asks the API server about it.
kubelet_client_cert() {
  client_cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters
  chmod 600 "$PKI/apiserver-kubelet-client.key"
}

make_pki() {
  # Keep an existing PKI (restarts keep working kubeconfigs and tokens) unless it expires within a day.
  if [ -f "$PKI/apiserver.crt" ] && [ -f "$PKI/front-proxy-client.crt" ] && [ -f "$PKI/sa.pub" ] &&
    openssl x509 -checkend 86400 -noout -in "$PKI/apiserver.crt" >/dev/null 2>&1; then
    # Added later: a PKI from an earlier version gets it from the same CA.
    [ -f "$PKI/apiserver-kubelet-client.crt" ] || kubelet_client_cert
    return 0
  fi
  log "generating PKI in $PKI (valid $CERT_DAYS days)"
  rm -rf "$PKI"
  mkdir -p "$PKI"
  chmod 700 "$PKI"
  # One CA signs the serving cert and all client certs (client-ca == ca).
  openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days "$CERT_DAYS" \
    -subj "/CN=rc-kube-ca" -keyout "$PKI/ca.key" -out "$PKI/ca.crt" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
  # Serving cert: rustls rejects IPs in CN, so the names all go in the SAN.
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=kube-apiserver" \
    -keyout "$PKI/apiserver.key" -out "$PKI/apiserver.csr" 2>/dev/null
  openssl x509 -req -in "$PKI/apiserver.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days "$CERT_DAYS" -out "$PKI/apiserver.crt" -extfile <(printf '%s\n' \
      'basicConstraints=CA:FALSE' \
      'keyUsage=critical,digitalSignature,keyEncipherment' \
      'extendedKeyUsage=serverAuth' \
      'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local') 2>/dev/null
  rm -f "$PKI/apiserver.csr"
  # Client identities: admin is cluster-admin through system:masters; the controller-manager and
  # scheduler use the users the RBAC bootstrap policy grants (as kubeadm does), so RBAC is real.
  client_cert admin admin system:masters
  client_cert kube-controller-manager system:kube-controller-manager
  client_cert kube-scheduler system:kube-scheduler
  kubelet_client_cert
  # Front-proxy (request-header) CA and the apiserver's proxy client cert, as kubeadm sets them up:
  # without them every component using delegated authentication (controller-manager, scheduler,
  # later aggregated APIs) logs "missing content for CA bundle ...requestheader-client-ca-file".
  openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days "$CERT_DAYS" \
    -subj "/CN=rc-kube-front-proxy-ca" -keyout "$PKI/front-proxy-ca.key" -out "$PKI/front-proxy-ca.crt" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
  CA_NAME=front-proxy-ca client_cert front-proxy-client front-proxy-client
  # Service-account token signing key pair (apiserver signs/verifies, KCM signs its controllers' tokens).
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$PKI/sa.key" 2>/dev/null
  openssl pkey -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  chmod 600 "$PKI"/*.key
}

# kubeconfig NAME CERT: a self-contained kubeconfig (certs embedded) for one identity.
kubeconfig() {
  local file="$DIR/$1.kubeconfig" cert=$2
  cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: rc-kube
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority-data: $(base64 -w0 <"$PKI/ca.crt")
users:
- name: $cert
  user:
    client-certificate-data: $(base64 -w0 <"$PKI/$cert.crt")
    client-key-data: $(base64 -w0 <"$PKI/$cert.key")
contexts:
- name: rc-kube
  context:
    cluster: rc-kube
    user: $cert
current-context: rc-kube
EOF
  chmod 600 "$file"
}

# --- commands ---------------------------------------------------------------------------------

cmd_up() {
  local b t_all t0
  for b in "${COMPONENTS[@]}" kubectl; do
    [ -x "$BIN/$b" ] || die "$BIN/$b missing; run hack/kube/build.sh first"
  done
  command -v openssl >/dev/null || die "openssl is required"
  command -v curl >/dev/null || die "curl is required"
  for b in "${COMPONENTS[@]}"; do
    [ -z "$(pid_of "$b")" ] || die "$b is already running for $DIR (pid $(pid_of "$b")); run: $0 down $DIR"
  done

  t_all=$(now)
  mkdir -p "$DIR/pids" "$DIR/logs"
  mkdir -p "$DIR/etcd"
  chmod 700 "$DIR/etcd" # etcd warns about anything more open
  PKI="$DIR/pki"
  make_pki
  pick_ports
  kubeconfig admin admin
  kubeconfig kube-controller-manager kube-controller-manager
  kubeconfig kube-scheduler kube-scheduler
  cat >"$DIR/env" <<EOF
export KUBECONFIG=$DIR/admin.kubeconfig
export PATH="$BIN:\$PATH"
EOF
  log "cluster dir $DIR, binaries $BIN"
  log "ports: etcd $ETCD_CLIENT_PORT (peer $ETCD_PEER_PORT), apiserver $APISERVER_PORT, controller-manager $KCM_PORT, scheduler $SCHEDULER_PORT"

  # If anything below fails, stop what was started (logs stay for diagnosis).
  trap on_up_exit EXIT

  local etcd_url="http://127.0.0.1:$ETCD_CLIENT_PORT" peer_url="http://127.0.0.1:$ETCD_PEER_PORT"
  start etcd \
    --name=rc-kube --data-dir="$DIR/etcd" \
    --listen-client-urls="$etcd_url" --advertise-client-urls="$etcd_url" \
    --listen-peer-urls="$peer_url" --initial-advertise-peer-urls="$peer_url" \
    --initial-cluster="rc-kube=$peer_url" --initial-cluster-state=new \
    --unsafe-no-fsync=true --auto-compaction-mode=periodic --auto-compaction-retention=5m
  wait_healthy etcd "$etcd_url/health"

  start kube-apiserver \
    --etcd-servers="$etcd_url" \
    --bind-address=127.0.0.1 --secure-port="$APISERVER_PORT" --advertise-address=127.0.0.1 \
    --endpoint-reconciler-type=none \
    --cert-dir="$PKI" --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
    --client-ca-file="$PKI/ca.crt" \
    --requestheader-client-ca-file="$PKI/front-proxy-ca.crt" --requestheader-allowed-names=front-proxy-client \
    --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group \
    --requestheader-extra-headers-prefix=X-Remote-Extra- \
    --proxy-client-cert-file="$PKI/front-proxy-client.crt" --proxy-client-key-file="$PKI/front-proxy-client.key" \
    --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
    --kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
    --service-cluster-ip-range=10.0.0.0/24 \
    --authorization-mode=RBAC \
    --allow-privileged=true
  wait_healthy kube-apiserver --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" \
    "https://127.0.0.1:$APISERVER_PORT/readyz"

  # The two controllers start in parallel; they only need the apiserver.
  start kube-controller-manager \
    --kubeconfig="$DIR/kube-controller-manager.kubeconfig" \
    --authentication-kubeconfig="$DIR/kube-controller-manager.kubeconfig" \
    --authorization-kubeconfig="$DIR/kube-controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$KCM_PORT" \
    --leader-elect=false \
    --use-service-account-credentials=true \
    --service-account-private-key-file="$PKI/sa.key" \
    --root-ca-file="$PKI/ca.crt" \
    --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
    --enable-hostpath-provisioner=true \
    --flex-volume-plugin-dir="$DIR/flexvolume" # else it creates /usr/libexec/kubernetes/... on the host
  cat >"$DIR/kube-scheduler.yaml" <<EOF
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection:
  kubeconfig: $DIR/kube-scheduler.kubeconfig
leaderElection:
  leaderElect: false
EOF
  start kube-scheduler \
    --config="$DIR/kube-scheduler.yaml" \
    --authentication-kubeconfig="$DIR/kube-scheduler.kubeconfig" \
    --authorization-kubeconfig="$DIR/kube-scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$SCHEDULER_PORT"

  # Default StorageClass for StatefulSet volumeClaimTemplates, served by the controller-manager's
  # hostpath provisioner (PV directories land in /tmp/hostpath_pv/<uuid>, not in DIR).
  t0=$(now)
  "$BIN/kubectl" --kubeconfig="$DIR/admin.kubeconfig" apply -f - >/dev/null <<EOF
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: standard
  annotations:
    storageclass.kubernetes.io/is-default-class: "true"
provisioner: kubernetes.io/host-path
reclaimPolicy: Delete
volumeBindingMode: Immediate
EOF
  log "default StorageClass 'standard' (kubernetes.io/host-path) applied in $(since "$t0") s"

  # Their serving certs are self-signed in memory, hence -k; /healthz is anonymous-readable.
  wait_healthy kube-controller-manager -k "https://127.0.0.1:$KCM_PORT/healthz"
  wait_healthy kube-scheduler -k "https://127.0.0.1:$SCHEDULER_PORT/healthz"

  # Ready for tests once the controller-manager's controllers run: the serviceaccount controller
  # creating default/default is the visible sign (pods are rejected without it).
  t0=$(now)
  local deadline=$(($(date +%s) + TIMEOUT))
  until "$BIN/kubectl" --kubeconfig="$DIR/admin.kubeconfig" -n default get serviceaccount default >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || die "ServiceAccount default/default not created within ${TIMEOUT} s; see $DIR/logs/kube-controller-manager.log"
    sleep 0.5
  done
  log "ServiceAccount default/default present after $(since "$t0") s"
  trap - EXIT

  log "control plane up in $(since "$t_all") s"
  for b in "${COMPONENTS[@]}"; do
    log "  $b: pid $(pid_of "$b"), RSS $(rss_mib "$(pid_of "$b")") MiB"
  done
  log "use it with: eval \"\$($0 env $DIR)\""
}

on_up_exit() {
  local rc=$?
  if [ "$rc" != 0 ]; then
    log "start-up failed; stopping what was started"
    cmd_down_quiet
  fi
}

cmd_down_quiet() {
  local i pid
  STOPPED_PIDS=()
  for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do
    stop "${COMPONENTS[i]}"
  done
  # A dead daemon stays a zombie until its parent (init, once `up` has exited) reaps it; give that
  # up to 5 s so that `pgrep` right after `down` shows nothing.
  for ((i = 0; i < 50; i++)); do
    for pid in "${STOPPED_PIDS[@]}" ""; do
      [ -n "$pid" ] && [ -e "/proc/$pid" ] && break
    done
    [ -z "$pid" ] && break
    sleep 0.1
  done
}

cmd_down() {
  if [ ! -d "$DIR/pids" ]; then
    log "nothing to stop in $DIR"
    return 0
  fi
  cmd_down_quiet
  log "control plane in $DIR stopped (data and logs kept)"
}

cmd_env() {
  [ -f "$DIR/env" ] || die "$DIR/env missing; run: $0 up $DIR"
  cat "$DIR/env"
}

[ $# = 2 ] || usage
case "$1" in
  up)
    mkdir -p "$2"
    DIR=$(cd "$2" && pwd)
    cmd_up
    ;;
  down)
    if [ ! -d "$2" ]; then
      log "nothing to stop in $2"
      exit 0
    fi
    DIR=$(cd "$2" && pwd)
    cmd_down
    ;;
  env)
    [ -d "$2" ] || die "$2 does not exist; run: $0 up $2"
    DIR=$(cd "$2" && pwd)
    cmd_env
    ;;
  *) usage ;;
esac
