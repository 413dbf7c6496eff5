#!/usr/bin/env bash
# `make e2e`: the end-to-end suite on a real local control plane with the process kubelet.
#
# Starts everything it needs (hack/lib/stack.sh) and stops it on exit, whatever happens:
#   install   helm install from charts/; the operator runs as a pod with in-cluster config, so its
#             RBAC is the chart's, for real
#   orders    a SingleLeader cluster: Available, owned objects and owner references, status
#             fields, printer columns, leader label and Service, keys written and read by pod IP
#   security  TLS by default: clients need the cluster CA, plain HTTP gets no answer; a certificate
#             rotation and an admin-token rotation under a live writer with zero failed writes;
#             the admin Secret deleted and restored with the token the nodes hold; no token in logs
#             or Events; a cluster with spec.tls.enabled: false says so in its status; client
#             tokens: 401 without, 403 for a read-only token's write
#   cel       invalid specs rejected by `kubectl apply` with each CEL rule's message
#   restart   operator pod deleted: no node pod restarted, leader/epoch unchanged, Available
#             throughout, writes keep succeeding, the new operator reconciles
#   failover  the leader pod is deleted (a planned hand-over), is killed, hangs (SIGSTOP), loses its network
#             link, and hangs while the operator pod is deleted: each time a new leader in a higher
#             epoch, no acknowledged write lost, lastFailover and a LeaderPromoted Event recorded,
#             and the old leader back as a follower with the data
#   day2      the kubectl plugin (status, switchover), a switchover through the CR annotation,
#             `kubectl logs` (tail, -f, --previous) of a node pod through the API server,
#             refused requests (unknown target, Leaderless, a scale while paused), spec.image
#             changed with a live writer: followers first, a switchover, the leader last, the
#             history linearizable; a 5-member Leaderless rollout with every acknowledged write
#             read back
#   membership  orders scaled 3 -> 5 -> 3 with the leader killed in the middle of each step,
#             3 -> 1 -> 3, and a member's PVC deleted (an empty volume) while another member is
#             down; a live writer's history (rc-history) must be linearizable (Porcupine) and
#             every acknowledged write readable at the end
#   sessions  a Leaderless cluster: Available, owned objects, status, keys through any node,
#             scaled from 3 to 4 nodes with its data still readable
#   cascade   deleting the clusters removes every owned object; PVCs are retained by design
#
# Every wait is bounded. Each check prints PASS or FAIL with the reason; the summary lists the
# failures and the exit code is non-zero if any. E2E_ONLY="orders cel" runs a subset of the
# sections after install (restart and failover need orders). STACK_KEEP=1 keeps $STACK_DIR (logs) afterwards.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=hack/lib/stack.sh
. hack/lib/stack.sh
# shellcheck source=tests/e2e/kubectl-logs.sh
. tests/e2e/kubectl-logs.sh

stack_init e2e rce2e 10.241.20.0/24
NS=e2e
T0=$(stack_now)
PASSED=()
FAILED=()
ONLY=" ${E2E_ONLY:-install orders security cel restart failover day2 membership sessions cascade} "

finish() {
  local rc=$?
  # Stop everything even if stdout is gone (a killed `| tee`): no abort half-way.
  set +e
  trap '' PIPE
  trap - EXIT INT TERM
  [ -n "${FAULT_PID:-}" ] && kill -CONT "$FAULT_PID" 2>/dev/null
  [ -n "${FAULT_LINK:-}" ] && ip link set "$FAULT_LINK" up 2>/dev/null
  [ -n "${WRITER_PID:-}" ] && kill "$WRITER_PID" 2>/dev/null
  [ -n "${HISTORY_PID:-}" ] && kill "$HISTORY_PID" 2>/dev/null
  [ -n "${TARGETS_PID:-}" ] && kill "$TARGETS_PID" 2>/dev/null
  echo
  if [ "$rc" != 0 ] && [ "${#FAILED[@]}" = 0 ]; then
    FAILED+=("suite aborted (exit $rc) before all checks ran; see the output above")
  fi
  if [ "${#FAILED[@]}" != 0 ] && [ -d "${STACK_DIR:-}" ]; then
    echo "---- last lines of the process kubelet and operator logs ----"
    tail -n 15 "$STACK_DIR/logs/process-kubelet.log" 2>/dev/null || true
    tail -n 15 "$STACK_DIR"/kubelet/pods/rc-system_*/logs/operator.log 2>/dev/null || true
  fi
  if [ "${#FAILED[@]}" != 0 ]; then
    STACK_KEEP=1 # logs for diagnosis; the next run removes them
  fi
  stack_down
  echo
  echo "==== e2e summary: ${#PASSED[@]} passed, ${#FAILED[@]} failed, $(stack_since "$T0") s ===="
  local f
  for f in "${FAILED[@]}"; do echo "  FAIL: $f"; done
  [ "${#FAILED[@]}" = 0 ] && [ "$rc" = 0 ] && exit 0
  exit 1
}
trap finish EXIT
trap 'exit 130' INT TERM

pass() { PASSED+=("$1"); echo "  PASS  $1"; }
fail() { FAILED+=("$1: $2"); echo "  FAIL  $1: $2"; }
section() { echo; stack_log "== $1"; }
want() { [[ "$ONLY" == *" $1 "* ]]; }

# expect NAME ACTUAL EXPECTED
expect() {
  if [ "$2" = "$3" ]; then pass "$1 = $3"; else fail "$1" "got '$2', want '$3'"; fi
}
# eventually NAME TIMEOUT CMD...: CMD succeeds within TIMEOUT seconds.
eventually() {
  local name=$1 timeout=$2
  shift 2
  if stack_wait "$name" "$timeout" "$@"; then pass "$name"; else fail "$name" "not true within ${timeout} s"; fi
}
jp() { kubectl -n "$NS" get "$1" -o jsonpath="$2" 2>/dev/null; }
cond() { jp "replicatedcluster/$1" "{.status.conditions[?(@.type==\"$2\")].status}"; }
cond_reason() { jp "replicatedcluster/$1" "{.status.conditions[?(@.type==\"$2\")].reason}: {.status.conditions[?(@.type==\"$2\")].message}"; }
is_available() { [ "$(cond "$1" Available)" = True ]; }

# healthy NAME N: N nodes ready, Available, not Degraded.
healthy() {
  [ "$(jp "replicatedcluster/$1" '{.status.readyReplicas}/{.status.conditions[?(@.type=="Available")].status}/{.status.conditions[?(@.type=="Degraded")].status}')" = "$2/True/False" ]
}

# wait_ready NAME N TIMEOUT: the cluster becomes healthy (Available alone only means a quorum).
wait_ready() {
  local t0
  t0=$(stack_now)
  if stack_wait "$1 Ready" "$3" healthy "$1" "$2"; then
    refresh_ca
    pass "$1 Ready ($2 nodes ready, Available, not Degraded) after $(stack_since "$t0") s"
  else
    fail "$1 Ready" "after $3 s: $(jp "replicatedcluster/$1" '{.status.readyReplicas}') ready; Available $(cond "$1" Available) ($(cond_reason "$1" Available)); Degraded $(cond "$1" Degraded) ($(cond_reason "$1" Degraded))"
    return 1
  fi
}

