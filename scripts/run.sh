#!/usr/bin/env bash
# Builds hostfwd and runs it on the built-in default configuration:
# automatic devices, audit mode (nothing is dropped; would-be drops are
# logged and counted). Needs root. Ctrl-C stops it; the programs stay
# attached (pinned) until `target/release/hostfwd detach`.
#
# The D-Bus API is served on the system bus. Where none runs (containers,
# CI machines without systemd), this starts one, with polkitd, so that
# `target/release/hostfwdctl status` and busctl work from another shell.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "run.sh: run as root (eBPF)" >&2; exit 1; }
scripts/deps.sh
cargo build --release --locked -p hostfwd -p hostfwdctl

# The bus policy lets root own org.hostfwd.Firewall1; the polkit actions
# decide who may change what (root may).
install -Dm644 dbus/org.hostfwd.Firewall1.conf /etc/dbus-1/system.d/org.hostfwd.Firewall1.conf
install -Dm644 polkit/org.hostfwd.Firewall1.policy /usr/share/polkit-1/actions/org.hostfwd.Firewall1.policy
if ! busctl --system list >/dev/null 2>&1; then
	echo "run.sh: no system bus running; starting dbus-daemon --system" >&2
	mkdir -p /run/dbus
	rm -f /run/dbus/pid
	dbus-daemon --system --fork
else
	busctl --system call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus ReloadConfig >/dev/null
fi
if ! busctl --system status org.freedesktop.PolicyKit1 >/dev/null 2>&1; then
	echo "run.sh: starting polkitd" >&2
	/usr/lib/polkit-1/polkitd --no-debug >/dev/null 2>&1 &
fi
exec target/release/hostfwd run "$@"
