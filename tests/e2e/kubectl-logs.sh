#!/usr/bin/env bash
# `kubectl logs` through the API server to the process kubelet's API, end to end.
#
# Sourced (after hack/lib/stack.sh and stack_up; uses only what stack.sh defines, kubectl, curl
# and openssl):
#   check_kubectl_logs NAMESPACE POD   # logs, --tail, --limit-bytes, --timestamps, -f, --previous
#                                      # after a kill, unknown container; restarts POD's container
#   check_kubelet_api NAMESPACE POD    # the kubelet API directly: TLS, client-cert authn, 404s
# Both print one line per check and return 1 at the first failure (with what was seen).
# POD should be an rc-node pod (its process is found with stack_node_pid; for other pods the
# process group in the process kubelet's containerID is killed) whose container has printed
# something and is restarted by its restartPolicy.
#
# Run directly, it brings up its own stack (stack_init klogs rckl 10.241.40.0/24: state in
# /tmp/rc-klogs), runs one rc-node pod, runs both checks (and that a follower gets lines written
# after it started) and always stops the stack again:
#   tests/e2e/kubectl-logs.sh          # needs root, like every stack; STACK_KEEP=1 keeps its files

KLOGS_TIMEOUT=${KLOGS_TIMEOUT:-60} # seconds for each wait (container running, restart)

klogs_say() { printf '[%s]   kubectl-logs: %s\n' "$(date +%H:%M:%S)" "$*"; }
klogs_fail() {
  printf '[%s]   kubectl-logs: FAILED: %s\n' "$(date +%H:%M:%S)" "$*" >&2
  return 1
}

# klogs_read FILE: the file's exact bytes into $klogs_text (command substitution would strip
# trailing newlines).
klogs_read() {
  klogs_text=$(
    cat "$1"
    echo x
  )
  klogs_text=${klogs_text%x}
}

# klogs_contains BIG_FILE SMALL_FILE...: are the SMALL files, concatenated, a substring of BIG?
klogs_contains() {
  local big small=""
  klogs_read "$1"
  big=$klogs_text
  shift
  local f
  for f in "$@"; do
    klogs_read "$f"
    small+=$klogs_text
  done
  [[ "$big" == *"$small"* ]]
}

# klogs_is_prefix SHORT LONG: LONG starts with SHORT's bytes.
klogs_is_prefix() {
  local n
  n=$(wc -c <"$1")
  cmp -s -n "$n" "$1" "$2"
}

klogs_jsonpath() { kubectl -n "$1" get pod "$2" --request-timeout=10s -o jsonpath="$3" 2>/dev/null; }

# klogs_wait_running NS POD MIN_RESTARTS: the first container running with at least that many
# restarts, within KLOGS_TIMEOUT.
klogs_wait_running() {
  local deadline=$(($(date +%s) + KLOGS_TIMEOUT)) state
  while :; do
    state=$(klogs_jsonpath "$1" "$2" '{.status.containerStatuses[0].restartCount} {.status.containerStatuses[0].state.running.startedAt}')
    if [ -n "${state#* }" ] && [ "${state%% *}" -ge "$3" ] 2>/dev/null; then
      return 0
    fi
    [ "$(date +%s)" -lt "$deadline" ] || {
      klogs_fail "container of $1/$2 not running with >= $3 restarts within ${KLOGS_TIMEOUT} s (restarts, startedAt: '$state')"
      return 1
    }
    sleep 0.5
  done
}

