#!/usr/bin/env bash
# run-e2e.sh — the end-to-end test in a full Debian guest (systemd, dbus,
# polkitd, NetworkManager) booted under qemu with the 6.12 cloud kernel:
# install the .deb, run tests/vm/debian/guest.sh, reboot, run its second
# part. tests/tests/e2e.rs runs this and checks the result lines.
#
# Usage: tests/vm/debian/run-e2e.sh --deb FILE [--workdir DIR] [--quiet]
#            [--timeout1 SECS] [--timeout2 SECS] [--script FILE]
#   --deb      the hostfwd package to install in the guest
#   --workdir  where the image copy and the logs go (default: a new temp
#              dir, kept); boot1.log and boot2.log are the serial consoles
#   --script   guest script (default tests/vm/debian/guest.sh)
#   --quiet    do not echo the guest console while it runs
#
# Steps: tests/vm/fetch-kernels.sh 6.12 (cached), build-rootfs.sh (cached
# image), a sparse copy of the image, the payload written into it as /e2e
# with debugfs (no loop mount), then boot.sh once; if the guest asked for a
# reboot ("E2E REBOOTING"), the same image copy is booted again.
#
# The guest prints "E2E PASS name" / "E2E FAIL name: detail" lines and
# "E2E DONE" at the very end. Exit status: 0 "E2E DONE" seen and no FAIL
# line; 1 FAIL lines or no "E2E DONE"; 2 host error (kernel, debootstrap,
# qemu missing); 3 guest kernel panic; 4 timeout.
set -euo pipefail

prog=${0##*/}
die() { echo "$prog: error: $*" >&2; exit 2; }
info() { echo "$prog: $*" >&2; }

HERE=$(cd "$(dirname "$0")" && pwd -P)
DEB="" WORKDIR="" QUIET=0 T1=480 T2=300 SCRIPT=$HERE/guest.sh
while (($#)); do
    case $1 in
        --deb) DEB=${2:?}; shift ;;
        --workdir) WORKDIR=${2:?}; shift ;;
        --timeout1) T1=${2:?}; shift ;;
        --timeout2) T2=${2:?}; shift ;;
        --script) SCRIPT=${2:?}; shift ;;
        --quiet) QUIET=1 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument '$1'" ;;
    esac
    shift
done
[[ -n $DEB ]] || die "--deb FILE is required"
[[ -f $DEB ]] || die "package $DEB not found"
[[ -f $SCRIPT ]] || die "guest script $SCRIPT not found"
[[ $(id -u) == 0 ]] || die "must run as root"
for t in debugfs cp qemu-system-x86_64; do
    command -v "$t" >/dev/null || die "'$t' not found (scripts/deps.sh installs what is needed)"
done
if [[ -z $WORKDIR ]]; then WORKDIR=$(mktemp -d "${TMPDIR:-/tmp}/hostfwd-e2e.XXXXXX"); fi
mkdir -p "$WORKDIR"
WORKDIR=$(cd "$WORKDIR" && pwd -P)
info "work dir $WORKDIR"

t0=$(date +%s)
"$HERE/../fetch-kernels.sh" 6.12 || die "tests/vm/fetch-kernels.sh 6.12 failed"
IMAGE=$("$HERE/build-rootfs.sh" --kernel 6.12) || die "build-rootfs.sh failed"
t1=$(date +%s)
info "kernel and image ready in $((t1 - t0)) s: $IMAGE"

IMG=$WORKDIR/root.img
rm -f "$IMG"
cp --sparse=always "$IMAGE" "$IMG"
# The payload: the package and the guest script, as /e2e.
cmds=$WORKDIR/debugfs.cmds
{
    echo "mkdir /e2e"
    echo "write $DEB /e2e/hostfwd.deb"
    echo "write $SCRIPT /e2e/run.sh"
    echo "set_inode_field /e2e/run.sh mode 0100755"
} >"$cmds"
debugfs -w -f "$cmds" "$IMG" >"$WORKDIR/debugfs.log" 2>&1 || { cat "$WORKDIR/debugfs.log" >&2; die "debugfs failed"; }
# debugfs reports errors but exits 0: check what landed.
listing=$(debugfs -R "ls -l /e2e" "$IMG" 2>/dev/null)
for pair in "hostfwd.deb:$(stat -c %s "$DEB")" "run.sh:$(stat -c %s "$SCRIPT")"; do
    name=${pair%%:*} size=${pair#*:}
    awk -v n="$name" -v s="$size" '$NF == n && $(NF-3) == s { found=1 } END { exit !found }' <<<"$listing" \
        || { cat "$WORKDIR/debugfs.log" >&2; echo "$listing" >&2; die "injecting $name into $IMG failed"; }
done

qflags=(); ((QUIET)) && qflags=(--quiet)
boot() {
    local n=$1 timeout=$2 rc=0
    info "boot $n (timeout ${timeout}s), console: $WORKDIR/boot$n.log"
    "$HERE/boot.sh" --image "$IMG" --log "$WORKDIR/boot$n.log" --timeout "$timeout" \
        --done '^E2E (REBOOTING|POWEROFF)' --grace 60 "${qflags[@]}" || rc=$?
    return "$rc"
}
# Console lines without CRs and escapes; an "E2E ..." line that shares its
# line with other console output starts the line.
clean() {
    sed 's/\r//g; s/\x1b\[[0-9;?]*[A-Za-z]//g; s/^.*\(E2E \(PASS\|FAIL\|DONE\|REBOOTING\|POWEROFF\|BOOT\|INFO\)\)/\1/' "$@" 2>/dev/null
}

rc=0
boot 1 "$T1" || rc=$?
if ((rc == 0)) && clean "$WORKDIR/boot1.log" | grep -q '^E2E REBOOTING'; then
    boot 2 "$T2" || rc=$?
fi
t2=$(date +%s)

logs=("$WORKDIR"/boot*.log)
pass=$(clean "${logs[@]}" | grep -c '^E2E PASS ' || true)
fail=$(clean "${logs[@]}" | grep -c '^E2E FAIL ' || true)
info "qemu time $((t2 - t1)) s, total $((t2 - t0)) s; $pass passed, $fail failed"
clean "${logs[@]}" | grep '^E2E FAIL ' >&2 || true
((rc == 0)) || exit "$rc"
clean "${logs[@]}" | grep -q '^E2E DONE' || { info "the guest never printed 'E2E DONE'"; exit 1; }
((fail == 0)) || exit 1
exit 0