# Clients verify the nodes with the clusters' CAs (TLS is on by default): every <cluster>-ca
# ConfigMap's ca.crt, in one bundle, refreshed whenever a cluster becomes ready.
CA_BUNDLE="$STACK_DIR/ca-bundle.pem"
refresh_ca() {
  kubectl -n "$NS" get configmaps -l app.kubernetes.io/managed-by=rc-operator \
    -o jsonpath='{range .items[*]}{.data.ca\.crt}{"\n"}{end}' >"$CA_BUNDLE.tmp" 2>/dev/null &&
    mv "$CA_BUNDLE.tmp" "$CA_BUNDLE"
}
# ncurl IP PATH [CURL ARGS]: HTTPS to the node at IP, verified with the CA bundle: /admin/ on
# the admin port (7402), the rest on the client port (7400). Every node certificate names
# localhost; --connect-to dials the IP for it (pod IPs are not in certificates).
ncurl() {
  local ip=$1 path=$2 port=7400
  shift 2
  case "$path" in /admin/*) port=7402 ;; esac
  [ -s "$CA_BUNDLE" ] || refresh_ca
  curl --cacert "$CA_BUNDLE" --connect-to "localhost:$port:$ip:$port" "$@" "https://localhost:$port$path"
}

# kv_put IP KEY VALUE / kv_get IP KEY [QUERY]: the node's client API by pod IP, following redirects.
kv_put() {
  ncurl "$1" "/v1/kv/$2" -fsS -L --max-time 5 -X PUT -H 'content-type: application/json' \
    -d "{\"value\":\"$3\"}" >/dev/null
}
kv_get() { ncurl "$1" "/v1/kv/$2${3:+?$3}" -fsS -L --max-time 5 | sed -n 's/.*"value":"\([^"]*\)".*/\1/p'; }
kv_get_is() { [ "$(kv_get "$1" "$2" "${4:-}")" = "$3" ]; }
pod_ip() { stack_pod_ip "$NS" "$1"; }
# kv_error IP KEY: the error body of a failing PUT, for the report.
kv_error() {
  ncurl "$1" "/v1/kv/$2" -sS -L --max-time 5 -X PUT -H 'content-type: application/json' \
    -d '{"value":"x"}' 2>&1 | cut -c1-300
}

# check_owned KIND/NAME RC: exists and is controlled by the ReplicatedCluster RC.
check_owned() {
  local uid owner
  uid=$(jp "replicatedcluster/$2" '{.metadata.uid}')
  owner=$(jp "$1" '{.metadata.ownerReferences[?(@.controller==true)].uid}')
  if [ -z "$owner" ] && ! kubectl -n "$NS" get "$1" >/dev/null 2>&1; then
    fail "$1 exists" "not found"
  elif [ "$owner" = "$uid" ]; then
    pass "$1 owned by replicatedcluster/$2"
  else
    fail "$1 owned by replicatedcluster/$2" "controller ownerReference uid '$owner', cluster uid '$uid'"
  fi
}

# check_printer_columns NAME MODE REPLICAS READY PHASE: `kubectl get` shows the CRD's columns.
check_printer_columns() {
  local header row
  header=$(kubectl -n "$NS" get replicatedcluster "$1" | sed -n 1p | tr -s ' ')
  expect "printer columns header" "$header" "NAME MODE REPLICAS READY LEADER EPOCH PHASE AGE"
  row=$(kubectl -n "$NS" get replicatedcluster "$1" --no-headers | awk '{print $1, $2, $3, $4}')
  expect "printer columns of $1 (name mode replicas ready)" "$row" "$1 $2 $3 $4"
  row=$(kubectl -n "$NS" get replicatedcluster "$1" --no-headers | awk '{print $(NF-1)}')
  expect "printer column Phase of $1" "$row" "$5"
}

# ---------------------------------------------------------------------------------------------
section "build and start (control plane, process kubelet)"
stack_build
stack_up
kubectl create namespace "$NS" >/dev/null
# The clusters' pods must pass the restricted Pod Security Standard (enforced by the API server's
# PodSecurity admission; the process kubelet itself does not switch users).
kubectl label namespace "$NS" pod-security.kubernetes.io/enforce=restricted \
  pod-security.kubernetes.io/enforce-version=latest >/dev/null
stack_wait "default ServiceAccount in $NS" 30 kubectl -n "$NS" get serviceaccount default
if out=$(kubectl -n "$NS" run psa-probe --image=ghcr.io/replicated-dev/rc-node:0.1.0 --privileged --restart=Never 2>&1); then
  fail "restricted Pod Security in $NS" "a privileged pod was admitted: $out"
  kubectl -n "$NS" delete pod psa-probe --wait=false >/dev/null 2>&1
else
  case "$out" in *"violates PodSecurity"*) pass "namespace $NS enforces the restricted Pod Security Standard (a privileged pod is refused)" ;; *) fail "restricted Pod Security in $NS" "$out" ;; esac
fi

section "install: helm install from charts/ (operator as a pod, in-cluster config, chart RBAC)"
stack_install_operator
# Operator pods created from now on (the restart and failover sections replace it) must pass the
# restricted standard too.
kubectl label namespace "$STACK_OPERATOR_NS" pod-security.kubernetes.io/enforce=restricted \
  pod-security.kubernetes.io/enforce-version=latest >/dev/null
op_pod=$(kubectl -n "$STACK_OPERATOR_NS" get pods -l app.kubernetes.io/name=rc-operator -o jsonpath='{.items[0].metadata.name}')
expect "operator pod node" "$(kubectl -n "$STACK_OPERATOR_NS" get pod "$op_pod" -o jsonpath='{.spec.nodeName}')" "$STACK_NODE"
op_ip=$(kubectl -n "$STACK_OPERATOR_NS" get pod "$op_pod" -o jsonpath='{.status.podIP}')
case "$op_ip" in "${STACK_SUBNET%.0/24}".*) pass "operator pod has its own IP $op_ip" ;; *) fail "operator pod IP" "'$op_ip' not in $STACK_SUBNET" ;; esac
if ls "$STACK_DIR"/kubelet/pods/rc-system_"$op_pod"_*/volumes/kube-api-access-*/token >/dev/null 2>&1; then
  pass "operator got a bound service-account token (TokenRequest) in its projected volume"
else
  fail "operator token" "no kube-api-access-*/token in its pod directory"
fi
eventually "operator holds its leader-election Lease (chart RBAC: leases)" 30 \
  bash -c "[ \"\$(kubectl -n $STACK_OPERATOR_NS get lease -o jsonpath='{.items[*].spec.holderIdentity}')\" = '$op_pod' ]"

# ---------------------------------------------------------------------------------------------
if want orders || want security || want restart || want failover || want day2; then
  section "orders: a SingleLeader cluster"
  kubectl -n "$NS" apply -f - >/dev/null <<'EOF'
apiVersion: replicated.dev/v1alpha1
kind: ReplicatedCluster
metadata:
  name: orders
spec:
  mode: SingleLeader
  replicas: 3
  image: ghcr.io/replicated-dev/rc-node:0.1.0
  storage:
    size: 64Mi
  singleLeader:
    replication: Quorum
    leaderLossTimeoutMs: 1000
EOF
  if wait_ready orders 3 120; then
    for obj in statefulset/orders configmap/orders-config service/orders-peers service/orders-leader \
      service/orders-replicas poddisruptionbudget/orders secret/orders-admin; do
      check_owned "$obj" orders
    done
    expect "orders-peers clusterIP" "$(jp service/orders-peers '{.spec.clusterIP}')" None
    expect "orders-peers publishNotReadyAddresses" "$(jp service/orders-peers '{.spec.publishNotReadyAddresses}')" true
    expect "status.observedGeneration" "$(jp replicatedcluster/orders '{.status.observedGeneration}')" "$(jp replicatedcluster/orders '{.metadata.generation}')"
    expect "status.replicas" "$(jp replicatedcluster/orders '{.status.replicas}')" 3
    expect "status.readyReplicas" "$(jp replicatedcluster/orders '{.status.readyReplicas}')" 3
    expect "status.phase" "$(jp replicatedcluster/orders '{.status.phase}')" Running
    expect "status.members" "$(jp replicatedcluster/orders '{.status.members[*].name}' | tr ' ' '\n' | sort | xargs)" "orders-0 orders-1 orders-2"
    leader=$(jp replicatedcluster/orders '{.status.leader}')
    epoch=$(jp replicatedcluster/orders '{.status.epoch}')
    case "$leader" in orders-[012]) pass "status.leader = $leader" ;; *) fail "status.leader" "'$leader'" ;; esac
    if [ "${epoch:-0}" -ge 1 ] 2>/dev/null; then pass "status.epoch = $epoch (>= 1)"; else fail "status.epoch" "'$epoch'"; fi
    check_printer_columns orders SingleLeader 3 3 Running
    # The process kubelet starts the node as the pod's runAsUser/runAsGroup, with fsGroup.
    if npid=$(stack_node_pid orders-0); then
      expect "orders-0's rc-node process user:group" "$(stat -c %u:%g "/proc/$npid")" 65532:65532
    else
      fail "orders-0's rc-node process" "not found"
    fi
    if [ -n "$leader" ]; then
      expect "printer column Leader" "$(kubectl -n "$NS" get replicatedcluster orders --no-headers | awk '{print $5}')" "$leader"
      expect "leader pod label replicated.dev/role" "$(jp "pod/$leader" '{.metadata.labels.replicated\.dev/role}')" leader
      lip=$(pod_ip "$leader")
      eventually "Service orders-leader's EndpointSlice holds only the leader ($lip)" 30 \
        bash -c "[ \"\$(kubectl -n $NS get endpointslices -l kubernetes.io/service-name=orders-leader -o jsonpath='{.items[*].endpoints[*].addresses[*]}')\" = '$lip' ]"
      # Replication reaches every follower, not just a quorum (a follower the leader cannot
      # reach would otherwise go unnoticed: Quorum writes still succeed).
      token=$(jp secret/orders-admin '{.data.token}' | base64 -d)
      admin_index() {
        ncurl "$1" /admin/status -fsS --max-time 5 -H "Authorization: Bearer $token" |
          sed -n "s/.*\"$2\":\([0-9]*\).*/\1/p"
      }
      all_applied() {
        local c p
        c=$(admin_index "$lip" commit_index)
        [ -n "$c" ] || return 1
        for p in orders-0 orders-1 orders-2; do
          [ "$(admin_index "$(pod_ip "$p")" applied_index)" = "$c" ] || return 1
        done
      }
      if kv_put "$lip" e2e-key hello; then pass "PUT e2e-key on the leader"; else fail "PUT e2e-key on the leader" "$(kv_error "$lip" e2e-key)"; fi
      expect "GET e2e-key (linearizable) from the leader" "$(kv_get "$lip" e2e-key)" hello
      follower=$(kubectl -n "$NS" get pods -l replicated.dev/cluster=orders -o name | sed 's|pod/||' | grep -vx "$leader" | sed -n 1p)
      eventually "every node applied the leader's log up to its commit index" 20 all_applied
      eventually "stale read of e2e-key from follower $follower" 15 kv_get_is "$(pod_ip "$follower")" e2e-key hello consistency=stale
      # A follower answers writes with 307 to the leader's stable DNS name, which resolves only in
      # a cluster with DNS; curl --resolve stands in for it, so the whole redirect path is tested.
      location=$(ncurl "$(pod_ip "$follower")" /v1/kv/e2e-key2 -sS -o /dev/null -w '%{redirect_url}' --max-time 5 \
        -X PUT -H 'content-type: application/json' -d '{"value":"via-follower"}')
      expect "follower $follower redirects writes to" "$location" "https://$leader.orders-peers.$NS.svc:7400/v1/kv/e2e-key2"
      # Followed by name: the leader's certificate is checked against its DNS name.
      if ncurl "$(pod_ip "$follower")" /v1/kv/e2e-key2 -fsS -L --max-time 5 --resolve "$leader.orders-peers.$NS.svc:7400:$lip" \
        -X PUT -H 'content-type: application/json' -d '{"value":"via-follower"}' >/dev/null; then
        expect "write through follower $follower, redirected, read back from the leader" "$(kv_get "$lip" e2e-key2)" via-follower
      else
        fail "write through follower $follower" "redirected PUT failed"
      fi
    fi
  fi
