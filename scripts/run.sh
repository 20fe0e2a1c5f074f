#!/usr/bin/env bash
# Builds hostfwd and runs it on the built-in default configuration:
# automatic devices, audit mode (nothing is dropped; would-be drops are
# logged). Needs root. Ctrl-C stops it; the programs stay attached (pinned)
# until `target/release/hostfwd detach`.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "run.sh: run as root (eBPF)" >&2; exit 1; }
scripts/deps.sh
cargo build --release --locked -p hostfwd
exec target/release/hostfwd run "$@"