# klogs_kill NS POD: SIGKILL the container's process.
klogs_kill() {
  local pid cid
  if pid=$(stack_node_pid "$2") && [ -n "$pid" ]; then
    kill -KILL "$pid"
    return
  fi
  # The process kubelet's containerID is process://<pod uid>/<process group>.
  cid=$(klogs_jsonpath "$1" "$2" '{.status.containerStatuses[0].containerID}')
  pid=${cid##*/}
  [[ "$cid" == process://*/* && "$pid" =~ ^[0-9]+$ ]] || {
    klogs_fail "no process to kill for $1/$2 (containerID '$cid')"
    return 1
  }
  kill -KILL -- "-$pid"
}

# klogs_with_tmp FUNCTION ARGS...: FUNCTION ARGS... TMPDIR, then the directory is removed.
klogs_with_tmp() {
  local tmp rc
  tmp=$(mktemp -d)
  "$@" "$tmp" && rc=0 || rc=$?
  rm -rf -- "$tmp"
  return "$rc"
}

check_kubectl_logs() { klogs_with_tmp klogs_check_logs "$1" "$2"; }
check_kubelet_api() { klogs_with_tmp klogs_check_api "$1" "$2"; }

klogs_check_logs() {
  local ns=$1 pod=$2 tmp=$3 file restarts n fpid rc i out
  klogs_wait_running "$ns" "$pod" 0 || return 1
  file=$(stack_log_file "$ns" "$pod") || {
    klogs_fail "cannot find the log file of $ns/$pod"
    return 1
  }
  # Something to read: wait (bounded) until the container has printed.
  for ((i = 0; i < KLOGS_TIMEOUT * 2; i++)); do
    [ -s "$file" ] && break
    sleep 0.5
  done
  [ -s "$file" ] || {
    klogs_fail "$file is still empty after ${KLOGS_TIMEOUT} s"
    return 1
  }
  restarts=$(klogs_jsonpath "$ns" "$pod" '{.status.containerStatuses[0].restartCount}')

  # 1. The log: non-empty, and the file's bytes (the current run's; the file holds every run).
  timeout 30 kubectl -n "$ns" logs "$pod" >"$tmp/logs" 2>"$tmp/err" || {
    klogs_fail "kubectl logs $pod: $(cat "$tmp/err")"
    return 1
  }
  [ -s "$tmp/logs" ] || {
    klogs_fail "kubectl logs $pod printed nothing"
    return 1
  }
  if [ "$restarts" = 0 ]; then
    klogs_is_prefix "$tmp/logs" "$file" || {
      klogs_fail "kubectl logs $pod is not the start of $file"
      diff <(head -c "$(wc -c <"$tmp/logs")" "$file") "$tmp/logs" | head -n 10 >&2
      return 1
    }
  else
    klogs_contains "$file" "$tmp/logs" || {
      klogs_fail "kubectl logs $pod is not part of $file"
      return 1
    }
  fi
  klogs_say "ok: kubectl logs $pod: $(wc -l <"$tmp/logs") lines, $(wc -c <"$tmp/logs") bytes, as in $file"

  # 2. --tail=1: exactly one line, one of the file's.
  timeout 30 kubectl -n "$ns" logs "$pod" --tail=1 >"$tmp/tail" 2>"$tmp/err" || {
    klogs_fail "kubectl logs --tail=1: $(cat "$tmp/err")"
    return 1
  }
  n=$(wc -l <"$tmp/tail")
  [ "$n" = 1 ] && grep -Fxq -- "$(cat "$tmp/tail")" "$file" || {
    klogs_fail "kubectl logs --tail=1 printed $n lines: $(head -c 300 "$tmp/tail")"
    return 1
  }
  klogs_say "ok: --tail=1 prints one line"

  # 3. --limit-bytes and --timestamps (times are when the kubelet first saw the line).
  timeout 30 kubectl -n "$ns" logs "$pod" --limit-bytes=5 >"$tmp/limit" 2>"$tmp/err" &&
    [ "$(wc -c <"$tmp/limit")" = 5 ] || {
    klogs_fail "kubectl logs --limit-bytes=5 printed $(wc -c <"$tmp/limit") bytes: $(cat "$tmp/err")"
    return 1
  }
  timeout 30 kubectl -n "$ns" logs "$pod" --timestamps --tail=1 >"$tmp/ts" 2>"$tmp/err" &&
    grep -Eq '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?Z ' "$tmp/ts" || {
    klogs_fail "kubectl logs --timestamps: $(head -c 300 "$tmp/ts") $(cat "$tmp/err")"
    return 1
  }
  klogs_say "ok: --limit-bytes=5 prints 5 bytes; --timestamps prefixes $(cut -d' ' -f1 "$tmp/ts")"

  # 4. --previous before any restart: the kubelet's error.
  if [ "$restarts" = 0 ]; then
    if timeout 30 kubectl -n "$ns" logs "$pod" --previous >"$tmp/prev0" 2>"$tmp/err"; then
      klogs_fail "kubectl logs --previous succeeded without a previous run: $(head -c 300 "$tmp/prev0")"
      return 1
    fi
    grep -q 'previous terminated container' "$tmp/err" || {
      klogs_fail "kubectl logs --previous without a previous run: unexpected error: $(cat "$tmp/err")"
      return 1
    }
    klogs_say "ok: --previous without a restart: $(tr -d '\n' <"$tmp/err")"
  fi

  # 5. -f streams: still running after 2 s with output. The stream ends by itself when the
  #    container ends (step 6); it is killed by PID whatever happens.
  timeout 120 kubectl -n "$ns" logs "$pod" -f >"$tmp/follow" 2>"$tmp/follow.err" &
  fpid=$!
  sleep 2
  if ! kill -0 "$fpid" 2>/dev/null; then
    wait "$fpid"
    rc=$?
    klogs_fail "kubectl logs -f exited within 2 s (status $rc): $(cat "$tmp/follow.err")"
    return 1
  fi
  if [ ! -s "$tmp/follow" ]; then
    kill "$fpid" 2>/dev/null
    wait "$fpid" 2>/dev/null
    klogs_fail "kubectl logs -f printed nothing in 2 s"
    return 1
  fi
  klogs_say "ok: kubectl logs -f streaming ($(wc -c <"$tmp/follow") bytes after 2 s)"

  # 6. Kill the container's process; after the restart, --previous is the killed run's log.
  restarts=$(klogs_jsonpath "$ns" "$pod" '{.status.containerStatuses[0].restartCount}')
  timeout 30 kubectl -n "$ns" logs "$pod" >"$tmp/before" 2>"$tmp/err" || {
    kill "$fpid" 2>/dev/null
    klogs_fail "kubectl logs before the kill: $(cat "$tmp/err")"
    return 1
  }
  klogs_kill "$ns" "$pod" || {
    kill "$fpid" 2>/dev/null
    return 1
  }
  # The follower ends with the run (bounded: killed after 15 s).
  for ((i = 0; i < 30; i++)); do
    kill -0 "$fpid" 2>/dev/null || break
    sleep 0.5
  done
  if kill -0 "$fpid" 2>/dev/null; then
    kill "$fpid" 2>/dev/null
    wait "$fpid" 2>/dev/null
    klogs_fail "kubectl logs -f still running 15 s after its container was killed"
    return 1
  fi
  wait "$fpid" 2>/dev/null
  klogs_say "ok: kubectl logs -f ended when the container was killed"
  klogs_wait_running "$ns" "$pod" $((restarts + 1)) || return 1
  timeout 30 kubectl -n "$ns" logs "$pod" --previous >"$tmp/previous" 2>"$tmp/err" || {
    klogs_fail "kubectl logs --previous after a restart: $(cat "$tmp/err")"
    return 1
  }
  [ -s "$tmp/previous" ] && klogs_is_prefix "$tmp/before" "$tmp/previous" || {
    klogs_fail "kubectl logs --previous ($(wc -c <"$tmp/previous") bytes) does not start with the log read before the kill ($(wc -c <"$tmp/before") bytes)"
    return 1
  }
  cmp -s "$tmp/follow" "$tmp/previous" || {
    klogs_fail "kubectl logs -f ($(wc -c <"$tmp/follow") bytes) is not the whole killed run (--previous, $(wc -c <"$tmp/previous") bytes)"
    return 1
  }
  timeout 30 kubectl -n "$ns" logs "$pod" >"$tmp/current" 2>"$tmp/err" || {
    klogs_fail "kubectl logs after the restart: $(cat "$tmp/err")"
    return 1
  }
  if cmp -s "$tmp/current" "$tmp/previous"; then
    klogs_fail "kubectl logs after the restart still shows the killed run"
    return 1
  fi
  # The file holds the killed run, then the new one.
  klogs_contains "$file" "$tmp/previous" "$tmp/current" || {
    klogs_fail "$file does not hold --previous followed by the current log"
    return 1
  }
  klogs_say "ok: --previous after a kill -9 and restart: the killed run ($(wc -l <"$tmp/previous") lines); the current log is the new run's ($(wc -l <"$tmp/current") lines)"

  # 7. An unknown container: a clear error.
  if out=$(timeout 30 kubectl -n "$ns" logs "$pod" -c no-such-container 2>&1); then
    klogs_fail "kubectl logs -c no-such-container succeeded: $out"
    return 1
  fi
  [[ "$out" == *no-such-container* ]] || {
    klogs_fail "kubectl logs -c no-such-container: unclear error: $out"
    return 1
  }
  klogs_say "ok: unknown container: $out"
}

# klogs_check_api NS POD TMP: the kubelet API as the API server reaches it (Node addresses and
# port), TLS with the node-IP serving certificate issued by the cluster CA, client certificates
# required (none: 401; another CA's: handshake refused), and its 404s.
klogs_check_api() {
  local ns=$1 pod=$2 tmp=$3 ip port url code pki=$STACK_DIR/pki
  ip=$(kubectl get node "$STACK_NODE" -o jsonpath='{.status.addresses[?(@.type=="InternalIP")].address}')
  port=$(kubectl get node "$STACK_NODE" -o jsonpath='{.status.daemonEndpoints.kubeletEndpoint.Port}')
  [ "$ip" = "$STACK_NODE_IP" ] && [ "$port" = "$STACK_KUBELET_PORT" ] || {
    klogs_fail "node $STACK_NODE reports $ip:$port, expected $STACK_NODE_IP:$STACK_KUBELET_PORT"
    return 1
  }
  url=https://$ip:$port
  # With the cluster CA as trust anchor: the serving certificate is valid for the node IP.
  code=$(curl -sS --max-time 10 -o "$tmp/body" -w '%{http_code}' --cacert "$pki/ca.crt" \
    --cert "$pki/admin.crt" --key "$pki/admin.key" "$url/healthz" 2>"$tmp/err")
  [ "$code" = 200 ] || {
    klogs_fail "GET $url/healthz with the admin client certificate: HTTP $code $(cat "$tmp/err" "$tmp/body")"
    return 1
  }
  code=$(curl -sS --max-time 10 -o "$tmp/body" -w '%{http_code}' --cacert "$pki/ca.crt" "$url/healthz" 2>"$tmp/err")
  [ "$code" = 401 ] || {
    klogs_fail "GET $url/healthz without a client certificate: HTTP $code, expected 401"
    return 1
  }
  klogs_say "ok: kubelet API at $url (Node status); serving cert valid for $ip under the cluster CA; no client cert: 401"
  openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=other-ca \
    -keyout "$tmp/other-ca.key" -out "$tmp/other-ca.crt" 2>/dev/null &&
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /O=system:masters/CN=intruder \
      -keyout "$tmp/intruder.key" -out "$tmp/intruder.csr" 2>/dev/null &&
    openssl x509 -req -in "$tmp/intruder.csr" -CA "$tmp/other-ca.crt" -CAkey "$tmp/other-ca.key" \
      -CAcreateserial -days 1 -out "$tmp/intruder.crt" \
      -extfile <(printf 'extendedKeyUsage=clientAuth\n') 2>/dev/null || {
    klogs_fail "openssl: creating a certificate of another CA"
    return 1
  }
  code=$(curl -sS --max-time 10 -o "$tmp/body" -w '%{http_code}' -k --cert "$tmp/intruder.crt" \
    --key "$tmp/intruder.key" "$url/containerLogs/$ns/$pod/$(klogs_jsonpath "$ns" "$pod" '{.spec.containers[0].name}')" 2>"$tmp/err")
  [ "$code" = 000 ] || {
    klogs_fail "a client certificate of another CA got HTTP $code: $(head -c 300 "$tmp/body")"
    return 1
  }
  klogs_say "ok: client certificate of another CA refused: $(tr -d '\n' <"$tmp/err")"
  code=$(curl -sS --max-time 10 -o "$tmp/body" -w '%{http_code}' -k --cert "$pki/admin.crt" \
    --key "$pki/admin.key" "$url/containerLogs/$ns/$pod/no-such-container" 2>"$tmp/err")
  [ "$code" = 404 ] && grep -q 'no-such-container' "$tmp/body" || {
    klogs_fail "unknown container: HTTP $code $(head -c 300 "$tmp/body")"
    return 1
  }
  klogs_say "ok: unknown container: 404 $(tr -d '\n' <"$tmp/body")"
  code=$(curl -sS --max-time 10 -o "$tmp/body" -w '%{http_code}' -k --cert "$pki/admin.crt" \
    --key "$pki/admin.key" "$url/containerLogs/$ns/no-such-pod/c" 2>"$tmp/err")
  [ "$code" = 404 ] || {
    klogs_fail "unknown pod: HTTP $code $(head -c 300 "$tmp/body")"
    return 1
  }
  klogs_say "ok: unknown pod: 404 $(tr -d '\n' <"$tmp/body")"
}

# klogs_follow_new_lines NS POD TMP: a follower started with --tail=0 gets a line written after
# it started (rc-node logs "shutting down" on SIGTERM) and ends with the run. Not for a leader
# under an operator (SIGTERM starts a hand-over there); used when run directly.
klogs_follow_new_lines() {
  local ns=$1 pod=$2 tmp=$3 fpid pid restarts i
  restarts=$(klogs_jsonpath "$ns" "$pod" '{.status.containerStatuses[0].restartCount}')
  timeout 60 kubectl -n "$ns" logs "$pod" -f --tail=0 >"$tmp/new" 2>"$tmp/err" &
  fpid=$!
  sleep 2
  pid=$(stack_node_pid "$pod") || {
    kill "$fpid" 2>/dev/null
    klogs_fail "no rc-node process for $pod"
    return 1
  }
  kill -TERM "$pid"
  for ((i = 0; i < 30; i++)); do
    kill -0 "$fpid" 2>/dev/null || break
    sleep 0.5
  done
  if kill -0 "$fpid" 2>/dev/null; then
    kill "$fpid" 2>/dev/null
    wait "$fpid" 2>/dev/null
    klogs_fail "kubectl logs -f --tail=0 still running 15 s after SIGTERM to its container"
    return 1
  fi
  wait "$fpid" 2>/dev/null
  grep -q 'shutting down' "$tmp/new" || {
    klogs_fail "kubectl logs -f --tail=0 did not stream the line written after it started: $(head -c 300 "$tmp/new" "$tmp/err")"
    return 1
  }
  klogs_say "ok: kubectl logs -f --tail=0 streamed a new line ($(grep -o 'shutting down[^"]*' "$tmp/new" | head -n1)) and ended with the run"
  klogs_wait_running "$ns" "$pod" $((restarts + 1))
}

# --- run directly: a stack of its own -----------------------------------------------------------

klogs_main() {
  set -euo pipefail
  cd "$(dirname "${BASH_SOURCE[0]}")/../.."
  # shellcheck source=hack/lib/stack.sh
  . hack/lib/stack.sh
  stack_init klogs rckl 10.241.40.0/24
  trap 'rc=$?; set +e; stack_down; exit $rc' EXIT
  trap 'exit 130' INT TERM
  stack_build
  stack_up
  local ns=klogs pod=klogs-0
  kubectl create namespace "$ns" >/dev/null
  stack_wait "ServiceAccount $ns/default" 30 kubectl -n "$ns" get serviceaccount default
  kubectl -n "$ns" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: $pod
spec:
  restartPolicy: Always
  terminationGracePeriodSeconds: 5
  containers:
  - name: node
    image: ghcr.io/replicated-dev/rc-node:0.1.0
    env:
    - { name: RC_NODE_ID, value: $pod }
    - { name: RC_DATA_DIR, value: /data }
    - { name: RC_ADMIN_TOKEN, value: klogs-admin-token }
    volumeMounts:
    - { name: data, mountPath: /data }
  volumes:
  - { name: data, emptyDir: {} }
EOF
  stack_log "pod $ns/$pod created; checking kubectl logs"
  local failed=0
  check_kubectl_logs "$ns" "$pod" || failed=1
  check_kubelet_api "$ns" "$pod" || failed=1
  klogs_with_tmp klogs_follow_new_lines "$ns" "$pod" || failed=1
  if [ "$failed" = 0 ]; then
    stack_log "kubectl logs: all checks passed"
  else
    stack_log "kubectl logs: FAILED (process kubelet log: $STACK_DIR/logs/process-kubelet.log)"
    tail -n 20 "$STACK_DIR/logs/process-kubelet.log" >&2 || true
  fi
  return "$failed"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  klogs_main "$@"
fi
