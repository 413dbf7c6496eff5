#!/usr/bin/env bash
# Members of two versions side by side, as during a rolling image upgrade, and a node of the
# new version restarted on the old version's data directory. Not part of the test command: it
# needs a binary of the previous version, for example
#
#   git worktree add /tmp/rc-old <previous-release-commit>
#   (cd /tmp/rc-old && CARGO_TARGET_DIR=/tmp/rc-old-target cargo build -p rc-node)
#   cargo build -p rc-node
#   tests/upgrade/mixed-versions.sh /tmp/rc-old-target/debug/rc-node target/debug/rc-node
#
# Checks, each printed as PASS or FAIL (exit 1 on any FAIL):
# - single-leader: an old leader with a new and an old follower, and a new leader with old
#   followers: every write acknowledged and on every member;
# - leaderless: rings of old and new members: W=3 writes and R=3 reads through each coordinator;
# - in place: data written by the old binary (with snapshots) read back by the new one.
# Nodes listen on loopback only and are stopped by PID.
set -u
OLD=${1:?usage: $0 OLD_RC_NODE NEW_RC_NODE}
NEW=${2:?usage: $0 OLD_RC_NODE NEW_RC_NODE}
TOKEN=mixed-versions-token-0123456789
DIR=$(mktemp -d /tmp/rc-mixed.XXXXXX)
BASE=$((20000 + RANDOM % 20000))
AUTH=(-H "authorization: Bearer $TOKEN" -H 'content-type: application/json')
PIDS=()
FAILED=0

stop_all() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  PIDS=()
}
trap 'stop_all; rm -rf "$DIR"' EXIT

addr() { echo "127.0.0.1:$((BASE + $1))"; }
check() { # NAME GOT WANT
  if [ "$2" = "$3" ]; then echo "PASS  $1: $2"; else echo "FAIL  $1: got $2, want $3"; FAILED=1; fi
}

# start I BINARY DATA ARGS...: node nI on its port with data in DATA.
start() {
  local i=$1 bin=$2 data=$3 k
  shift 3
  "$bin" --node-id "n$i" --listen "$(addr "$i")" --data-dir "$data" --admin-token "$TOKEN" \
    --snapshot-every 20 "$@" >>"$data.log" 2>&1 &
  PIDS[i]=$!
  for k in $(seq 1 100); do
    curl -sf "http://$(addr "$i")/healthz" >/dev/null && return 0
    sleep 0.1
  done
  echo "FAIL  n$i ($bin) did not start:"; tail -3 "$data.log"; FAILED=1
}

fence() { # I EPOCH -> the node's incarnation
  curl -sf -XPOST "http://$(addr "$1")/admin/epoch" "${AUTH[@]}" -d "{\"epoch\":$2}" |
    sed 's/.*"incarnation":\([0-9]*\).*/\1/'
}

# promote LEADER EPOCH MEMBERS...: fence every member at EPOCH, promote LEADER with them all.
promote() {
  local leader=$1 epoch=$2 i voters="" followers=""
  shift 2
  for i in "$@"; do
    voters="$voters{\"id\":\"n$i\",\"incarnation\":$(fence "$i" "$epoch")},"
    [ "$i" = "$leader" ] || followers="$followers{\"id\":\"n$i\",\"address\":\"$(addr "$i")\"},"
  done
  curl -sf -XPOST "http://$(addr "$leader")/admin/promote" "${AUTH[@]}" \
    -d "{\"epoch\":$epoch,\"followers\":[${followers%,}],\"voters\":[${voters%,}]}" >/dev/null ||
    echo "FAIL  promote n$leader refused"
  sleep 0.5
}

# count NODE PREFIX N QUERY: how many of PREFIX1..N node NODE returns.
count() {
  local ok=0 k
  for k in $(seq 1 "$3"); do
    curl -sf -m 3 "http://$(addr "$1")/v1/kv/$2$k$4" >/dev/null && ok=$((ok + 1))
  done
  echo "$ok"
}