fi

# ---------------------------------------------------------------------------------------------
# writer_start TAG IP...: PUTs TAG-<n> to the nodes in turn, each with a new TLS handshake (curl
# per request), until writer_stop TAG; acknowledged keys in TAG.ok, failures (with why) in
# TAG.failed.
writer_start() {
  local tag=$1
  shift
  touch "$STACK_DIR/$tag.on"
  : >"$STACK_DIR/$tag.ok"
  : >"$STACK_DIR/$tag.failed"
  (
    local i=0 ip out
    local ips=("$@")
    while [ -f "$STACK_DIR/$tag.on" ] && [ "$i" -lt 20000 ]; do
      ip=${ips[$((i % ${#ips[@]}))]}
      i=$((i + 1))
      if out=$(ncurl "$ip" "/v1/kv/$tag-$i" -sS -f --max-time 3 -X PUT -H 'content-type: application/json' \
        -d "{\"value\":\"v$i\"}" 2>&1); then
        echo "$tag-$i" >>"$STACK_DIR/$tag.ok"
      else
        echo "$tag-$i via $ip: $out" >>"$STACK_DIR/$tag.failed"
      fi
    done
  ) &
  WRITER_PID=$!
}
# writer_stop TAG NAME: stops the writer; passes when it made progress and no write failed.
writer_stop() {
  rm -f "$STACK_DIR/$1.on"
  wait "$WRITER_PID" 2>/dev/null || true
  WRITER_PID=""
  local ok failed
  ok=$(wc -l <"$STACK_DIR/$1.ok")
  failed=$(wc -l <"$STACK_DIR/$1.failed")
  if [ "$failed" = 0 ] && [ "$ok" -gt 20 ]; then
    pass "$2: $ok writes acknowledged, 0 failed"
  else
    fail "$2" "$ok acknowledged, $failed failed: $(head -3 "$STACK_DIR/$1.failed" | tr '\n' ' ' | cut -c1-400)"
  fi
}
# node_field IP TOKEN FIELD: a string field of the node's /admin/status.
node_field() {
  ncurl "$1" /admin/status -fsS --max-time 5 -H "Authorization: Bearer $2" |
    sed -n "s/.*\"$3\":\"\([^\"]*\)\".*/\1/p"
}
# all_nodes_field CLUSTER N TOKEN FIELD: the distinct values of FIELD over the cluster's N pods.
all_nodes_field() {
  local p
  for p in $(seq 0 $(($2 - 1))); do
    node_field "$(pod_ip "$1-$p")" "$3" "$4"
    echo
  done | grep . | sort -u | xargs
}
# one_node_cluster NAME SPEC: a 1-node SingleLeader cluster NAME with one more spec line SPEC.
one_node_cluster() {
  kubectl -n "$NS" apply -f - >/dev/null <<EOF
apiVersion: replicated.dev/v1alpha1
kind: ReplicatedCluster
metadata:
  name: $1
spec:
  mode: SingleLeader
  replicas: 1
  image: ghcr.io/replicated-dev/rc-node:0.1.0
  storage: { size: 64Mi }
  $2
EOF
}
# status_code IP TOKEN: the HTTP status of GET /admin/status with TOKEN.
status_code() { ncurl "$1" /admin/status -sS -o /dev/null -w '%{http_code}' --max-time 5 -H "Authorization: Bearer $2"; }
# One value on every node, different from the one before.
certificate_changed() {
  local now
  now=$(all_nodes_field orders 3 "$2" certificate)
  [ -n "$now" ] && [ "$now" != "$1" ] && [[ "$now" != *" "* ]]
}
token_sent_by_all() { [ "$(all_nodes_field orders 3 "$1" token)" = "$2" ]; }
# rotation_done OLD: the Secret holds one token, not OLD, and no rotation step is under way.
rotation_done() {
  [ "$(jp secret/orders-admin '{.data.token}' | base64 -d)" != "$1" ] &&
    [ -z "$(jp replicatedcluster/orders '{.status.security.adminTokenRotation}')" ] &&
    [ "$(kubectl -n "$NS" get secret orders-admin -o go-template='{{range $k, $v := .data}}{{$k}} {{end}}')" = "token " ]
}

if want security; then
  section "security: TLS by default, rotations under a live writer, a deleted admin Secret"
  leader=$(jp replicatedcluster/orders '{.status.leader}')
  lip=$(pod_ip "$leader")
  token=$(jp secret/orders-admin '{.data.token}' | base64 -d)
  expect "status.security.tls" "$(jp replicatedcluster/orders '{.status.security.tls}')" true
  expect "status.security.caConfigMap" "$(jp replicatedcluster/orders '{.status.security.caConfigMap}')" orders-ca
  for obj in secret/orders-ca secret/orders-tls configmap/orders-ca networkpolicy/orders; do check_owned "$obj" orders; done
  # The NetworkPolicy as rendered (this local environment has no network plugin, so nothing
  # enforces it: the ports are checked below directly instead).
  expect "NetworkPolicy: client port 7400 open to all" "$(jp networkpolicy/orders '{.spec.ingress[0].ports[0].port}/{.spec.ingress[0].from}')" "7400/"
  expect "NetworkPolicy: peer port 7401 from the cluster's pods" \
    "$(jp networkpolicy/orders '{.spec.ingress[1].ports[0].port} {.spec.ingress[1].from[0].podSelector.matchLabels.replicated\.dev/cluster}')" "7401 orders"
  expect "NetworkPolicy: admin port 7402 from the operator's pods" \
    "$(jp networkpolicy/orders '{.spec.ingress[2].ports[0].port} {.spec.ingress[2].from[0].namespaceSelector.matchLabels.kubernetes\.io/metadata\.name} {.spec.ingress[2].from[0].podSelector.matchLabels.app\.kubernetes\.io/name}')" \
    "7402 $STACK_OPERATOR_NS rc-operator"
  expect "the client port has no admin API" "$(curl -sS -o /dev/null -w '%{http_code}' --max-time 5 --cacert "$CA_BUNDLE" \
    --connect-to "localhost:7400:$lip:7400" -H "Authorization: Bearer $token" https://localhost:7400/admin/status)" 404
  expect "keys of the mounted node Secret (no CA key)" \
    "$(kubectl -n "$NS" get secret orders-tls -o go-template='{{range $k, $v := .data}}{{$k}} {{end}}')" "ca.crt tls.crt tls.key "
  if out=$(curl -sS --max-time 5 --connect-to "localhost:7400:$lip:7400" https://localhost:7400/healthz 2>&1); then
    fail "a client without the cluster CA" "was served: $out"
  else
    pass "a client without the cluster CA is refused ($(echo "$out" | cut -c1-100))"
  fi
  if out=$(curl -sS --max-time 5 "http://$lip:7400/healthz" 2>&1); then
    fail "plain HTTP to the node port" "was answered: $out"
  else
    pass "plain HTTP to the node port gets no answer"
  fi
  expect "a client with the cluster CA, GET /healthz" "$(ncurl "$lip" /healthz -sS -o /dev/null -w '%{http_code}' --max-time 5)" 200
  expect "the admin API with a wrong token" "$(status_code "$lip" wrong-token-0123456789)" 401

  # Certificate rotation: every write opens a new TLS connection, so writes after the swap meet
  # the new certificate.
  before=$(all_nodes_field orders 3 "$token" certificate)
  writer_start certw "$lip"
  sleep 1
  kubectl -n "$NS" annotate replicatedcluster orders replicated.dev/rotate-certificate="$(date +%s)" --overwrite >/dev/null
  eventually "every orders node serves one new certificate (was $before)" 60 certificate_changed "$before" "$token"
  sleep 2
  writer_stop certw "certificate rotation under a live writer"
  eventually "a CertificateIssued Event for the rotation" 10 bash -c \
    "kubectl -n $NS get events --field-selector involvedObject.name=orders -o jsonpath='{.items[*].reason}' | grep -q CertificateIssued"

  # Admin-token rotation in three steps, under a writer (replication reconnects need the token).
  writer_start tokw "$lip"
  sleep 1
  kubectl -n "$NS" annotate replicatedcluster orders replicated.dev/rotate-admin-token="$(date +%s)" --overwrite >/dev/null
  eventually "the admin-token rotation completes (the Secret holds only a new token)" 120 rotation_done "$token"
  new_token=$(jp secret/orders-admin '{.data.token}' | base64 -d)
  new_fp=$(printf %s "$new_token" | sha256sum | cut -c1-16)
  eventually "every orders node sends the new token" 30 token_sent_by_all "$new_token" "$new_fp"
  sleep 2
  writer_stop tokw "admin-token rotation under a live writer"
  if [ "$new_token" != "$token" ]; then pass "the admin token changed"; else fail "the admin token" "unchanged"; fi
  expect "the old token is refused" "$(status_code "$lip" "$token")" 401
  expect "the new token is accepted" "$(status_code "$lip" "$new_token")" 200

  # A deleted admin Secret is recreated with the token the nodes hold: no lock-out.
  kubectl -n "$NS" delete secret orders-admin >/dev/null
  eventually "the admin Secret is recreated" 30 kubectl -n "$NS" get secret orders-admin
  expect "the recreated admin Secret's token" "$(jp secret/orders-admin '{.data.token}' | base64 -d)" "$new_token"
  eventually "an AdminSecretRestored Event" 10 bash -c \
    "kubectl -n $NS get events --field-selector involvedObject.name=orders -o jsonpath='{.items[*].reason}' | grep -q AdminSecretRestored"
  expect "the nodes still accept it" "$(status_code "$lip" "$new_token")" 200
  eventually "orders stays Ready" 30 healthy orders 3

  # No secret in logs or Events.
  leaks=""
  for t in "$token" "$new_token"; do
    kubectl -n "$STACK_OPERATOR_NS" logs -l app.kubernetes.io/name=rc-operator --tail=-1 2>/dev/null | grep -qF "$t" && leaks+=" operator-log"
    for p in orders-0 orders-1 orders-2; do kubectl -n "$NS" logs "$p" 2>/dev/null | grep -qF "$t" && leaks+=" $p-log"; done
    kubectl -n "$NS" get events -o yaml 2>/dev/null | grep -qF "$t" && leaks+=" events"
  done
  if [ -z "$leaks" ]; then pass "no admin token in the operator's or nodes' logs or in Events"; else fail "secrets in logs" "$leaks"; fi

  # TLS off is possible, and the status says what that means.
  one_node_cluster plain "tls: { enabled: false }"
  if wait_ready plain 1 90; then
    expect "plain: status.security.tls" "$(jp replicatedcluster/plain '{.status.security.tls}')" false
    case "$(jp replicatedcluster/plain '{.status.security.warning}')" in
      *"plain text"*) pass "plain: status.security.warning says traffic is plain text" ;;
      *) fail "plain: status.security.warning" "'$(jp replicatedcluster/plain '{.status.security.warning}')'" ;;
    esac
    expect "plain: GET /healthz over plain HTTP" "$(curl -sS -o /dev/null -w '%{http_code}' --max-time 5 "http://$(pod_ip plain-0):7400/healthz")" 200
    if out=$(kubectl -n "$NS" patch replicatedcluster plain --type merge -p '{"spec":{"tls":{"enabled":true}}}' 2>&1); then
      fail "spec.tls.enabled is immutable" "patch accepted: $out"
    else
      case "$out" in *"spec.tls.enabled is immutable"*) pass "spec.tls.enabled is immutable (CEL)" ;; *) fail "spec.tls.enabled immutable" "$out" ;; esac
    fi
  fi
  kubectl -n "$NS" delete replicatedcluster plain --wait=false >/dev/null 2>&1 || true

  # Client authentication: tokens from a Secret made for the cluster.
  kubectl -n "$NS" create secret generic guarded-clients \
    --from-literal=tokens="$(printf 'writer-token-0123456789\nreader-token-0123456789 read-only\n')" >/dev/null
  kubectl -n "$NS" label secret guarded-clients replicated.dev/client-tokens-for=guarded >/dev/null
  one_node_cluster guarded "clientAuth: { secretName: guarded-clients }"
  if wait_ready guarded 1 90; then
    gip=$(pod_ip guarded-0)
    put_code() {
      local auth=()
      [ -n "${1:-}" ] && auth=(-H "Authorization: Bearer $1")
      ncurl "$gip" /v1/kv/g -sS -o /dev/null -w '%{http_code}' --max-time 5 -X PUT \
        -H 'content-type: application/json' -d '{"value":"v"}' "${auth[@]}"
    }
    expect "guarded: status.security.clientAuth" "$(jp replicatedcluster/guarded '{.status.security.clientAuth}')" true
    expect "guarded: a write without a client token" "$(put_code)" 401
    expect "guarded: a write with an unknown token" "$(put_code not-a-client-token-0123)" 401
    expect "guarded: a write with a read-only token" "$(put_code reader-token-0123456789)" 403
    expect "guarded: a write with a read-write token" "$(put_code writer-token-0123456789)" 200
    expect "guarded: a read with the read-only token" \
      "$(ncurl "$gip" /v1/kv/g -sS -o /dev/null -w '%{http_code}' --max-time 5 -H 'Authorization: Bearer reader-token-0123456789')" 200
  fi
  kubectl -n "$NS" delete replicatedcluster guarded --wait=false >/dev/null 2>&1 || true
fi

# ---------------------------------------------------------------------------------------------
if want cel; then
  section "cel: invalid specs are rejected by the API server with the rule's message"
  # reject NAME MESSAGE YAML-SPEC-LINES: `kubectl apply` must fail and print MESSAGE.
  reject() {
    local out
    if out=$(printf 'apiVersion: replicated.dev/v1alpha1\nkind: ReplicatedCluster\nmetadata:\n  name: %s\nspec:\n%s\n' \
      "$1" "$3" | kubectl -n "$NS" apply -f - 2>&1); then
      fail "rejects $1" "kubectl apply succeeded: $out"
      kubectl -n "$NS" delete replicatedcluster "$1" --wait=false >/dev/null 2>&1 || true
    elif grep -qF -- "$2" <<<"$out"; then
      pass "rejects $1: $2"
    else
      fail "rejects $1" "message missing '$2' in: $out"
    fi
  }
  base='  image: ghcr.io/replicated-dev/rc-node:0.1.0
  storage: { size: 64Mi }'
  reject zero-replicas "spec.replicas must be at least 1" "  mode: SingleLeader
  replicas: 0
$base"
  reject rf-above-replicas "spec.leaderless.replicationFactor (default 3) must not exceed spec.replicas" "  mode: Leaderless
  replicas: 2
$base"
  reject w-above-n "leaderless.writeQuorum must be between 1 and replicationFactor" "  mode: Leaderless
  replicas: 3
  leaderless: { replicationFactor: 3, writeQuorum: 4, readQuorum: 2 }
$base"
  reject wrong-section "spec.singleLeader may only be set when spec.mode is SingleLeader" "  mode: Leaderless
  replicas: 3
  singleLeader: { replication: Quorum }
$base"
  reject bad-leader-loss "singleLeader.leaderLossTimeoutMs must be between 200 and 60000" "  mode: SingleLeader
  replicas: 3
  singleLeader: { leaderLossTimeoutMs: 100 }
$base"
  reject loss-within-heartbeats "singleLeader.leaderLossTimeoutMs must be at least five heartbeatIntervalMs" "  mode: SingleLeader
  replicas: 3
  singleLeader: { leaderLossTimeoutMs: 500, heartbeatIntervalMs: 200 }
$base"
  reject fence-too-long "singleLeader.fenceTimeoutMs must be at least three heartbeatIntervalMs and at most leaderLossTimeoutMs" "  mode: SingleLeader
  replicas: 3
  singleLeader: { leaderLossTimeoutMs: 2000, fenceTimeoutMs: 5000 }
$base"
  reject empty-image "spec.image must not be empty" "  mode: SingleLeader
  replicas: 3
  image: ''
  storage: { size: 64Mi }"
  reject a-name-that-is-much-longer-than-forty-characters "metadata.name must be at most 40 characters" "  mode: SingleLeader
  replicas: 1
$base"
  if kubectl -n "$NS" get replicatedcluster orders >/dev/null 2>&1; then
    reject orders "spec.mode is immutable" "  mode: Leaderless
  replicas: 3
$base"
  fi
  # adminSecretRef to a Secret not made for the cluster (the operator would mount it into pods
  # running an image the author chose): accepted by the API server, refused by the operator.
  kubectl -n "$NS" create secret generic unrelated --from-literal=token=not-for-you >/dev/null
  kubectl -n "$NS" apply -f - >/dev/null <<EOF
apiVersion: replicated.dev/v1alpha1
kind: ReplicatedCluster
metadata:
  name: deputy
spec:
  mode: SingleLeader
  replicas: 1
  adminSecretRef: { name: unrelated }
$base
EOF
  deputy_refused() {
    [ "$(jp replicatedcluster/deputy '{.status.phase}')" = Invalid ] &&
      jp replicatedcluster/deputy '{.status.conditions[?(@.type=="Degraded")].message}' | grep -q "replicated.dev/admin-secret-for=deputy"
  }
  eventually "adminSecretRef to an unrelated Secret: Invalid, the message says which label to set" 30 deputy_refused
  expect "no StatefulSet for the refused cluster" "$(kubectl -n "$NS" get statefulset deputy -o name 2>/dev/null)" ""
  kubectl -n "$NS" delete replicatedcluster deputy --wait=false >/dev/null
  kubectl -n "$NS" delete secret unrelated --wait=false >/dev/null
fi

# ---------------------------------------------------------------------------------------------
if want restart && [ -n "${leader:-}" ] && is_available orders; then
  section "restart: the operator pod is deleted; the database must not notice"
  before=$(kubectl -n "$NS" get pods -l replicated.dev/cluster=orders -o jsonpath='{range .items[*]}{.metadata.name}={.metadata.uid}/{.status.containerStatuses[0].restartCount} {end}')
  lip=$(pod_ip "$leader")
  # Writes keep going to the leader during the restart (the operator is not in the data path).
  touch "$STACK_DIR/writer.on"
  (
    i=0 bad=0
    while [ -f "$STACK_DIR/writer.on" ]; do
      i=$((i + 1))
      kv_put "$lip" "restart-$i" "v$i" || bad=$((bad + 1))
      echo "$i $bad" >"$STACK_DIR/writer.count"
      sleep 0.2
    done
  ) &
  WRITER_PID=$!
  t0=$(stack_now)
  kubectl -n "$STACK_OPERATOR_NS" delete pod "$op_pod" --wait=false >/dev/null
  unavailable=0
  new_op=""
  deadline=$(($(date +%s) + 90))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    is_available orders || unavailable=$((unavailable + 1))
    new_op=$(kubectl -n "$STACK_OPERATOR_NS" get pods -l app.kubernetes.io/name=rc-operator \
      -o jsonpath='{range .items[*]}{.metadata.name} {.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' |
      awk -v old="$op_pod" '$1 != old && $2 == "True" {print $1; exit}')
    holder=$(kubectl -n "$STACK_OPERATOR_NS" get lease -o jsonpath='{.items[*].spec.holderIdentity}')
    [ -n "$new_op" ] && [ "$holder" = "$new_op" ] && break
    sleep 1
  done
  if [ -n "$new_op" ] && [ "$holder" = "$new_op" ]; then
    pass "new operator pod $new_op Ready and leading after $(stack_since "$t0") s"
  else
    fail "operator restart" "no new operator pod holding the Lease within 90 s (ready: '$new_op', holder: '$holder')"
  fi
  # Proof that the new operator reconciles: it re-creates an owned object that went missing.
  kubectl -n "$NS" delete configmap orders-config --wait=true >/dev/null
  eventually "new operator re-creates the deleted ConfigMap orders-config" 60 kubectl -n "$NS" get configmap orders-config
  sleep 3
  rm -f "$STACK_DIR/writer.on"
  wait "$WRITER_PID" 2>/dev/null || true
  WRITER_PID=""
  read -r writes write_failures <"$STACK_DIR/writer.count"
  expect "writes to the leader that failed during the operator restart (of $writes)" "$write_failures" 0
  expect "polls during the restart where orders was not Available" "$unavailable" 0
  after=$(kubectl -n "$NS" get pods -l replicated.dev/cluster=orders -o jsonpath='{range .items[*]}{.metadata.name}={.metadata.uid}/{.status.containerStatuses[0].restartCount} {end}')
  expect "node pods (uid/restartCount) unchanged" "$after" "$before"
  expect "leader unchanged" "$(jp replicatedcluster/orders '{.status.leader}')" "$leader"
  expect "epoch unchanged" "$(jp replicatedcluster/orders '{.status.epoch}')" "$epoch"
  expect "a key written during the restart" "$(kv_get "$lip" "restart-$writes")" "v$writes"
  op_pod=$new_op
elif want restart; then
  section "restart"
  fail "operator restart" "skipped: orders has no leader or is not Available"
fi

# rolled_out CLUSTER N OLD_REV: a new update revision, N pods created from it, and the cluster
# reports N updated and Ready.
rolled_out() {
  local rev
  rev=$(kubectl -n "$NS" get sts "$1" -o jsonpath='{.status.updateRevision}')
  [ -n "$rev" ] && [ "$rev" != "$3" ] &&
    [ "$(kubectl -n "$NS" get pods -l "replicated.dev/cluster=$1" -o jsonpath="{range .items[*]}{.metadata.labels.controller-revision-hash}{'\n'}{end}" | grep -c "^$rev\$")" = "$2" ] &&
    [ "$(kubectl -n "$NS" get rcl "$1" -o jsonpath='{.status.updatedReplicas}/{.status.conditions[?(@.type=="Ready")].status}')" = "$2/True" ]
}
# history_start CLUSTER: rc-history writes to CLUSTER's pods (re-read every 0.5 s) until
# history_check; HISTORY_TAG names the files.
history_start() {
  local cluster=$1 targets
  HISTORY_TAG=${HISTORY_TAG:-history}
  touch "$STACK_DIR/$HISTORY_TAG.on"
  targets="$STACK_DIR/$HISTORY_TAG.targets"
  (
    while [ -f "$STACK_DIR/$HISTORY_TAG.on" ]; do
      kubectl -n "$NS" get pods -l "replicated.dev/cluster=$cluster" \
        -o jsonpath='{range .items[*]}{.status.podIP}{"\n"}{end}' 2>/dev/null |
        sed -n 's/^\(..*\)$/\1:7400/p' >"$targets.tmp" && mv "$targets.tmp" "$targets"
      sleep 0.5
    done
  ) &
  TARGETS_PID=$!
  stack_wait "writer targets" 10 test -s "$targets" || true
  refresh_ca
  "$STACK_TARGET/rc-history" --targets "$targets" --out "$STACK_DIR/$HISTORY_TAG.json" \
    --ca-file "$CA_BUNDLE" --server-name "$cluster.$NS.svc" \
    --stop "$STACK_DIR/$HISTORY_TAG.on" --clients 4 --keys 20 --key-prefix "$HISTORY_TAG-" \
    >"$STACK_DIR/$HISTORY_TAG.log" 2>&1 &
  HISTORY_PID=$!
}
# history_check NAME: stops the writer, then checks its history with Porcupine (linearizable,
# every acknowledged write read back at the end).
history_check() {
  rm -f "$STACK_DIR/$HISTORY_TAG.on"
  wait "$HISTORY_PID" 2>/dev/null || true
  HISTORY_PID=""
  wait "$TARGETS_PID" 2>/dev/null || true
  TARGETS_PID=""
  local summary acked verdict
  summary=$(cat "$STACK_DIR/$HISTORY_TAG.log")
  acked=$(sed -n 's/.*, \([0-9]*\) acknowledged puts.*/\1/p' "$STACK_DIR/$HISTORY_TAG.log")
  if [ "${acked:-0}" -gt 100 ]; then pass "$1: writer: $summary"; else fail "$1: writer" "too few acknowledged writes: $summary"; fi
  [ -x "$STACK_DIR/lincheck" ] || (cd tests/linearizability && go build -o "$STACK_DIR/lincheck" .)
  if verdict=$("$STACK_DIR/lincheck" <"$STACK_DIR/$HISTORY_TAG.json" 2>&1); then
    pass "$1: history linearizable, every acknowledged write read back: $verdict"
  else
    fail "$1: linearizability" "$verdict"
  fi
}
# ack_gaps TAG: the three longest intervals without an acknowledged put in the history (ms, with
# the time they began), for the report.
ack_gaps() {
  python3 - "$STACK_DIR/$1.json" <<'PY'
import json, sys
h = json.load(open(sys.argv[1]))
t = sorted(r["ret"] for r in h if r["op"] == "put" and not r["unknown"])
gaps = sorted(((b - a, a) for a, b in zip(t, t[1:])), reverse=True)[:3]
print(", ".join(f"{g / 1e6:.0f} ms at +{(a - t[0]) / 1e9:.1f} s" for g, a in gaps))
PY
}

# ---------------------------------------------------------------------------------------------
if want failover && [ -n "${leader:-}" ] && is_available orders; then
  section "failover: the leader pod is deleted"
  old_leader=$(jp replicatedcluster/orders '{.status.leader}')
  old_epoch=$(jp replicatedcluster/orders '{.status.epoch}')
  kv_put "$(pod_ip "$old_leader")" before-failover acknowledged || fail "PUT before-failover" "$(kv_error "$(pod_ip "$old_leader")" before-failover)"
  new_leader_elected() {
    local l e
    l=$(jp replicatedcluster/orders '{.status.leader}')
    e=$(jp replicatedcluster/orders '{.status.epoch}')
    # The re-created pod (same name, same volume) may win again: what must change is the epoch.
    [ -n "$l" ] && [ "${e:-0}" -gt "$old_epoch" ] && is_available orders
  }
  t0=$(stack_now)
  kubectl -n "$NS" delete pod "$old_leader" --wait=false >/dev/null
  if stack_wait "a leader in a higher epoch" 60 new_leader_elected; then
    new_leader=$(jp replicatedcluster/orders '{.status.leader}')
    pass "leader $new_leader in epoch $(jp replicatedcluster/orders '{.status.epoch}') (was $old_leader in $old_epoch), $(stack_since "$t0") s after the delete"
    nip=$(pod_ip "$new_leader")
    eventually "acknowledged write before-failover readable from the new leader" 15 kv_get_is "$nip" before-failover acknowledged
    if [ -n "${writes:-}" ]; then
      expect "last write of the restart section on the new leader" "$(kv_get "$nip" "restart-$writes")" "v$writes"
    fi
    eventually "PUT on the new leader" 15 kv_put "$nip" after-failover yes
    eventually "orders back to 3 ready nodes, Available, not Degraded" 120 healthy orders 3
    old_back() { kv_get_is "$(pod_ip "$old_leader")" after-failover yes consistency=stale; }
    eventually "re-created pod $old_leader has the write made after the failover" 60 old_back
    expect "status.lastFailover.reason after a pod delete" "$(jp replicatedcluster/orders '{.status.lastFailover.reason}')" gone
    leader=$new_leader
  else
    fail "failover" "no leader in a higher epoch within 60 s (leader '$(jp replicatedcluster/orders '{.status.leader}')', epoch '$(jp replicatedcluster/orders '{.status.epoch}')': $(cond_reason orders Available))"
  fi
elif want failover; then
  section "failover"
  fail "failover" "skipped: orders has no leader or is not Available"
fi

# ---------------------------------------------------------------------------------------------
# Faults that leave the leader's pod Running: the operator learns of them only from the nodes.
# fault_hang/fault_partition/fault_hang_and_restart_operator POD inject; fault_heal undoes.
fault_kill() { local pid; pid=$(stack_node_pid "$1") && kill -9 "$pid"; }
fault_hang() { FAULT_PID=$(stack_node_pid "$1") && kill -STOP "$FAULT_PID"; }
fault_partition() {
  # The pod's host-side veth (the process kubelet names the namespace <bridge>-<n> and the
  # veth <bridge>v<n>): down cuts the leader off from its peers and from the operator.
  local pid ns
  pid=$(stack_node_pid "$1") && ns=$(ip netns identify "$pid") && [ -n "$ns" ] || return 1
  FAULT_LINK="${ns%-*}v${ns##*-}"
  ip link set "$FAULT_LINK" down
}
fault_hang_and_restart_operator() {
  fault_hang "$1" || return 1
  kubectl -n "$STACK_OPERATOR_NS" delete pod -l app.kubernetes.io/name=rc-operator --wait=false >/dev/null
}
fault_heal() {
  [ -n "${FAULT_PID:-}" ] && kill -CONT "$FAULT_PID" 2>/dev/null
  [ -n "${FAULT_LINK:-}" ] && ip link set "$FAULT_LINK" up
  FAULT_PID= FAULT_LINK=
}
# leader_fault NAME INJECT [REASON]: write, inject the fault into the leader, expect a new leader in a
# higher epoch with the write, write again, heal, and expect the old leader back as a follower
# holding the new write.
leader_fault() {
  local fault=$1 inject=$2 want_reason=${3:-} old_leader old_epoch t0 new_leader new_epoch nip
  old_leader=$(jp replicatedcluster/orders '{.status.leader}')
  old_epoch=$(jp replicatedcluster/orders '{.status.epoch}')
  kv_put "$(pod_ip "$old_leader")" "before-$fault" acknowledged || { fail "PUT before-$fault" "$(kv_error "$(pod_ip "$old_leader")" "before-$fault")"; return; }
  new_leader_elected() {
    local l e
    l=$(jp replicatedcluster/orders '{.status.leader}')
    e=$(jp replicatedcluster/orders '{.status.epoch}')
    [ -n "$l" ] && [ "$l" != "$old_leader" ] && [ "${e:-0}" -gt "$old_epoch" ]
  }
  t0=$(stack_now)
  "$inject" "$old_leader" || { fail "$fault" "could not inject the fault into $old_leader"; fault_heal; return; }
  if stack_wait "a new leader after $fault of $old_leader" 90 new_leader_elected; then
    new_leader=$(jp replicatedcluster/orders '{.status.leader}')
    new_epoch=$(jp replicatedcluster/orders '{.status.epoch}')
    pass "$fault: leader $new_leader in epoch $new_epoch (was $old_leader), $(stack_since "$t0") s after the fault; lastFailover: $(jp replicatedcluster/orders '{.status.lastFailover}')"
    expect "$fault: status.lastFailover.to" "$(jp replicatedcluster/orders '{.status.lastFailover.to}')" "$new_leader"
    if [ -n "$want_reason" ]; then
      expect "$fault: status.lastFailover.reason" "$(jp replicatedcluster/orders '{.status.lastFailover.reason}')" "$want_reason"
      [ -n "$(jp replicatedcluster/orders '{.status.lastFailover.unavailableMs}')" ] && pass "$fault: status.lastFailover.unavailableMs recorded" || fail "$fault: status.lastFailover.unavailableMs" "missing"
    fi
    nip=$(pod_ip "$new_leader")
    eventually "$fault: acknowledged write before-$fault readable from the new leader" 15 kv_get_is "$nip" "before-$fault" acknowledged
    eventually "$fault: PUT on the new leader" 15 kv_put "$nip" "after-$fault" yes
    promoted_note() {
      kubectl -n "$NS" get events.events.k8s.io -o jsonpath='{range .items[?(@.reason=="LeaderPromoted")]}{.note}{"\n"}{end}' | grep -q "leads epoch $new_epoch"
    }
    eventually "$fault: a LeaderPromoted Event names epoch $new_epoch" 15 promoted_note
  else
    fail "$fault" "no new leader within 90 s (leader '$(jp replicatedcluster/orders '{.status.leader}')', epoch '$(jp replicatedcluster/orders '{.status.epoch}')': $(cond_reason orders Available))"
  fi
  fault_heal
  if [ -n "${new_leader:-}" ]; then
    old_follows() { kv_get_is "$(pod_ip "$old_leader")" "after-$fault" yes consistency=stale; }
    eventually "$fault: $old_leader healed rejoins as a follower with the write made meanwhile" 60 old_follows
    eventually "$fault: orders back to 3 ready nodes, Available, not Degraded" 120 healthy orders 3
    leader=$new_leader
  fi
}

if want failover && [ -n "${leader:-}" ] && is_available orders; then
  section "failover: the leader's process is killed (kill -9; its container restarts in place)"
  leader_fault kill fault_kill gone
  section "failover: the leader hangs (SIGSTOP) while its pod stays Running"
  leader_fault hang fault_hang unreachable
  section "failover: the leader's network link is down (partition)"
  leader_fault partition fault_partition unreachable
  section "failover: the leader hangs and the operator pod is deleted at once"
  # The old operator may finish the failover before it stops (the new one then records it without
  # the phases it did not see), so only the new leader is checked in the record.
  leader_fault operator-restart fault_hang_and_restart_operator
  eventually "operator pod Ready again" 120 kubectl -n "$STACK_OPERATOR_NS" wait --for=condition=Ready pod -l app.kubernetes.io/name=rc-operator --timeout=2s
fi

# ---------------------------------------------------------------------------------------------
export PATH="$STACK_TARGET:$PATH" # kubectl finds the plugin kubectl-rcl there
if want day2 && [ -n "${leader:-}" ] && is_available orders; then
  section "day2: switchover through the plugin and through the CR, bad requests refused"
  rcl() { kubectl rcl -n "$NS" "$@"; }
  if out=$(rcl status orders 2>&1) && grep -q "^Leader *$leader" <<<"$out"; then
    pass "kubectl rcl status orders names leader $leader"
  else
    fail "kubectl rcl status orders" "$out"
  fi
  expect "kubectl rcl status -o json: leader" "$(rcl status orders -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"]["leader"])')" "$leader"
  HISTORY_TAG=switchover history_start orders
  sleep 2
  old_epoch=$(jp replicatedcluster/orders '{.status.epoch}')
  target=$(printf '%s\n' orders-0 orders-1 orders-2 | grep -vx "$leader" | sed -n 1p)
  if out=$(rcl switchover orders "$target" 2>&1); then
    pass "kubectl rcl switchover orders $target: $out"
  else
    fail "kubectl rcl switchover orders $target" "$out"
  fi
  expect "leader after the plugin's switchover" "$(jp replicatedcluster/orders '{.status.leader}')" "$target"
  expect "lastFailover.reason" "$(jp replicatedcluster/orders '{.status.lastFailover.reason}')" switchover
  pass "switchover to $target: lastFailover $(jp replicatedcluster/orders '{.status.lastFailover}')"
  sleep 2
  # Through the CR: an annotation, as any tool can set it.
  target2=$(printf '%s\n' orders-0 orders-1 orders-2 | grep -vx "$target" | sed -n 1p)
  kubectl -n "$NS" annotate rcl orders "replicated.dev/switchover=$target2" >/dev/null
  eventually "annotation switchover to $target2: leader $target2" 30 \
    bash -c "[ \"\$(kubectl -n $NS get rcl orders -o jsonpath='{.status.leader}')\" = $target2 ]"
  eventually "the switchover annotation is removed once done" 15 \
    bash -c "[ -z \"\$(kubectl -n $NS get rcl orders -o jsonpath='{.metadata.annotations.replicated\.dev/switchover}')\" ]"
  expect "condition Switchover" "$(cond orders Switchover)" True
  sleep 2
  HISTORY_TAG=switchover history_check "switchovers"
  pass "switchovers: longest intervals without an acknowledged write: $(HISTORY_TAG=switchover ack_gaps switchover)"
  leader=$target2
  epoch_now=$(jp replicatedcluster/orders '{.status.epoch}')
  # Bad requests: nothing changes.
  if out=$(rcl switchover orders orders-9 2>&1); then
    fail "plugin switchover to a pod that does not exist" "succeeded: $out"
  else
    case "$out" in *"not a member"*) pass "plugin refuses orders-9: $out" ;; *) fail "plugin switchover to orders-9" "$out" ;; esac
  fi
  kubectl -n "$NS" annotate rcl orders replicated.dev/switchover=orders-9 >/dev/null
  eventually "a switchover annotation naming orders-9 is refused (condition Switchover False)" 15 \
    bash -c "[ \"\$(kubectl -n $NS get rcl orders -o jsonpath='{.status.conditions[?(@.type==\"Switchover\")].reason}')\" = SwitchoverRefused ]"
  refused_event() {
    kubectl -n "$NS" get events.events.k8s.io -o jsonpath='{range .items[?(@.reason=="SwitchoverRefused")]}{.note}{"\n"}{end}' | grep -q "orders-9 is not a member"
  }
  eventually "a SwitchoverRefused Warning Event names orders-9" 15 refused_event
  expect "leader and epoch unchanged by refused requests" "$(jp replicatedcluster/orders '{.status.leader}/{.status.epoch}')" "$leader/$epoch_now"

  section "day2: a paused rollout refuses a scale; nothing changes"
  kubectl -n "$NS" patch rcl orders --type=merge -p '{"spec":{"paused":true,"replicas":4}}' >/dev/null
  eventually "paused + scale: Degraded InvalidSpec naming spec.paused" 30 \
    bash -c "kubectl -n $NS get rcl orders -o jsonpath='{.status.conditions[?(@.type==\"Degraded\")].message}' | grep -q 'while spec.paused is true'"
  expect "StatefulSet replicas while paused" "$(jp statefulset/orders '{.spec.replicas}')" 3
  kubectl -n "$NS" patch rcl orders --type=merge -p '{"spec":{"paused":false,"replicas":3}}' >/dev/null
  eventually "orders healthy again after the refused scale" 60 healthy orders 3

  section "day2: spec.image changed with a live writer: followers first, switchover, the leader last"
  old_rev=$(jp statefulset/orders '{.status.updateRevision}')
  first_leader=$(jp replicatedcluster/orders '{.status.leader}')
  HISTORY_TAG=rollout history_start orders
  sleep 2
  t0=$(stack_now)
  kubectl -n "$NS" patch rcl orders --type=merge -p '{"spec":{"image":"ghcr.io/replicated-dev/rc-node:0.1.1"}}' >/dev/null
  if stack_wait "every pod at the new revision" 400 rolled_out orders 3 "$old_rev"; then
    pass "rollout done in $(stack_since "$t0") s: 3 of 3 pods at revision $(jp statefulset/orders '{.status.updateRevision}'), Ready True"
  else
    fail "rollout" "$(jp replicatedcluster/orders '{.status.updatedReplicas}') updated; Progressing: $(cond_reason orders Progressing)"
  fi
  sleep 2
  HISTORY_TAG=rollout history_check "rollout"
  pass "rollout: longest intervals without an acknowledged write: $(HISTORY_TAG=rollout ack_gaps rollout)"
  order=$(kubectl -n "$NS" get events.events.k8s.io --sort-by=.metadata.creationTimestamp \
    -o jsonpath='{range .items[?(@.reason=="RollingOut")]}{.note}{"\n"}{end}' | sed -n 's/.*: evicted \(orders-[0-9]*\)$/\1/p' | tail -n 3 | xargs)
  expect "restart order ends with the first leader" "${order##* }" "$first_leader"
  case "$(jp replicatedcluster/orders '{.status.lastFailover.reason}/{.status.lastFailover.from}')" in
    "switchover/$first_leader") pass "the leader handed over before its restart: lastFailover $(jp replicatedcluster/orders '{.status.lastFailover}')" ;;
    *) fail "rollout switchover" "lastFailover $(jp replicatedcluster/orders '{.status.lastFailover}')" ;;
  esac
  pass "rollout restart order: $order"
  leader=$(jp replicatedcluster/orders '{.status.leader}')

  section "day2: kubectl logs of a node pod (through the API server to the process kubelet)"
  follower=$(printf '%s\n' orders-0 orders-1 orders-2 | grep -vx "$leader" | sed -n 1p)
  if out=$(kubectl -n "$NS" logs "$follower" --tail=5 2>&1) && [ -n "$out" ]; then
    pass "kubectl logs $follower --tail=5 prints its log"
  else
    fail "kubectl logs $follower" "$out"
  fi
  # Restarts the follower's container once (for --previous).
  if check_kubectl_logs "$NS" "$follower" && check_kubelet_api "$NS" "$follower"; then
    pass "kubectl logs of $follower: --tail, --limit-bytes, --timestamps, -f, --previous, unknown container; kubelet API TLS and client-cert authn"
  else
    fail "kubectl logs of $follower" "see the kubectl-logs lines above"
  fi
  eventually "orders healthy after $follower's restart" 120 healthy orders 3

  section "day2: fence the leader (maintenance), then a rolling restart through the plugin"
  fenced=$(jp replicatedcluster/orders '{.status.leader}')
  rcl fence "$fenced" >/dev/null
  moved_off() { l=$(jp replicatedcluster/orders '{.status.leader}'); [ -n "$l" ] && [ "$l" != "$fenced" ]; }
  eventually "fenced leader $fenced is switched away from" 30 moved_off
  rcl unfence "$fenced" >/dev/null
  expect "fence annotation removed by unfence" "$(jp "pod/$fenced" '{.metadata.annotations.replicated\.dev/fenced}')" ""
  old_rev=$(jp statefulset/orders '{.status.updateRevision}')
  rcl restart orders >/dev/null
  # The operator is replaced in the middle: the rollout resumes from the pods' revisions.
  one_updated() { [ "$(jp replicatedcluster/orders '{.status.updatedReplicas}')" -ge 1 ] 2>/dev/null && [ "$(jp replicatedcluster/orders '{.status.updateRevision}')" != "$old_rev" ]; }
  if stack_wait "first pod of the rolling restart updated" 120 one_updated; then
    kubectl -n "$STACK_OPERATOR_NS" delete pod -l app.kubernetes.io/name=rc-operator --wait=false >/dev/null
    pass "operator pod deleted during the rolling restart ($(jp replicatedcluster/orders '{.status.updatedReplicas}') of 3 updated)"
  fi
  if stack_wait "rolling restart done" 300 rolled_out orders 3 "$old_rev"; then
    pass "kubectl rcl restart: 3 of 3 pods at revision $(jp statefulset/orders '{.status.updateRevision}') (was $old_rev), Ready True, across an operator restart"
  else
    fail "kubectl rcl restart" "$(jp replicatedcluster/orders '{.status.updatedReplicas}') updated; Progressing: $(cond_reason orders Progressing)"
  fi
  eventually "operator pod Ready again" 120 kubectl -n "$STACK_OPERATOR_NS" wait --for=condition=Ready pod -l app.kubernetes.io/name=rc-operator --timeout=2s
  leader=$(jp replicatedcluster/orders '{.status.leader}')
