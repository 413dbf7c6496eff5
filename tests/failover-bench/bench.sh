#!/usr/bin/env bash
# `make failover-bench`: how long a client cannot write when the leader fails, measured through
# Kubernetes, and the same client against a 3-member etcd on the same machine. A benchmark that
# prints figures, not a test: it asserts nothing about timings.
#
# On the local control plane (hack/lib/stack.sh: real apiserver, process kubelet, the operator
# installed by Helm), a 3-node SingleLeader cluster with leaderLossTimeoutMs=$LOSS_MS and
# minFailoverIntervalSeconds=0 (repetitions follow each other quickly) gets each fault REPS
# times while tests/failover-bench/writer.py writes continuously, following the leader:
#   kill    kill -9 of the leader's rc-node process (its container restarts in place)
#   hang    SIGSTOP of the leader for HANG_S seconds (its pod stays Running), then SIGCONT
#   partition  the leader pod's link down for HANG_S seconds (FAULTS="... partition")
#   delete  kubectl delete pod of the leader (graceful: a planned hand-over)
#   switchover  a requested switchover (annotation replicated.dev/switchover=any; FAULTS="... switchover")
# Unavailability of one fault = first acknowledged write after the fault - last one before it.
# Then etcd 3.6 (the control plane's own build), 3 members on loopback with
# --election-timeout=$LOSS_MS --heartbeat-interval=100, gets kill and hang the same way.
#
#   REPS=10 LOSS_MS=1000 FAULTS="kill hang delete" ETCD=1 WRITER_TIMEOUT_S=0.25 tests/failover-bench/bench.sh
# The writer's per-request timeout bounds what one dead or hung node costs the client, for both
# systems alike; it quantizes the figures (a hung leader costs it whole timeouts).
# Needs root (like the e2e suite). State: /tmp/rc-fbench (STACK_KEEP=1 keeps it).
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=hack/lib/stack.sh
. hack/lib/stack.sh

REPS=${REPS:-10}
LOSS_MS=${LOSS_MS:-1000}
FAULTS=${FAULTS:-kill hang delete}
HANG_S=${HANG_S:-4}
ETCD=${ETCD:-1}
NS=fbench
stack_init fbench rcfb 10.241.30.0/24
OUT=$STACK_DIR/results
WRITER_PID=
TARGETS_PID=
ETCD_PIDS=()

finish() {
  set +e
  trap - EXIT INT TERM
  [ -n "$WRITER_PID" ] && kill "$WRITER_PID" 2>/dev/null
  [ -n "$TARGETS_PID" ] && kill "$TARGETS_PID" 2>/dev/null
  local p
  for p in "${ETCD_PIDS[@]}"; do kill -CONT "$p" 2>/dev/null; kill -9 "$p" 2>/dev/null; done
  [ -f "$OUT/table.txt" ] && cp "$OUT/table.txt" /tmp/rc-fbench-table.txt
  stack_down
  [ -f /tmp/rc-fbench-table.txt ] && { echo; cat /tmp/rc-fbench-table.txt; }
}
trap finish EXIT
trap 'exit 130' INT TERM

jp() { kubectl -n "$NS" get "$1" -o jsonpath="$2" 2>/dev/null; }
healthy() {
  [ "$(jp replicatedcluster/orders '{.status.readyReplicas}/{.status.conditions[?(@.type=="Available")].status}/{.status.conditions[?(@.type=="Degraded")].status}')" = "3/True/False" ]
}
# gap ACKS T: the longest time without an acknowledged write around the fault injected at T:
# the largest interval between consecutive acknowledgements that ends after T and starts
# before T + 30 s (a write in flight at T may still be acknowledged just after it).
gap() {
  awk -v t="$2" 'NR > 1 && $1 > t && prev < t + 30 { g = $1 - prev; if (g > max) max = g } { prev = $1 }
    END { if (max > 0) print max }' "$1"
}
# summary NAME FILE: p50, p99 and max of the gaps in FILE (one per line, seconds), in ms.
summary() {
  sort -g "$2" | awk -v name="$1" '{ v[NR] = $1 * 1000 } END {
    if (NR == 0) { printf "| %s | no samples | | | |\n", name; exit }
    p50 = v[int((NR - 1) * 0.50) + 1]; p99 = v[int((NR - 1) * 0.99) + 1]
    printf "| %s | %d | %.0f | %.0f | %.0f |\n", name, NR, p50, p99, v[NR] }'
}

