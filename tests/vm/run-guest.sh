#!/usr/bin/env bash
# run-guest.sh — boot a Debian cloud kernel in qemu (TCG) with a busybox
# initramfs, run one test script in the guest and report its verdict.
#
# Usage:
#   tests/vm/run-guest.sh --kernel 6.1|6.12 --script PATH [--payload DIR]
#                         [--timeout SECONDS] [--smp N] [--mem MB]
#                         [--module NAME]... [--host-bin PATH]...
#                         [--log FILE] [--append "KERNEL ARGS"] [--quiet] [--keep]
#
#   --kernel    kernel series; must be in the cache (run fetch-kernels.sh first)
#   --payload   directory copied (symlinks dereferenced) to /payload in the guest
#   --script    the test, run as `sh /payload/<script>` with cwd /payload.
#               A relative PATH naming a file inside --payload is used as is;
#               otherwise PATH is a host file, copied to /payload/<basename>.
#   --timeout   wall-clock limit for qemu, default 300; qemu is killed after it
#   --smp/--mem default 2 / 1024
#   --module    load an extra kernel module (with its dependencies) after the
#               default ones; may be repeated
#   --host-bin  copy another host executable (with its libraries) into the
#               guest at the same path; may be repeated
#   --log       serial console log file (default: $HOSTFWD_VM_LOG_DIR, or
#               ${TMPDIR:-/tmp}/hostfwd-vm-logs, /<date>-<kernel>-<script>.log);
#               kept in every case
#   --append    extra kernel command line (e.g. "loglevel=7" to see more)
#   --quiet     do not echo guest output live; print it (prefixed) only on failure
#   --keep      keep the per-run temp dir (initramfs pieces) for debugging
#
# Exit status: 0 the guest printed "HOSTFWD-VM-RESULT: PASS" (and no kernel
# panic/Oops/BUG was seen); 1 the guest script failed ("FAIL rc=N") or guest
# setup failed; 2 usage or host-side error; 3 kernel panic/Oops/BUG in the
# guest; 4 timeout; 5 no result line.  The last line on stderr gives the reason.
#
# Environment: HOSTFWD_VM_CACHE (default /var/cache/hostfwd-vm), HOSTFWD_VM_LOG_DIR.
#
# Guest environment: busybox-static applets; the host's ip, tc, bpftool (if
# installed) in /usr/sbin; the host's dash as /bin/sh and the host's env,
# timeout, xargs, find, nice, nohup, chroot, setsid, nsenter, unshare, flock,
# taskset, chrt, ionice (Debian's busybox-static prefers its own applets
# whenever it runs a command, so busybox sh/env/timeout/... would run busybox
# `ip`/`tc` instead of iproute2's); the libraries all of these need (ldd).
# Modules 8021q bonding veth sch_ingress cls_bpf plus their dependencies
# from modules.dep (tls llc stp garp mrp) are loaded with insmod, deps first
# (loading bonding creates bond0).  Mounted: proc, sysfs, devtmpfs, devpts,
# /dev/shm, bpffs on /sys/fs/bpf, tracefs, debugfs, cgroup2, tmpfs on /run
# and /tmp; lo is up.  The script runs as root with cwd /payload, stdin
# /dev/null, stdout+stderr on the console, and sees HOSTFWD_VM=1,
# HOSTFWD_VM_KERNEL=6.1|6.12 and HOSTFWD_VM_KERNEL_RELEASE=<uname -r>.  Then
# /init prints exactly one "HOSTFWD-VM-RESULT: PASS" or
# "HOSTFWD-VM-RESULT: FAIL rc=N" line and powers off (poweroff -f).  A
# failure before the script (mount, insmod) prints
# "HOSTFWD-VM-SETUP-ERROR: ..." and "FAIL rc=125".
#
# Initramfs: a base archive (busybox, modules, ip/tc/bpftool, libraries,
# /init) is cached as CACHE/<series>/initramfs-base-<hash>.cpio, keyed on this
# script, the kernel, the module list and the host binaries; the payload part
# is built per run in a temp dir and appended as a second cpio archive.
set -euo pipefail

