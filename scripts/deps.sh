#!/usr/bin/env bash
# Installs what building and testing hostfwd needs on Debian/Ubuntu (root).
# Idempotent: does nothing when everything is already there.
set -euo pipefail

PKGS=(
	# build: clang compiles the eBPF C, libbpf (vendored) links libelf/zlib
	clang llvm libelf-dev zlib1g-dev pkg-config make gcc linux-libc-dev
	# tests: namespaces, veth, tc, nsenter
	iproute2 util-linux
	# the API: a bus (dbus-daemon, busctl) and polkitd to authorise changes
	dbus dbus-daemon systemd polkitd
	# D-Bus tests read error names with gdbus
	libglib2.0-bin
	# VM tests: qemu guests with Debian kernels (tests/vm/)
	qemu-system-x86 cpio busybox-static kmod xz-utils
	# end-to-end VM test: a Debian rootfs image (tests/vm/debian/)
	debootstrap e2fsprogs
)

missing=()
for p in "${PKGS[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
	echo "deps: installing ${missing[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
	echo "deps: cargo not found; install Rust (https://rustup.rs) first" >&2
	exit 1
fi
# libbpf-cargo formats the generated skeleton with rustfmt.
command -v rustfmt >/dev/null || rustup component add rustfmt

# Pinned maps and links live on bpffs.
if [ "$(stat -f -c %T /sys/fs/bpf 2>/dev/null)" != bpf_fs ]; then
	mount -t bpf bpf /sys/fs/bpf
fi
