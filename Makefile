# The two commands a new user needs (see README.md).
.PHONY: test demo e2e failover-bench

# Every gate CI runs: fmt, clippy, unit/multi-process/controller tests, chart checks, e2e.
test:
	scripts/test.sh

# The operator on a real local control plane (hack/kube) with the process kubelet: builds what is
# missing, installs with Helm, applies manifests/examples/, writes and reads keys; Ctrl-C stops it.
# Needs root (network namespaces). State and logs: /tmp/rc-demo.
demo:
	hack/demo.sh

# The end-to-end suite on its own local control plane (tests/e2e/e2e.sh); starts and stops
# everything it needs. State and logs: /tmp/rc-e2e (STACK_KEEP=1 keeps them).
e2e:
	tests/e2e/e2e.sh

# Failover benchmark (not a test): client-visible write unavailability when the leader is killed,
# hung or its pod deleted, REPS times each through the local control plane, and etcd 3.6 killed
# and hung the same way (tests/failover-bench/bench.sh). Needs root; ~15 min.
failover-bench:
	tests/failover-bench/bench.sh