prog=${0##*/}
EXIT_PASS=0 EXIT_FAIL=1 EXIT_HOST=2 EXIT_PANIC=3 EXIT_TIMEOUT=4 EXIT_NORESULT=5
die() { echo "$prog: error: $*" >&2; exit $EXIT_HOST; }
info() { echo "$prog: $*" >&2; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

CACHE=${HOSTFWD_VM_CACHE:-/var/cache/hostfwd-vm}
KSERIES="" PAYLOAD="" SCRIPT="" TIMEOUT=300 SMP=2 MEM=1024 LOG="" APPEND="" QUIET=0 KEEP=0
EXTRA_MODULES=() HOST_BINS=()
need_arg() { (($# >= 2)) || die "option $1 needs an argument (see --help)"; }
while (($#)); do
    case $1 in
        --kernel) need_arg "$@"; KSERIES=$2; shift ;;
        --payload) need_arg "$@"; PAYLOAD=$2; shift ;;
        --script) need_arg "$@"; SCRIPT=$2; shift ;;
        --timeout) need_arg "$@"; TIMEOUT=$2; shift ;;
        --smp) need_arg "$@"; SMP=$2; shift ;;
        --mem) need_arg "$@"; MEM=$2; shift ;;
        --module) need_arg "$@"; EXTRA_MODULES+=("$2"); shift ;;
        --host-bin) need_arg "$@"; HOST_BINS+=("$2"); shift ;;
        --log) need_arg "$@"; LOG=$2; shift ;;
        --append) need_arg "$@"; APPEND=$2; shift ;;
        --quiet|-q) QUIET=1 ;;
        --keep) KEEP=1 ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
    shift
done
[[ $KSERIES == 6.1 || $KSERIES == 6.12 ]] || die "--kernel 6.1|6.12 is required"
[[ -n $SCRIPT ]] || die "--script PATH is required"
[[ $TIMEOUT =~ ^[1-9][0-9]*$ ]] || die "--timeout must be a positive integer (seconds)"
[[ $SMP =~ ^[1-9][0-9]*$ ]] || die "--smp must be a positive integer"
[[ $MEM =~ ^[1-9][0-9]*$ ]] || die "--mem must be a positive integer (MB)"
if [[ -n $PAYLOAD ]]; then
    [[ -d $PAYLOAD ]] || die "--payload '$PAYLOAD' is not a directory"
    PAYLOAD=$(cd "$PAYLOAD" && pwd -P)
fi

for t in qemu-system-x86_64:qemu-system-x86 cpio:cpio ldd:libc-bin xz:xz-utils sha256sum:coreutils timeout:coreutils; do
    command -v "${t%%:*}" >/dev/null || die "'${t%%:*}' not found (apt-get install -y ${t#*:})"
done
BUSYBOX=""
for b in /bin/busybox /usr/bin/busybox; do
    if [[ -x $b ]] && ! ldd "$b" >/dev/null 2>&1; then BUSYBOX=$b; break; fi   # static
done
[[ -n $BUSYBOX ]] || die "a static busybox is needed (apt-get install -y busybox-static)"

KDIR=$CACHE/$KSERIES
[[ -f $KDIR/.complete ]] || die "kernel $KSERIES not in $CACHE (run tests/vm/fetch-kernels.sh $KSERIES)"
KVER=$(cat "$KDIR/version")
KMODDIR=$(cat "$KDIR/modules-dir")
VMLINUZ=$(readlink -f "$KDIR/vmlinuz")
[[ -f $VMLINUZ && -f $KMODDIR/modules.dep ]] || die "kernel cache $KDIR is incomplete (run tests/vm/fetch-kernels.sh --force $KSERIES)"

HOST_DEFAULT_BINS=()
for b in ip tc bpftool; do
    p=$(PATH=/usr/sbin:/sbin:/usr/bin:/bin:$PATH command -v "$b" || true)
    if [[ -n $p ]]; then HOST_DEFAULT_BINS+=("$(readlink -f "$p")")
    elif [[ $b != bpftool ]]; then die "host '$b' not found (apt-get install -y iproute2)"
    fi
done

# Debian's busybox-static prefers its own applets when it runs a command (its
# sh, env, timeout, xargs, nsenter, ... would run busybox `ip`/`tc`, not the
# host's).  So the guest's sh is the host's dash and these exec-ing tools are
# the host's too (all from essential packages).
HOST_UTILS=()
for b in dash env timeout xargs find nice nohup chroot setsid nsenter unshare flock taskset chrt ionice; do
    p=$(PATH=/usr/bin:/bin:/usr/sbin:/sbin:$PATH command -v "$b" || true)
    if [[ -n $p ]]; then HOST_UTILS+=("$(readlink -f "$p")")
    elif [[ $b == dash ]]; then die "host 'dash' not found (apt-get install -y dash)"
    fi
done