stack_build
stack_up
stack_install_operator
mkdir -p "$OUT"
kubectl create namespace "$NS" >/dev/null
kubectl -n "$NS" apply -f - >/dev/null <<EOF
apiVersion: replicated.dev/v1alpha1
kind: ReplicatedCluster
metadata:
  name: orders
spec:
  mode: SingleLeader
  replicas: 3
  image: ghcr.io/replicated-dev/rc-node:0.1.0
  storage: { size: 64Mi }
  singleLeader: { replication: Quorum, leaderLossTimeoutMs: $LOSS_MS, minFailoverIntervalSeconds: 0 }
  # Plain text, like the etcd it is compared with: the bench measures failover, not TLS.
  tls: { enabled: false }
EOF
stack_wait "orders Ready" 180 healthy || stack_die "orders never became healthy"

# The writer's targets: every pod IP, refreshed as pods come and go.
(while true; do
  kubectl -n "$NS" get pods -l replicated.dev/cluster=orders \
    -o jsonpath='{range .items[*]}{.metadata.name} {.status.podIP}{"\n"}{end}' 2>/dev/null |
    sed -n 's/^\([^ ]\+\) \([0-9.]\+\)$/\1 \2:7400/p' >"$OUT/targets.tmp" && mv "$OUT/targets.tmp" "$OUT/targets"
  sleep 0.5
done) &
TARGETS_PID=$!
sleep 1
python3 tests/failover-bench/writer.py rc "$OUT/targets" "$OUT/acks-rc" &
WRITER_PID=$!

for fault in $FAULTS; do
  : >"$OUT/gaps-$fault"
  for rep in $(seq 1 "$REPS"); do
    stack_wait "orders healthy before $fault #$rep" 180 healthy || stack_die "orders did not recover"
    sleep 2
    leader=$(jp replicatedcluster/orders '{.status.leader}')
    epoch=$(jp replicatedcluster/orders '{.status.epoch}')
    pid=$(stack_node_pid "$leader") || stack_die "no rc-node process for $leader"
    t=$(date +%s.%N)
    case $fault in
      kill) kill -9 "$pid" ;;
      hang) kill -STOP "$pid" ;;
      partition)
        # The pod's host-side veth (namespace <bridge>-<n>, veth <bridge>v<n>) goes down.
        ns=$(ip netns identify "$pid")
        link="${ns%-*}v${ns##*-}"
        ip link set "$link" down
        ;;
      delete) kubectl -n "$NS" delete pod "$leader" --wait=false >/dev/null ;;
      switchover) kubectl -n "$NS" annotate rcl orders replicated.dev/switchover=any --overwrite >/dev/null ;;
    esac
    new_epoch() { [ "$(jp replicatedcluster/orders '{.status.epoch}')" -gt "$epoch" ]; }
    stack_wait "a new epoch after $fault #$rep" 60 new_epoch || stack_log "no new epoch after $fault #$rep"
    [ "$fault" = hang ] && { sleep "$HANG_S"; kill -CONT "$pid"; }
    [ "$fault" = partition ] && { sleep "$HANG_S"; ip link set "$link" up; }
    sleep 1
    g=$(gap "$OUT/acks-rc" "$t")
    [ -n "$g" ] && echo "$g" >>"$OUT/gaps-$fault"
    stack_log "$fault #$rep: leader $leader (epoch $epoch): writes stopped for ${g:-?} s; lastFailover $(jp replicatedcluster/orders '{.status.lastFailover}')"
  done
done
kill "$WRITER_PID" "$TARGETS_PID" 2>/dev/null || true
WRITER_PID= TARGETS_PID=