# put NODE PREFIX N QUERY: write PREFIX1..N through NODE; how many were acknowledged.
put() {
  local ok=0 k
  for k in $(seq 1 "$3"); do
    curl -sf -m 5 -XPUT "http://$(addr "$1")/v1/kv/$2$k$4" -H 'content-type: application/json' \
      -d '{"value":"v"}' >/dev/null && ok=$((ok + 1))
  done
  echo "$ok"
}

single_leader() { # LABEL BIN0 BIN1 BIN2 (n0 leads)
  local label=$1 i
  for i in 0 1 2; do start "$i" "${@:$((i + 2)):1}" "$DIR/sl-$label-$i" --replication quorum; done
  promote 0 1 0 1 2
  check "single-leader, $label: writes acknowledged" "$(put 0 k 30 '')" 30
  sleep 0.5
  for i in 1 2; do
    check "single-leader, $label: writes on n$i" "$(count "$i" k 30 '?consistency=stale')" 30
  done
  stop_all
}

leaderless() { # LABEL BIN0 BIN1 BIN2
  local label=$1 i k c ring members=""
  local flags=(--mode leaderless --anti-entropy-interval-seconds 0)
  for i in 0 1 2; do start "$i" "${@:$((i + 2)):1}" "$DIR/ll-$label-$i" "${flags[@]}"; done
  for i in 0 1 2; do members="$members{\"id\":\"n$i\",\"address\":\"$(addr "$i")\",\"state\":\"normal\"},"; done
  ring="{\"version\":1,\"members\":[${members%,}]}"
  for i in 0 1 2; do
    curl -sf -XPUT "http://$(addr "$i")/admin/ring" "${AUTH[@]}" -d "$ring" >/dev/null ||
      echo "FAIL  ring refused by n$i"
    for k in $(seq 1 100); do
      curl -sf "${AUTH[@]}" "http://$(addr "$i")/admin/status" | grep -q '"restoring":false' && break
      sleep 0.1
    done
  done
  for c in 0 1 2; do
    check "leaderless, $label: W=3 writes through n$c" "$(put "$c" "c$c-" 10 '?w=3')" 10
    check "leaderless, $label: R=3 reads through n$(((c + 1) % 3))" \
      "$(count $(((c + 1) % 3)) "c$c-" 10 '?r=3')" 10
  done
  stop_all
}

in_place() { # MODE-LABEL ARGS...: write with OLD, restart the same data with NEW, read back.
  local label=$1 data="$DIR/inplace-$1"
  shift
  start 0 "$OLD" "$data" "$@"
  if [ "$label" = leaderless ]; then
    curl -sf -XPUT "http://$(addr 0)/admin/ring" "${AUTH[@]}" \
      -d "{\"version\":1,\"members\":[{\"id\":\"n0\",\"address\":\"$(addr 0)\",\"state\":\"normal\"}]}" >/dev/null
    sleep 0.5
  else
    promote 0 1 0
  fi
  check "in place, $label: old binary acknowledged" "$(put 0 p 100 '')" 100
  kill -9 "${PIDS[0]}"; wait "${PIDS[0]}" 2>/dev/null; PIDS=()
  start 0 "$NEW" "$data" "$@"
  [ "$label" = leaderless ] || promote 0 2 0
  check "in place, $label: new binary reads the old data" "$(count 0 p 100 '')" 100
  stop_all
}

single_leader "old leader, new follower n1" "$OLD" "$NEW" "$OLD"
single_leader "new leader, old followers" "$NEW" "$OLD" "$OLD"
leaderless "n2 new" "$OLD" "$OLD" "$NEW"
leaderless "n2 old" "$NEW" "$NEW" "$OLD"
in_place single-leader --replication quorum
in_place leaderless --mode leaderless --replication-factor 1 --write-quorum 1 --read-quorum 1 \
  --anti-entropy-interval-seconds 0
exit "$FAILED"
