#!/usr/bin/env bash
# boot.sh — boot a Debian guest image (build-rootfs.sh) once under qemu (TCG,
# `-cpu max,-cx16`, see tests/vm/README.md) with a Debian
# cloud kernel, the serial console going to a log file.
#
# Usage: tests/vm/debian/boot.sh --image IMG --log LOG [--kernel 6.12]
#            [--timeout SECS] [--done REGEX] [--grace SECS] [--smp N]
#            [--mem MB] [--append ARGS] [--quiet]
#   --image    ext4 image mounted as root (/dev/nvme0n1), written to: give
#              it a copy of the cached image
#   --log      serial console log (appended to)
#   --timeout  wall-time limit of this boot (default 600)
#   --done     extended regex: once a console line matches it, the guest has
#              done its job; qemu gets --grace seconds (default 30) to exit by
#              itself (poweroff/reboot; qemu runs with -no-reboot) and is
#              killed after that (exit status 0 all the same)
#   --quiet    do not echo the console to stderr while it runs
#
# Exit status: 0 qemu ended (guest powered off or rebooted) or --done
# matched; 2 usage or host error; 3 kernel panic/Oops/BUG on the console
# (qemu is stopped 10 s after it); 4 timeout.
#
# Environment: HOSTFWD_VM_CACHE (kernel cache, default /var/cache/hostfwd-vm).
set -euo pipefail

prog=${0##*/}
die() { echo "$prog: error: $*" >&2; exit 2; }
info() { echo "$prog: $*" >&2; }

CACHE=${HOSTFWD_VM_CACHE:-/var/cache/hostfwd-vm}
IMAGE="" LOG="" SERIES=6.12 TIMEOUT=600 DONE="" GRACE=30 SMP=2 MEM=1536 APPEND="" QUIET=0
while (($#)); do
    case $1 in
        --image) IMAGE=${2:?}; shift ;;
        --log) LOG=${2:?}; shift ;;
        --kernel) SERIES=${2:?}; shift ;;
        --timeout) TIMEOUT=${2:?}; shift ;;
        --done) DONE=${2:?}; shift ;;
        --grace) GRACE=${2:?}; shift ;;
        --smp) SMP=${2:?}; shift ;;
        --mem) MEM=${2:?}; shift ;;
        --append) APPEND=${2:?}; shift ;;
        --quiet) QUIET=1 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument '$1'" ;;
    esac
    shift
done
[[ -n $IMAGE && -n $LOG ]] || die "--image and --log are required"
[[ -f $IMAGE && -w $IMAGE ]] || die "image $IMAGE is not a writable file"
[[ $TIMEOUT =~ ^[0-9]+$ && $GRACE =~ ^[0-9]+$ ]] || die "--timeout and --grace take whole seconds"
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 not found (apt-get install -y qemu-system-x86)"
VMLINUZ=$CACHE/$SERIES/vmlinuz
[[ -e $VMLINUZ ]] || die "no kernel $VMLINUZ (run tests/vm/fetch-kernels.sh $SERIES)"

PANIC_RE='(^|\] )(Kernel panic - not syncing|BUG: |kernel BUG at |Oops: |Oops - |general protection fault|double fault|watchdog: BUG: soft lockup)'
mkdir -p "$(dirname "$LOG")"
touch "$LOG"
start_line=$(($(wc -l <"$LOG") + 1))
# Console of this boot only, without CRs and terminal escapes.
console() { tail -n +"$start_line" "$LOG" | sed 's/\r//g; s/\x1b\[[0-9;?]*[A-Za-z]//g; s/\x1bc//g'; }

# shellcheck disable=SC2054  # "max,-cx16" is one argument
qemu=(qemu-system-x86_64 -accel tcg -cpu max,-cx16 -smp "$SMP" -m "$MEM"
      -nographic -no-reboot -nic none
      -drive "file=$IMAGE,if=none,id=root,format=raw,cache=unsafe"
      -device nvme,drive=root,serial=root
      -kernel "$VMLINUZ"
      -append "console=ttyS0 root=/dev/nvme0n1 rw rootfstype=ext4 panic=-1 quiet mitigations=off${APPEND:+ $APPEND}")
t0=$(date +%s)
"${qemu[@]}" </dev/null >>"$LOG" 2>&1 &
qpid=$!
tpid=""
stop_qemu() {
    kill -TERM "$qpid" 2>/dev/null || true
    for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$qpid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$qpid" 2>/dev/null || true
    wait "$qpid" 2>/dev/null || true
}
# shellcheck disable=SC2317  # a trap handler
on_signal() { trap - INT TERM; info "interrupted: stopping qemu"; stop_qemu; exit 130; }
trap on_signal INT TERM
if ((!QUIET)); then
    tail -n +"$start_line" -s 0.5 --pid="$qpid" -f "$LOG" | sed -u 's/\r//g; s/\x1b\[[0-9;?]*[A-Za-z]//g; s/\x1bc//g; s/^/[guest] /' >&2 &
    tpid=$!
fi

verdict="" done_at="" panic_at=""
while kill -0 "$qpid" 2>/dev/null; do
    sleep 1
    now=$(date +%s)
    if [[ -z $panic_at ]] && console | grep -Eq "$PANIC_RE"; then panic_at=$now; fi
    if [[ -z $done_at && -n $DONE ]] && console | grep -Eq "$DONE"; then done_at=$now; fi
    if [[ -n $panic_at ]] && ((now - panic_at >= 10)); then verdict=panic; break; fi
    if [[ -n $done_at ]] && ((now - done_at >= GRACE)); then verdict=done-killed; break; fi
    if ((now - t0 >= TIMEOUT)); then verdict=timeout; break; fi
done
if kill -0 "$qpid" 2>/dev/null; then
    stop_qemu
    qrc=killed
else
    qrc=0; wait "$qpid" || qrc=$?
fi
[[ -n $tpid ]] && { sleep 0.6; kill "$tpid" 2>/dev/null || true; wait "$tpid" 2>/dev/null || true; }
trap - INT TERM
elapsed=$(($(date +%s) - t0))
panic=$(console | grep -Em1 "$PANIC_RE" || true)
[[ -n $panic ]] && verdict=panic
warn=$(console | grep -Em1 '(^|\] )WARNING: .*(CPU|at )' || true)
[[ -z $warn ]] || info "note: kernel WARNING in the guest: ${warn#*] }"

case $verdict in
    panic)
        info "KERNEL PANIC/OOPS/BUG in the guest after ${elapsed}s: ${panic#*] } (log $LOG)"
        exit 3 ;;
    timeout)
        info "TIMEOUT: the guest ran for ${TIMEOUT}s and was stopped (log $LOG)"
        exit 4 ;;
    done-killed)
        info "the guest finished but did not power off within ${GRACE}s; stopped it (${elapsed}s, log $LOG)"
        exit 0 ;;
    *)
        [[ $qrc == 0 ]] || info "qemu exited with status $qrc after ${elapsed}s"
        info "guest ended after ${elapsed}s (log $LOG)"
        [[ $qrc == 0 ]] || exit 2
        exit 0 ;;
esac
