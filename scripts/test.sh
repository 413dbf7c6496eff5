#!/usr/bin/env bash
# The project's test command (README; .ci/run calls it). Installs what is missing, builds the
# local Kubernetes control plane once (cached in ~/.cache/rc-kube), then runs every gate:
# formatting, lints, unit + multi-process + controller tests, chart checks, end-to-end suite.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
step() { printf '\n==> %s (%ss)\n' "$*" "$(( $(date +%s) - start ))"; }

step "dependencies"
scripts/deps.sh

step "Kubernetes control plane binaries (cold build: ~15 min on 2 cores; cached afterwards)"
hack/kube/build.sh | tail -n 3

step "cargo fmt"
cargo fmt --all -- --check

step "size limits (no file over 500 lines, no function over 80, outside tests)"
python3 scripts/check-sizes.py

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test (unit, CRD drift, multi-process fault tests, controller tests)"
cargo test --workspace --locked

step "Helm chart: lint, rendered-manifest drift, server-side dry-run on a real API server"
bash charts/check.sh

if [ -f Makefile ] && grep -q '^e2e:' Makefile; then
  step "end-to-end suite on the local control plane"
  make e2e
fi
step "all checks passed"