fi

# kill_leader: kill -9 the rc-node process of the leader orders reports now.
kill_leader() {
  local l pid
  l=$(jp replicatedcluster/orders '{.status.leader}')
  pid=$(stack_node_pid "$l") || { fail "kill -9 of the leader" "no rc-node process for '$l'"; return; }
  kill -9 "$pid"
  pass "kill -9 of leader $l (pid $pid) in epoch $(jp replicatedcluster/orders '{.status.epoch}')"
}
voters() { jp replicatedcluster/orders '{.status.voters[*]}'; }
# settled N VOTERS: N pods ready, Available, not Degraded, not Progressing, these voters.
settled() {
  healthy orders "$1" && [ "$(voters)" = "$2" ] && [ "$(cond orders Progressing)" = False ] &&
    [ "$(jp replicatedcluster/orders '{.status.replicas}')" = "$1" ]
}
# scale_to N VOTERS: scale, and wait (bounded) until settled.
scale_to() {
  local t0 before
  t0=$(stack_now)
  # Taken before scaling: the operator may finish a voter change before the wait below starts.
  before=$(voters)
  kubectl -n "$NS" scale replicatedcluster orders --replicas="$1" >/dev/null
  if [ -n "${3:-}" ]; then
    # The fault in the middle of the step: once the first voter change is made.
    stack_wait "orders voters change ($3)" 120 bash -c "[ \"\$(kubectl -n $NS get rcl orders -o jsonpath='{.status.voters[*]}')\" != '$before' ]" || true
    kill_leader
  fi
  if stack_wait "orders settled at $1" 240 settled "$1" "$2"; then
    pass "orders scaled to $1 in $(stack_since "$t0") s: voters $2, leader $(jp replicatedcluster/orders '{.status.leader}') in epoch $(jp replicatedcluster/orders '{.status.epoch}')"
  else
    fail "scale orders to $1" "voters '$(voters)', $(jp replicatedcluster/orders '{.status.readyReplicas}') ready, phase $(jp replicatedcluster/orders '{.status.phase}'); Progressing: $(cond_reason orders Progressing); Available: $(cond_reason orders Available)"
  fi
}