if [ "$ETCD" = 1 ]; then
  etcd_bin=$KUBE_BIN/etcd
  cluster=""
  for i in 0 1 2; do cluster+="e$i=http://127.0.0.1:$((23800 + i)),"; done
  for i in 0 1 2; do
    setsid "$etcd_bin" --name "e$i" --data-dir "$OUT/etcd-$i" \
      --listen-client-urls "http://127.0.0.1:$((23790 + i))" --advertise-client-urls "http://127.0.0.1:$((23790 + i))" \
      --listen-peer-urls "http://127.0.0.1:$((23800 + i))" --initial-advertise-peer-urls "http://127.0.0.1:$((23800 + i))" \
      --initial-cluster "${cluster%,}" --initial-cluster-state new \
      --election-timeout "$LOSS_MS" --heartbeat-interval 100 >"$OUT/etcd-$i.log" 2>&1 &
    ETCD_PIDS[i]=$!
    disown # killed on purpose later: no job-control notice in the output
  done
  printf 'e%s 127.0.0.1:2379%s\n' 0 0 1 1 2 2 >"$OUT/etcd-targets"
  etcd_leader() {
    local i s
    for i in 0 1 2; do
      s=$(curl -s -m 0.5 -X POST "http://127.0.0.1:$((23790 + i))/v3/maintenance/status" -d '{}') || continue
      [ -n "$s" ] || continue
      if [ "$(echo "$s" | sed -n 's/.*"member_id":"\([0-9]*\)".*/\1/p')" = "$(echo "$s" | sed -n 's/.*"leader":"\([0-9]*\)".*/\1/p')" ]; then
        echo "$i"
        return 0
      fi
    done
    return 1
  }
  stack_wait "etcd leader" 30 etcd_leader || stack_die "etcd has no leader"
  python3 tests/failover-bench/writer.py etcd "$OUT/etcd-targets" "$OUT/acks-etcd" &
  WRITER_PID=$!
  for fault in kill hang; do
    : >"$OUT/gaps-etcd-$fault"
    for rep in $(seq 1 "$REPS"); do
      stack_wait "etcd leader before $fault #$rep" 30 etcd_leader || stack_die "etcd lost its leader"
      sleep 2
      l=$(etcd_leader)
      t=$(date +%s.%N)
      case $fault in
        kill) kill -9 "${ETCD_PIDS[l]}" ;;
        hang) kill -STOP "${ETCD_PIDS[l]}" ;;
      esac
      sleep $((LOSS_MS / 1000 + 3))
      if [ "$fault" = kill ]; then
        setsid "$etcd_bin" --name "e$l" --data-dir "$OUT/etcd-$l" \
          --listen-client-urls "http://127.0.0.1:$((23790 + l))" --advertise-client-urls "http://127.0.0.1:$((23790 + l))" \
          --listen-peer-urls "http://127.0.0.1:$((23800 + l))" --initial-advertise-peer-urls "http://127.0.0.1:$((23800 + l))" \
          --initial-cluster "${cluster%,}" --initial-cluster-state existing \
          --election-timeout "$LOSS_MS" --heartbeat-interval 100 >>"$OUT/etcd-$l.log" 2>&1 &
        ETCD_PIDS[l]=$!
        disown
      else
        kill -CONT "${ETCD_PIDS[l]}"
      fi
      g=$(gap "$OUT/acks-etcd" "$t")
      [ -n "$g" ] && echo "$g" >>"$OUT/gaps-etcd-$fault"
      stack_log "etcd $fault #$rep: leader e$l: writes stopped for ${g:-?} s"
    done
  done
fi

{
  echo "Write unavailability, ms (leaderLossTimeoutMs / etcd --election-timeout = $LOSS_MS, $REPS repetitions, client timeout ${WRITER_TIMEOUT_S:-0.25} s)"
  echo
  echo "| fault | n | p50 | p99 | max |"
  echo "|---|---|---|---|---|"
  for fault in $FAULTS; do summary "rc: $fault" "$OUT/gaps-$fault"; done
  if [ "$ETCD" = 1 ]; then
    for fault in kill hang; do summary "etcd: $fault" "$OUT/gaps-etcd-$fault"; done
  fi
} >"$OUT/table.txt"
