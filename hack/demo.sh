#!/usr/bin/env bash
# `make demo`: the operator on a real local Kubernetes control plane, end to end.
#
# Builds what is missing, starts etcd + kube-apiserver + kube-controller-manager + kube-scheduler
# (hack/kube/cluster.sh) and the process kubelet, installs the operator with Helm from charts/
# (it runs as a pod with in-cluster config and the chart's RBAC), applies manifests/examples/,
# waits for both clusters to become Available, writes and reads a few keys, and then keeps
# everything running until Ctrl-C, which stops it all and removes its network namespaces.
#
# Environment: STACK_DIR (default /tmp/rc-demo), DEMO_READY_TIMEOUT (s, default 240),
# DEMO_HOLD=0 to stop right after the tour (for scripted runs), STACK_KEEP=1 to keep logs.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=hack/lib/stack.sh
. hack/lib/stack.sh

stack_init demo rcdemo 10.241.10.0/24
READY_TIMEOUT=${DEMO_READY_TIMEOUT:-240}
t_demo=$(stack_now)

cleanup() {
  local rc=$?
  # Stop everything even if stdout is gone (Ctrl-C also kills a `| tee`): a write error or
  # SIGPIPE here must not abort the clean-up half-way.
  set +e
  trap '' PIPE
  trap - EXIT INT TERM
  [ -n "${SLEEP_PID:-}" ] && kill "$SLEEP_PID" 2>/dev/null
  echo
  stack_log "stopping the demo"
  stack_down
  stack_log "stopped; nothing left running"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

stack_build
stack_up
stack_install_operator

stack_log "kubectl apply -f manifests/examples/"
kubectl apply -f manifests/examples/ | sed 's/^/  /'
t_apply=$(stack_now)

# Ready: Available (a quorum serves; a leader in SingleLeader mode) and not Degraded.
conditions() {
  kubectl get replicatedcluster "$1" -o jsonpath='{.status.conditions[?(@.type=="Available")].status}/{.status.conditions[?(@.type=="Degraded")].status}'
}
cluster_ready() { [ "$(conditions "$1")" = True/False ]; }
not_ready=()
for rc in orders sessions; do
  waited=$(awk -v a="$t_apply" -v b="$(stack_now)" 'BEGIN { printf "%d", b - a }')
  if stack_wait "$rc Ready" $((READY_TIMEOUT > waited ? READY_TIMEOUT - waited : 1)) cluster_ready "$rc"; then
    stack_log "$rc is Ready (Available, not Degraded) after $(stack_since "$t_apply") s"
  else
    not_ready+=("$rc")
    stack_log "WARNING: $rc is not Ready after ${READY_TIMEOUT} s:"
    kubectl get replicatedcluster "$rc" \
      -o jsonpath='{range .status.conditions[*]}    {.type}={.status} ({.reason}): {.message}{"\n"}{end}'
  fi
done
if ((${#not_ready[@]} == 0)); then
  stack_log "both example clusters Ready $(stack_since "$t_apply") s after kubectl apply ($(stack_since "$t_demo") s since make demo started)"
fi

echo
stack_log "kubectl get replicatedclusters"
kubectl get replicatedclusters | sed 's/^/  /'
echo
kubectl get pods -o wide | sed 's/^/  /'

# Nodes serve TLS only; clients verify them with the cluster's CA, published in ConfigMap
# <cluster>-ca. Node certificates name localhost (not pod IPs): curl dials the IP for that name.
ca_file() {
  kubectl get configmap "$1-ca" -o jsonpath='{.data.ca\.crt}' >"$STACK_DIR/$1-ca.crt" && echo "$STACK_DIR/$1-ca.crt"
}

# kv CLUSTER METHOD IP KEY [VALUE|QUERY]: the node's client API by pod IP, over TLS; retried
# for up to 10 s (a follower's stale read may lag a moment); prints the answer, or the last
# error body.
kv() {
  local cluster=$1 i out ca url="https://localhost:7400/v1/kv/$4"
  shift
  ca=$(ca_file "$cluster")
  local tls=(--cacert "$ca" --connect-to "localhost:7400:$2:7400")
  for ((i = 0; i < 10; i++)); do
    if [ "$1" = PUT ]; then
      out=$(curl -sS "${tls[@]}" --max-time 5 -X PUT -H 'content-type: application/json' -d "{\"value\":\"$4\"}" \
        -w '\n%{http_code}' "$url" 2>&1)
    else
      out=$(curl -sS "${tls[@]}" --max-time 5 -w '\n%{http_code}' "$url${4:+?$4}" 2>&1)
    fi
    case "${out##*$'\n'}" in 2??) echo "${out%$'\n'*}"; return 0 ;; esac
    sleep 1
  done
  echo "FAILED (HTTP ${out##*$'\n'}): ${out%$'\n'*}"
  return 1
}

echo
leader=$(kubectl get replicatedcluster orders -o jsonpath='{.status.leader}')
if [ -n "$leader" ]; then
  ip=$(stack_pod_ip default "$leader")
  stack_log "orders (SingleLeader): writing through the leader $leader at $ip"
  for i in 1 2 3; do
    echo "  PUT greeting-$i -> $(kv orders PUT "$ip" "greeting-$i" "hello $i")"
  done
  echo "  GET greeting-2 <- $(kv orders GET "$ip" greeting-2)"
  follower=$(kubectl get pods -l replicated.dev/cluster=orders -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}' | grep -vx "$leader" | sed -n 1p)
  fip=$(stack_pod_ip default "$follower")
  echo "  GET greeting-3 from follower $follower ($fip), stale read <- $(kv orders GET "$fip" greeting-3 consistency=stale)"
else
  stack_log "orders (SingleLeader): no leader yet (status.leader empty), skipping its keys"
fi
ip=$(stack_pod_ip default sessions-0)
if kubectl get replicatedcluster sessions -o jsonpath='{.status.conditions[?(@.type=="Available")].status}' | grep -qx True; then
  stack_log "sessions (Leaderless): any node coordinates; writing through sessions-0 at $ip"
  echo "  PUT cart-42 -> $(kv sessions PUT "$ip" cart-42 "3 apples")"
  ip2=$(stack_pod_ip default sessions-3)
  echo "  GET cart-42 via sessions-3 ($ip2) <- $(kv sessions GET "$ip2" cart-42)"
else
  stack_log "sessions (Leaderless): not Available, skipping its keys"
fi

cat <<EOF

==> The demo is running ($(stack_since "$t_demo") s). In another shell:

  export KUBECONFIG=$KUBECONFIG PATH=$KUBE_BIN:\$PATH
  kubectl get replicatedclusters                 # printer columns: mode, ready, leader, epoch, phase
  kubectl describe replicatedcluster orders      # conditions and events
  kubectl get pods,svc,pvc -o wide               # pods have their own IPs in $STACK_SUBNET
  kubectl get configmap orders-ca -o jsonpath='{.data.ca\\.crt}' > /tmp/orders-ca.crt   # the cluster CA
  curl -s --cacert /tmp/orders-ca.crt --connect-to localhost:7400:\$(kubectl get pod orders-0 -o jsonpath='{.status.podIP}'):7400 https://localhost:7400/v1/kv/greeting-1
  kubectl delete pod \$(kubectl get rcl orders -o jsonpath='{.status.leader}')   # kill the leader
  kubectl scale replicatedcluster sessions --replicas=6
  kubectl logs orders-0                          # a node's log: -f follows, --previous is the run before a restart
  kubectl -n $STACK_OPERATOR_NS logs deploy/rc-operator   # the operator's log

  Logs of the process kubelet and the control plane: $STACK_DIR/logs/
  (kubectl exec/port-forward are not available: the process kubelet's API serves container logs only.)

Press Ctrl-C to stop everything.
EOF

if [ "${DEMO_HOLD:-1}" = 0 ]; then
  exit $((${#not_ready[@]} > 0 ? 1 : 0))
fi
while :; do
  sleep 3600 &
  SLEEP_PID=$!
  wait "$SLEEP_PID" || true
done