if want membership && [ -n "${leader:-}" ] && is_available orders; then
  section "membership: orders 3 -> 5 -> 3 and 3 -> 1 -> 3 with faults, a live writer checked by Porcupine"
  expect "status.voters before scaling" "$(voters)" "orders-0 orders-1 orders-2"
  HISTORY_TAG=history history_start orders

  scale_to 5 "orders-0 orders-1 orders-2 orders-3 orders-4" "3 -> 5"
  scale_to 3 "orders-0 orders-1 orders-2" "5 -> 3"
  expect "pods after 5 -> 3" "$(kubectl -n "$NS" get pods -l replicated.dev/cluster=orders -o name | sed 's|pod/||' | sort | xargs)" "orders-0 orders-1 orders-2"
  scale_to 1 "orders-0"
  scale_to 3 "orders-0 orders-1 orders-2"

  # A member's volume is replaced (PVC deleted with its pod) while another member is down.
  l=$(jp replicatedcluster/orders '{.status.leader}')
  replaced=$(printf '%s\n' orders-0 orders-1 orders-2 | grep -vx "$l" | sed -n 1p)
  down=$(printf '%s\n' orders-0 orders-1 orders-2 | grep -vx "$l" | sed -n 2p)
  t0=$(stack_now)
  old_uid=$(jp "pod/$replaced" '{.metadata.uid}')
  kubectl -n "$NS" delete pvc "data-$replaced" --wait=false >/dev/null
  kubectl -n "$NS" delete pod "$replaced" "$down" --wait=false >/dev/null
  pass "deleted PVC data-$replaced with pod $replaced, and pod $down, at once"
  # Settled only counts once the replacement pod exists: before that, status still shows the
  # old members and would pass at once.
  stack_wait "a new pod $replaced" 120 bash -c "uid=\$(kubectl -n $NS get pod $replaced -o jsonpath='{.metadata.uid}' 2>/dev/null); [ -n \"\$uid\" ] && [ \"\$uid\" != '$old_uid' ]" ||
    fail "a new pod $replaced" "still pod uid $old_uid after 120 s"
  replaced_votes() {
    [ "$(jp replicatedcluster/orders "{.status.members[?(@.name==\"$replaced\")].voter}")" = true ]
  }
  settled_with_replaced() { settled 3 "orders-0 orders-1 orders-2" && replaced_votes; }
  if stack_wait "orders settled after the replaced volume" 240 settled_with_replaced; then
    pass "orders back to 3 voters after the replaced volume in $(stack_since "$t0") s, $replaced a voter in its new incarnation"
  else
    fail "replaced volume" "voters '$(voters)'; $replaced voter: '$(jp replicatedcluster/orders "{.status.members[?(@.name==\"$replaced\")].voter}")'; Progressing: $(cond_reason orders Progressing); Available: $(cond_reason orders Available)"
  fi
  # (Events of one reason are aggregated by the recorder; one object is enough here.)
  voter_event=$(kubectl -n "$NS" get events --field-selector reason=VotersChanged \
    -o jsonpath='{.items[-1:].message}' 2>/dev/null)
  case "$voter_event" in
    "voters are now "*) pass "VotersChanged Event: $voter_event" ;;
    *) fail "VotersChanged Event" "'$voter_event'" ;;
  esac

  HISTORY_TAG=history history_check membership
elif want membership; then
  section "membership"
  fail "membership" "skipped: orders has no leader or is not Available"
fi

# ---------------------------------------------------------------------------------------------
if want sessions; then
  section "sessions: a Leaderless cluster"
  kubectl -n "$NS" apply -f - >/dev/null <<'EOF'
apiVersion: replicated.dev/v1alpha1
kind: ReplicatedCluster
metadata:
  name: sessions
spec:
  mode: Leaderless
  replicas: 3
  image: ghcr.io/replicated-dev/rc-node:0.1.0
  storage:
    size: 64Mi
  leaderless:
    replicationFactor: 3
    writeQuorum: 2
    readQuorum: 2
EOF
  if wait_ready sessions 3 120; then
    for obj in statefulset/sessions configmap/sessions-config service/sessions-peers service/sessions \
      poddisruptionbudget/sessions secret/sessions-admin; do
      check_owned "$obj" sessions
    done
    expect "status.readyReplicas" "$(jp replicatedcluster/sessions '{.status.readyReplicas}')" 3
    expect "status.leader (none in Leaderless mode)" "$(jp replicatedcluster/sessions '{.status.leader}')" ""
    check_printer_columns sessions Leaderless 3 3 Running
    ip0=$(pod_ip sessions-0)
    ip2=$(pod_ip sessions-2)
    if stack_wait "PUT through sessions-0" 20 kv_put "$ip0" e2e-cart apples; then
      pass "PUT e2e-cart through sessions-0"
      eventually "GET e2e-cart through sessions-2 (another coordinator)" 10 kv_get_is "$ip2" e2e-cart apples
    else
      fail "PUT e2e-cart through sessions-0 within 20 s of Available" "$(kv_error "$ip0" e2e-cart)"
    fi
    kubectl -n "$NS" scale replicatedcluster sessions --replicas=4 >/dev/null
    sessions_scaled() {
      [ "$(jp replicatedcluster/sessions '{.status.readyReplicas}/{.status.phase}/{.status.conditions[?(@.type=="Degraded")].status}')" = 4/Running/False ]
    }
    t0=$(stack_now)
    if stack_wait "sessions scaled to 4" 120 sessions_scaled; then
      pass "sessions scaled to 4 ready nodes, Running, not Degraded, in $(stack_since "$t0") s"
      eventually "e2e-cart readable through the new node sessions-3" 30 kv_get_is "$(pod_ip sessions-3)" e2e-cart apples
    else
      fail "scale sessions to 4" "status $(jp replicatedcluster/sessions '{.status.readyReplicas} ready, phase {.status.phase}'); $(cond_reason sessions Degraded)"
    fi
    if out=$(kubectl rcl -n "$NS" switchover sessions 2>&1); then
      fail "plugin switchover of a Leaderless cluster" "succeeded: $out"
    else
      case "$out" in *"Leaderless cluster"*) pass "plugin refuses a Leaderless switchover: $out" ;; *) fail "plugin switchover of sessions" "$out" ;; esac
    fi
  fi
  if want day2 && healthy sessions 4; then
    section "day2: rolling update of a 5-member Leaderless cluster with a live writer"
    kubectl -n "$NS" scale replicatedcluster sessions --replicas=5 >/dev/null
    if stack_wait "sessions scaled to 5" 180 bash -c "[ \"\$(kubectl -n $NS get rcl sessions -o jsonpath='{.status.readyReplicas}/{.status.phase}')\" = 5/Running ]"; then
      pass "sessions at 5 members"
      touch "$STACK_DIR/lw.on"
      : >"$STACK_DIR/lw.acked"
      (
        i=0
        while [ -f "$STACK_DIR/lw.on" ] && [ "$i" -lt 100000 ]; do
          [ $((i % 20)) = 0 ] && mapfile -t ips < <(kubectl -n "$NS" get pods -l replicated.dev/cluster=sessions -o jsonpath='{range .items[*]}{.status.podIP}{"\n"}{end}' 2>/dev/null | grep .)
          i=$((i + 1))
          [ "${#ips[@]}" -gt 0 ] || { sleep 0.2; continue; }
          ip=${ips[$((i % ${#ips[@]}))]}
          if ncurl "$ip" "/v1/kv/lw-$i" -fsS --max-time 2 -X PUT -H 'content-type: application/json' \
            -d "{\"value\":\"v$i\"}" >/dev/null 2>&1; then
            echo "lw-$i v$i" >>"$STACK_DIR/lw.acked"
          fi
        done
      ) &
      WRITER_PID=$!
      sleep 2
      old_rev=$(jp statefulset/sessions '{.status.updateRevision}')
      t0=$(stack_now)
      kubectl -n "$NS" patch rcl sessions --type=merge -p '{"spec":{"image":"ghcr.io/replicated-dev/rc-node:0.1.1"}}' >/dev/null
      if stack_wait "every sessions pod at the new revision" 600 rolled_out sessions 5 "$old_rev"; then
        pass "Leaderless rollout done in $(stack_since "$t0") s: 5 of 5 at the new revision, Ready True"
      else
        fail "Leaderless rollout" "$(jp replicatedcluster/sessions '{.status.updatedReplicas}') updated; Progressing: $(cond_reason sessions Progressing)"
      fi
      rm -f "$STACK_DIR/lw.on"
      wait "$WRITER_PID" 2>/dev/null || true
      WRITER_PID=""
      acked=$(wc -l <"$STACK_DIR/lw.acked")
      missing=0
      ip0=$(pod_ip sessions-0)
      while read -r key value; do
        [ "$(kv_get "$ip0" "$key")" = "$value" ] || missing=$((missing + 1))
      done <"$STACK_DIR/lw.acked"
      if [ "$acked" -gt 50 ] && [ "$missing" = 0 ]; then
        pass "Leaderless rollout: all $acked acknowledged writes read back (quorum reads)"
      else
        fail "Leaderless rollout writes" "$missing of $acked acknowledged writes not read back"
      fi
    else
      fail "scale sessions to 5" "$(cond_reason sessions Progressing)"
    fi
  fi
fi

# ---------------------------------------------------------------------------------------------
if want cascade; then
  section "cascade: deleting the clusters removes what they own"
  clusters=$(kubectl -n "$NS" get replicatedclusters -o name)
  if [ -n "$clusters" ]; then
    # shellcheck disable=SC2086
    kubectl -n "$NS" delete $clusters --wait=true --timeout=60s >/dev/null
    for kind in statefulsets services configmaps poddisruptionbudgets pods; do
      eventually "no $kind left with label app.kubernetes.io/name=rc-node" 90 \
        bash -c "[ -z \"\$(kubectl -n $NS get $kind -l app.kubernetes.io/name=rc-node -o name)\" ]"
    done
    eventually "managed admin Secrets deleted" 60 \
      bash -c "! kubectl -n $NS get secrets -o name | grep -q -- '-admin\$'"
    left=$(kubectl -n "$NS" get pvc -o name | wc -l)
    if [ "$left" -gt 0 ]; then
      pass "PVCs retained after deletion ($left; persistentVolumeClaimRetentionPolicy Retain)"
    else
      fail "PVC retention" "no PVCs left; the StatefulSet asks to retain them"
    fi
    kubectl -n "$NS" delete pvc --all --wait=false >/dev/null
  else
    fail "cascade" "no clusters to delete"
  fi
fi
