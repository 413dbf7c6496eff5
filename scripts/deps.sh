#!/usr/bin/env bash
# Install what the build and tests need on a fresh Debian machine that already has Rust and Go
# (the project's machine kind). Only installs what is missing; safe to run repeatedly.
set -euo pipefail

need=()
for pair in openssl:openssl curl:curl ip:iproute2 make:make; do
  cmd=${pair%%:*} pkg=${pair#*:}
  command -v "$cmd" >/dev/null 2>&1 || need+=("$pkg")
done
if ((${#need[@]})); then
  echo "deps: installing Debian packages: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "deps: cargo (Rust) is required" >&2; exit 1; }
command -v go >/dev/null || { echo "deps: go is required" >&2; exit 1; }
# rustfmt and clippy ship with the toolchain here; add them if this toolchain lacks them.
cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
cargo clippy --version >/dev/null 2>&1 || rustup component add clippy