MODULES=(8021q bonding veth sch_ingress cls_bpf "${EXTRA_MODULES[@]}")

TMP=$(mktemp -d "${TMPDIR:-/tmp}/hostfwd-vm.XXXXXX")
cleanup() { if ((KEEP)); then info "kept temp dir $TMP"; else rm -rf "$TMP"; fi; }
trap cleanup EXIT

is_elf() { local m; LC_ALL=C IFS= read -r -n4 m <"$1" 2>/dev/null || true; [[ $m == $'\x7fELF' ]]; }

# libs_of FILE... -> absolute paths of the shared libraries and loader (ldd).
libs_of() {
    local f
    for f in "$@"; do
        ldd "$f" 2>/dev/null | awk '
            $2 == "=>" && $3 ~ /^\// { print $3; next }
            $1 ~ /^\// { print $1 }' || true
    done | sort -u
}

# guest_path PATH -> where PATH lives in the guest's usr-merged tree
# (/lib and /lib64 are symlinks to usr/lib, usr/lib64 there).
guest_path() {
    case $1 in
        /lib/*|/lib64/*) echo "/usr$1" ;;
        *) echo "$1" ;;
    esac
}

# copy_host_file SRC ROOT -> ROOT/<guest path of SRC> with content of SRC (symlinks dereferenced)
copy_host_file() {
    local dst; dst=$2$(guest_path "$1")
    mkdir -p "$(dirname "$dst")"
    cp -L --preserve=mode "$1" "$dst"
}

# --- modules ------------------------------------------------------------------

# Prints module file paths (relative to KMODDIR) in load order: dependencies first.
resolve_modules() {
    awk -v want="$*" '
        function norm(p,   b) { b=p; sub(/.*\//,"",b); sub(/\.ko(\.(xz|zst|gz))?$/,"",b); gsub(/-/,"_",b); return b }
        BEGIN { n=split(want,w," "); for(i=1;i<=n;i++){ x=w[i]; gsub(/-/,"_",x); order[i]=x } }
        {
            path=$1; sub(/:$/,"",path)
            byname[norm(path)]=path
            deps[path]=""
            for (i=2;i<=NF;i++) deps[path]=deps[path] " " $i
        }
        function visit(p,   d,k,m) {
            if (p in seen) return
            seen[p]=1
            m=split(deps[p],d," ")
            # modules.dep lists deps so that loading them last-to-first works
            for (k=m;k>=1;k--) visit(d[k])
            print p
        }
        END {
            for (i=1;i<=n;i++) {
                if (!(order[i] in byname)) { print "MISSING " order[i]; continue }
                visit(byname[order[i]])
            }
        }' "$KMODDIR/modules.dep"
}

is_builtin() {
    local n=${1//-/_}
    [[ -f $KMODDIR/modules.builtin ]] && sed 's/.*\///; s/\.ko$//; s/-/_/g' "$KMODDIR/modules.builtin" | grep -qx "$n"
}

# --- base initramfs (cached) --------------------------------------------------

BASE_BINS=("$BUSYBOX" "${HOST_DEFAULT_BINS[@]}" "${HOST_UTILS[@]}")
mapfile -t BASE_LIBS < <(libs_of "${HOST_DEFAULT_BINS[@]}" "${HOST_UTILS[@]}")
key=$( {
    sha256sum "$0" | cut -d' ' -f1
    echo "$KVER $(cat "$KDIR/package") ${MODULES[*]}"
    sha256sum "${BASE_BINS[@]}" "${BASE_LIBS[@]}" "$KMODDIR/modules.dep"
} | sha256sum | cut -c1-16)
BASE=$KDIR/initramfs-base-$key.cpio

build_base() {
    local out=$1 r=$TMP/base m f name d
    rm -rf "$r"; mkdir -p "$r"
    (cd "$r" && mkdir -p bin sbin usr/bin usr/sbin usr/lib usr/lib64 dev proc sys run tmp root payload etc/hostfwd-vm \
        && ln -s usr/lib lib && ln -s usr/lib64 lib64)
    # busybox + applet links
    cp "$BUSYBOX" "$r/bin/busybox"
    while read -r f; do
        [[ $f == bin/busybox ]] && continue
        [[ -e $r/$f || -L $r/$f ]] && continue
        mkdir -p "$r/$(dirname "$f")"
        ln -s /bin/busybox "$r/$f"
    done < <("$BUSYBOX" --list-full)
    # host binaries replace busybox applets of the same name
    for f in "${HOST_DEFAULT_BINS[@]}" "${HOST_UTILS[@]}"; do
        name=${f##*/}
        rm -f "$r/bin/$name" "$r/sbin/$name" "$r/usr/bin/$name" "$r/usr/sbin/$name"
        case $name in ip|tc|bpftool) d=usr/sbin ;; *) d=usr/bin ;; esac
        cp -L --preserve=mode "$f" "$r/$d/$name"
    done
    rm -f "$r/bin/sh"; ln -s /usr/bin/dash "$r/bin/sh"
    for f in "${BASE_LIBS[@]}"; do copy_host_file "$f" "$r"; done
    # modules, decompressed, flat, plus the load order
    local md=$r/usr/lib/modules/$KVER
    mkdir -p "$md"
    : >"$md/load-order"
    local missing=() builtin=()
    while read -r m; do
        if [[ $m == MISSING\ * ]]; then
            name=${m#MISSING }
            if is_builtin "$name"; then builtin+=("$name"); else missing+=("$name"); fi
            continue
        fi
        name=${m##*/}
        case $m in
            *.ko.xz) xz -dc "$KMODDIR/$m" >"$md/${name%.xz}"; name=${name%.xz} ;;
            *.ko.zst) zstd -qdc "$KMODDIR/$m" >"$md/${name%.zst}"; name=${name%.zst} ;;
            *.ko.gz) gzip -dc "$KMODDIR/$m" >"$md/${name%.gz}"; name=${name%.gz} ;;
            *) cp "$KMODDIR/$m" "$md/$name" ;;
        esac
        echo "$name" >>"$md/load-order"
    done < <(resolve_modules "${MODULES[@]}")
    ((${#missing[@]} == 0)) || die "kernel $KVER has no module(s): ${missing[*]}"
    ((${#builtin[@]} == 0)) || info "built into $KVER (not loaded): ${builtin[*]}"
    # /etc
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$r/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$r/etc/group"
    echo hostfwd-vm >"$r/etc/hostname"
    for f in /etc/protocols /etc/services; do [[ -f $f ]] && cp "$f" "$r$f"; done
    printf 'HOSTFWD_VM_KERNEL=%s\nHOSTFWD_VM_KERNEL_RELEASE=%s\n' "$KSERIES" "$KVER" >"$r/etc/hostfwd-vm/kernel"
    # /dev/console so that /init has a console from the start (needs root; /init copes without)
    if [[ $(id -u) == 0 ]]; then mknod -m 600 "$r/dev/console" c 5 1; mknod -m 666 "$r/dev/null" c 1 3; fi
    write_init >"$r/init"; chmod 755 "$r/init"
    (cd "$r" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) >"$out"
    (cd "$r" && find . -mindepth 1 ! -type d | sed 's/^\.//') >"${out%.cpio}.files"
}

write_init() {
    cat <<'EOF'
#!/bin/sh
# /init of the hostfwd VM test initramfs (generated by tests/vm/run-guest.sh)
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TERM=dumb
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1
setup_fail() {
    echo "HOSTFWD-VM-SETUP-ERROR: $*"
    echo "HOSTFWD-VM-RESULT: FAIL rc=125"
    poweroff -f
    sleep 5
    exit 1
}
mount -t proc proc /proc || setup_fail "mount /proc"
mount -t sysfs sysfs /sys || setup_fail "mount /sys"
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts || setup_fail "mount /dev/pts"
mount -t tmpfs tmpfs /dev/shm || setup_fail "mount /dev/shm"
mount -t bpf bpf /sys/fs/bpf || setup_fail "mount bpffs /sys/fs/bpf"
mount -t tmpfs tmpfs /run || setup_fail "mount /run"
mount -t tmpfs tmpfs /tmp || setup_fail "mount /tmp"
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null
hostname -F /etc/hostname
. /etc/hostfwd-vm/kernel
. /etc/hostfwd-vm/run
export HOSTFWD_VM=1 HOSTFWD_VM_KERNEL HOSTFWD_VM_KERNEL_RELEASE
[ "$(uname -r)" = "$HOSTFWD_VM_KERNEL_RELEASE" ] || setup_fail "kernel is $(uname -r), expected $HOSTFWD_VM_KERNEL_RELEASE"
md=/lib/modules/$HOSTFWD_VM_KERNEL_RELEASE
while read -r m; do
    insmod "$md/$m" || setup_fail "insmod $m"
done <"$md/load-order"
ip link set lo up || setup_fail "ip link set lo up"
[ -f "/payload/$HOSTFWD_VM_SCRIPT" ] || setup_fail "no /payload/$HOSTFWD_VM_SCRIPT"
cd /payload
read -r t0 _ </proc/uptime
echo "HOSTFWD-VM: running /payload/$HOSTFWD_VM_SCRIPT on $HOSTFWD_VM_KERNEL_RELEASE (guest uptime ${t0}s)"
sh "/payload/$HOSTFWD_VM_SCRIPT" </dev/null 2>&1
rc=$?
cd /
read -r t1 _ </proc/uptime
echo "HOSTFWD-VM: script exited with rc=$rc after $(awk "BEGIN { printf \"%.1f\", $t1 - $t0 }")s (guest uptime ${t1}s)"
if [ "$rc" -eq 0 ]; then
    echo "HOSTFWD-VM-RESULT: PASS"
else
    echo "HOSTFWD-VM-RESULT: FAIL rc=$rc"
fi
sync
poweroff -f
sleep 5
EOF
}

mkdir -p "$KDIR" 2>/dev/null || true
if [[ ! -s $BASE ]]; then
    if [[ -w $KDIR ]]; then
        info "building initramfs base for $KVER (cached as $BASE)"
        build_base "$TMP/base.cpio"
        mv -f "${TMP}/base.files" "${BASE%.cpio}.files"
        mv -f "$TMP/base.cpio" "$BASE"
        # drop stale bases of this kernel (old keys), unless recently used
        find "$KDIR" -maxdepth 1 -name 'initramfs-base-*' ! -name "initramfs-base-$key.*" -mmin +60 -delete 2>/dev/null || true
    else
        info "$KDIR not writable: building the initramfs base in $TMP (not cached)"
        build_base "$TMP/base.cpio"
        BASE=$TMP/base.cpio
    fi
fi
touch "$BASE" 2>/dev/null || true

# --- per-run part -----------------------------------------------------------------

R=$TMP/run
mkdir -p "$R/payload" "$R/etc/hostfwd-vm"
if [[ -n $PAYLOAD ]]; then
    cp -RL --preserve=mode,timestamps "$PAYLOAD/." "$R/payload/" || die "copying payload $PAYLOAD failed"
fi
if [[ $SCRIPT != /* && -n $PAYLOAD && -f $PAYLOAD/$SCRIPT ]]; then
    SCRIPT_REL=$SCRIPT
elif [[ -f $SCRIPT ]]; then
    SCRIPT_REL=${SCRIPT##*/}
    if [[ -e $R/payload/$SCRIPT_REL ]] && ! cmp -s "$SCRIPT" "$R/payload/$SCRIPT_REL"; then
        die "--script $SCRIPT: a different $SCRIPT_REL already exists in the payload"
    fi
    cp -L "$SCRIPT" "$R/payload/$SCRIPT_REL"
else
    die "--script '$SCRIPT' not found (neither in --payload nor on the host)"
fi
[[ $SCRIPT_REL != *"'"* ]] || die "script path must not contain a single quote"
printf "HOSTFWD_VM_SCRIPT='%s'\n" "${SCRIPT_REL#./}" >"$R/etc/hostfwd-vm/run"

for b in "${HOST_BINS[@]}"; do
    [[ -f $b && -x $b ]] || die "--host-bin '$b' is not an executable file"
    b=$(cd "$(dirname "$b")" && pwd -P)/${b##*/}
    copy_host_file "$b" "$R"
done
# libraries of every ELF in the payload and of the extra host binaries
elves=()
while IFS= read -r -d '' f; do is_elf "$f" && elves+=("$f"); done < <(find "$R/payload" -type f -print0)
elves+=("${HOST_BINS[@]}")
if ((${#elves[@]})); then
    declare -A in_base=()
    while read -r f; do in_base[$f]=1; done <"${BASE%.cpio}.files" 2>/dev/null || true
    while read -r f; do
        [[ $f == /* ]] || continue
        g=$(guest_path "$f")
        [[ -z ${in_base[$g]:-} && ! -e $R$g ]] || continue
        copy_host_file "$f" "$R"
    done < <(libs_of "${elves[@]}")
fi
(cd "$R" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) >"$TMP/run.cpio"
cat "$BASE" "$TMP/run.cpio" >"$TMP/initrd.cpio"

# --- boot -----------------------------------------------------------------------------

if [[ -z $LOG ]]; then
    logdir=${HOSTFWD_VM_LOG_DIR:-${TMPDIR:-/tmp}/hostfwd-vm-logs}
    mkdir -p "$logdir"
    sname=${SCRIPT_REL##*/}; sname=${sname%.sh}
    LOG=$logdir/$(date +%Y%m%d-%H%M%S)-$KSERIES-$sname-$$.log
else
    mkdir -p "$(dirname "$LOG")"
fi
: >"$LOG"

info "kernel $KVER, initrd $(( $(stat -c %s "$TMP/initrd.cpio") / 1024 / 1024 )) MiB, script /payload/$SCRIPT_REL, timeout ${TIMEOUT}s"
info "serial log: $LOG"
# shellcheck disable=SC2054  # "max,-cx16" is one argument
qemu=(qemu-system-x86_64 -accel tcg -cpu max,-cx16 -smp "$SMP" -m "$MEM"
      -nographic -no-reboot -nic none
      -kernel "$VMLINUZ" -initrd "$TMP/initrd.cpio"
      -append "console=ttyS0 quiet panic=-1${APPEND:+ $APPEND}")
start=$(date +%s.%N)
# qemu runs in the background writing the log; `tail -f` echoes it live.
timeout -k 5 "$TIMEOUT" "${qemu[@]}" </dev/null >>"$LOG" 2>&1 &
qpid=$!
tpid=""
on_signal() {
    trap - INT TERM
    info "interrupted: stopping qemu (log: $LOG)"
    kill -TERM "$qpid" 2>/dev/null || true
    wait "$qpid" 2>/dev/null || true
    exit 130
}
trap on_signal INT TERM
if ((!QUIET)); then
    tail -n +1 -s 0.2 --pid="$qpid" -f "$LOG" | sed -u "s/\r\$//; s/\x1b\[[0-9;?]*[A-Za-z]//g; s/\x1bc//g; s/^/[vm $KSERIES] /" &
    tpid=$!
fi
qrc=0; wait "$qpid" || qrc=$?
if [[ -n $tpid ]]; then wait "$tpid" || true; fi
trap - INT TERM
elapsed=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')

# --- verdict ----------------------------------------------------------------------------

clean=$(sed 's/\r$//; s/\x1b\[[0-9;?]*[A-Za-z]//g; s/\x1bc//g' "$LOG")
show_log() { ((QUIET)) && sed "s/^/[vm $KSERIES] /" <<<"$clean" >&2; true; }
result=$(grep -E '^HOSTFWD-VM-RESULT: (PASS|FAIL rc=[0-9]+)$' <<<"$clean" | tail -n1 || true)
setup_err=$(grep -E '^HOSTFWD-VM-SETUP-ERROR: ' <<<"$clean" | head -n1 || true)
panic=$(grep -E '(^|\] )(Kernel panic - not syncing|BUG: |kernel BUG at |Oops: |Oops - |general protection fault|double fault|watchdog: BUG: soft lockup)' <<<"$clean" | head -n1 || true)
warn=$(grep -E '(^|\] )WARNING: .*(CPU|at )' <<<"$clean" | head -n1 || true)
[[ -z $warn ]] || info "note: kernel WARNING in guest: ${warn#*] }"
where="kernel $KSERIES, ${elapsed}s, log $LOG"

if ((qrc == 124 || qrc == 137)); then
    show_log
    info "TIMEOUT: qemu killed after ${TIMEOUT}s${panic:+ (kernel problem seen: ${panic#*] })}${result:+ (last result: $result)} ($where)"
    exit $EXIT_TIMEOUT
fi
if [[ -n $panic ]]; then
    show_log
    info "KERNEL PANIC/OOPS/BUG in guest: ${panic#*] }${result:+ (script result: ${result#HOSTFWD-VM-RESULT: })} ($where)"
    exit $EXIT_PANIC
fi
if [[ -n $setup_err ]]; then
    show_log
    info "FAIL: guest setup failed: ${setup_err#HOSTFWD-VM-SETUP-ERROR: } ($where)"
    exit $EXIT_FAIL
fi
case $result in
    "HOSTFWD-VM-RESULT: PASS")
        info "PASS ($where)"
        exit $EXIT_PASS ;;
    "HOSTFWD-VM-RESULT: FAIL rc="*)
        show_log
        info "FAIL: guest script /payload/$SCRIPT_REL exited with rc=${result##*rc=} ($where)"
        exit $EXIT_FAIL ;;
    *)
        show_log
        info "NO RESULT: the guest printed no HOSTFWD-VM-RESULT line (qemu exit status $qrc) ($where)"
        exit $EXIT_NORESULT ;;
esac
