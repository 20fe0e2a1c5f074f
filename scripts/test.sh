#!/usr/bin/env bash
# The whole test suite: unit, eBPF (BPF_PROG_TEST_RUN), network namespaces
# with real traffic, and qemu guests on Debian 6.1 and 6.12 kernels.
# Needs root. Installs missing Debian packages first.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "test.sh: run as root (eBPF, namespaces, qemu)" >&2; exit 1; }
scripts/deps.sh
cargo build --workspace --all-targets --locked
cargo test --workspace --locked -- --test-threads="${TEST_THREADS:-4}"
