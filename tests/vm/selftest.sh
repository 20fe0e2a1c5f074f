#!/usr/bin/env bash
# selftest.sh — prove the VM harness works: boot each kernel with run-guest.sh
# and, in the guest, build a bond of two veth slaves with a VLAN bond0.1000,
# ping across the VLAN into a "switch" namespace, add a clsact qdisc on bond0
# and (if clang is on the host) load a trivial tc classifier with bpftool,
# test-run it, attach it with tc (pinned and from the object file) and see it
# count the ping's packets.
#
# Usage: tests/vm/selftest.sh [--kernel 6.1|6.12|all]... [--negative] [--timeout SECONDS]
#   --kernel    which kernel(s) (default: all = 6.1 and 6.12); kernels not
#               in the cache are fetched with fetch-kernels.sh first
#   --negative  also check that the harness reports a failing guest script
#               (exit 1) and a missing result line (exit 5)
#   --timeout   per boot, default 180
# Environment: HOSTFWD_VM_CACHE (see fetch-kernels.sh), HOSTFWD_VM_LOG_DIR.
set -euo pipefail

prog=${0##*/}
here=$(cd "$(dirname "$0")" && pwd -P)
die() { echo "$prog: error: $*" >&2; exit 2; }
info() { echo "$prog: $*" >&2; }

KERNELS=() NEGATIVE=0 TIMEOUT=180
while (($#)); do
    case $1 in
        --kernel) (($# >= 2)) || die "--kernel needs an argument"
                  case $2 in 6.1|6.12) KERNELS+=("$2") ;; all) KERNELS+=(6.1 6.12) ;; *) die "--kernel 6.1|6.12|all" ;; esac
                  shift ;;
        --negative) NEGATIVE=1 ;;
        --timeout) (($# >= 2)) || die "--timeout needs an argument"; TIMEOUT=$2; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
    shift
done
((${#KERNELS[@]})) || KERNELS=(6.1 6.12)

CACHE=${HOSTFWD_VM_CACHE:-/var/cache/hostfwd-vm}
for k in "${KERNELS[@]}"; do
    [[ -f $CACHE/$k/.complete ]] || "$here/fetch-kernels.sh" "$k"
done

TMP=$(mktemp -d "${TMPDIR:-/tmp}/hostfwd-vm-selftest.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
PL=$TMP/payload
mkdir -p "$PL"

# --- a trivial tc classifier that counts packets -------------------------------------
if command -v clang >/dev/null; then
    cat >"$TMP/cls.bpf.c" <<'EOF'
#include <linux/bpf.h>
#include <linux/pkt_cls.h>

#define SEC(n) __attribute__((section(n), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name
static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)BPF_FUNC_map_lookup_elem;

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u64);
} vm_selftest_cnt SEC(".maps");

SEC("tc")
int vm_selftest_cls(struct __sk_buff *skb)
{
    __u32 k = 0;
    __u64 *v = bpf_map_lookup_elem(&vm_selftest_cnt, &k);
    if (v)
        __sync_fetch_and_add(v, 1);
    return TC_ACT_OK;
}

char _license[] SEC("license") = "GPL";
EOF
    multiarch=$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
    clang -O2 -g -target bpf -I"/usr/include/$multiarch" -c "$TMP/cls.bpf.c" -o "$PL/cls.bpf.o" \
        || die "clang failed to build the test BPF program (needs linux-libc-dev)"
else
    info "clang not found: the guest will skip the BPF part"
fi

# --- the guest script ----------------------------------------------------------------------
cat >"$PL/selftest-guest.sh" <<'EOF'
# Runs in the guest under sh (dash); cwd /payload.
set -u
step() { echo "--- $*"; }
fail() { echo "SELFTEST FAILED: $*"; exit 1; }
# expect DESCRIPTION PATTERN COMMAND...: COMMAND's output must match PATTERN (grep -E)
expect() {
    d=$1 pat=$2; shift 2
    out=$("$@" 2>&1) || { echo "$out"; fail "$d: '$*' failed"; }
    echo "$out" | grep -Eq -- "$pat" || { echo "$out"; fail "$d: '$*' does not show /$pat/"; }
    echo "ok: $d"
}
run() { "$@" || fail "'$*' failed (rc=$?)"; }

step "kernel $(uname -r) ($HOSTFWD_VM_KERNEL)"
expect "modules loaded" '^bonding ' cat /proc/modules
expect "bond0 exists after loading bonding" 'bond0' ip link show bond0

step "bond of two veth slaves, VLAN bond0.1000"
run ip link set bond0 type bond mode active-backup miimon 100
run ip netns add sw
for i in 0 1; do
    run ip link add veth$i type veth peer name sw$i
    run ip link set sw$i netns sw
    run ip link set veth$i master bond0
done
run ip link set bond0 up
run ip link add link bond0 name bond0.1000 type vlan id 1000
run ip addr add 192.0.2.1/24 dev bond0.1000
run ip link set bond0.1000 up
# the "switch" side: the active slave's peer carries VLAN 1000
run ip -n sw link set lo up
run ip -n sw link set sw0 up
run ip -n sw link set sw1 up
run ip -n sw link add link sw0 name sw0.1000 type vlan id 1000
run ip -n sw addr add 192.0.2.2/24 dev sw0.1000
run ip -n sw link set sw0.1000 up
i=0
until [ "$(cat /sys/class/net/bond0/bonding/active_slave 2>/dev/null)" = veth0 ]; do
    i=$((i + 1)); [ $i -le 50 ] || fail "bond0 has no active slave veth0 after 5 s ($(cat /sys/class/net/bond0/bonding/active_slave))"
    sleep 0.1
done
expect "bond0 is an active-backup bond" 'bond mode active-backup' ip -d link show bond0
expect "veth0 is a bond slave of bond0" 'master bond0.*|bond_slave' ip -d link show veth0
expect "veth1 is a bond slave of bond0" 'bond_slave' ip -d link show veth1
expect "bond0.1000 is VLAN 1000 on bond0" 'vlan protocol 802\.1Q id 1000' ip -d link show bond0.1000
expect "bond0.1000@bond0" 'bond0\.1000@bond0' ip link show bond0.1000
expect "bond0.1000 has 192.0.2.1/24" 'inet 192\.0\.2\.1/24' ip -4 addr show dev bond0.1000

step "clsact qdisc on bond0"
run tc qdisc add dev bond0 clsact
expect "clsact on bond0" 'qdisc clsact' tc qdisc show dev bond0

if [ -f cls.bpf.o ]; then
    step "BPF: bpftool prog load / prog run, tc attach (pinned and object file)"
    run bpftool prog load cls.bpf.o /sys/fs/bpf/vm_selftest type classifier pinmaps /sys/fs/bpf/vm_selftest_maps
    expect "program loaded" 'vm_selftest_cls' bpftool prog show pinned /sys/fs/bpf/vm_selftest
    printf '\377\377\377\377\377\377\002\000\000\000\000\001\010\000' >/tmp/pkt
    head -c 50 /dev/zero >>/tmp/pkt
    expect "BPF_PROG_TEST_RUN returns TC_ACT_OK" 'Return value: 0' bpftool prog run pinned /sys/fs/bpf/vm_selftest data_in /tmp/pkt
    run tc filter add dev bond0 ingress bpf direct-action pinned /sys/fs/bpf/vm_selftest
    run tc filter add dev bond0 egress bpf direct-action obj cls.bpf.o sec tc
    expect "classifier on bond0 ingress" 'vm_selftest_cls.*direct-action|direct-action.*vm_selftest_cls' tc filter show dev bond0 ingress
    expect "classifier on bond0 egress" 'cls\.bpf\.o.*direct-action' tc filter show dev bond0 egress
    expect "bpftool net shows the classifier on bond0" 'bond0\([0-9]+\) clsact/ingress vm_selftest' bpftool net show dev bond0
else
    step "BPF part skipped (no cls.bpf.o in the payload)"
fi

step "traffic across bond0.1000"
i=0
until ping -c 1 -W 2 192.0.2.2 >/tmp/ping 2>&1; do
    i=$((i + 1)); [ $i -lt 5 ] || { cat /tmp/ping; fail "no ping reply from 192.0.2.2 over bond0.1000"; }
done
echo "ok: ping 192.0.2.2 over bond0.1000"
if [ -f cls.bpf.o ]; then
    n=$(bpftool -j map dump pinned /sys/fs/bpf/vm_selftest_maps/vm_selftest_cnt | sed -n 's/.*"value":\([0-9]*\).*/\1/p')
    echo "classifier counted ${n:-?} packets (1 from the test run)"
    [ "${n:-0}" -gt 1 ] || fail "the classifier on bond0 ingress saw no packets"
    echo "ok: classifier on bond0 ingress saw the ping traffic"
fi
echo "SELFTEST OK"
EOF

# --- run ------------------------------------------------------------------------------------------
declare -A RESULT=() SECS=()
rc=0
for k in "${KERNELS[@]}"; do
    info "=== kernel $k: selftest"
    t0=$(date +%s.%N)
    r=0; "$here/run-guest.sh" --kernel "$k" --payload "$PL" --script selftest-guest.sh --timeout "$TIMEOUT" || r=$?
    SECS[$k]=$(awk -v s="$t0" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
    if ((r == 0)); then RESULT[$k]=PASS; else RESULT[$k]="FAIL (run-guest.sh exit $r)"; rc=1; fi
    if ((NEGATIVE)); then
        echo 'echo "deliberate failure"; exit 7' >"$TMP/neg-fail.sh"
        echo 'echo "powering off without a result line"; poweroff -f; sleep 10' >"$TMP/neg-noresult.sh"
        r=0; "$here/run-guest.sh" --kernel "$k" --script "$TMP/neg-fail.sh" --timeout "$TIMEOUT" --quiet 2>/dev/null || r=$?
        if ((r == 1)); then info "ok: failing script reported as FAIL (exit 1)"
        else info "NOT OK: failing script gave exit $r, expected 1"; RESULT[$k]+=" [negative FAIL check: exit $r]"; rc=1; fi
        r=0; "$here/run-guest.sh" --kernel "$k" --script "$TMP/neg-noresult.sh" --timeout "$TIMEOUT" --quiet 2>/dev/null || r=$?
        if ((r == 5)); then info "ok: missing result line reported (exit 5)"
        else info "NOT OK: missing result line gave exit $r, expected 5"; RESULT[$k]+=" [negative no-result check: exit $r]"; rc=1; fi
    fi
done

echo "selftest summary:"
for k in "${KERNELS[@]}"; do
    printf '  kernel %-5s %s (boot+selftest %ss)\n' "$k" "${RESULT[$k]}" "${SECS[$k]}"
done
exit $rc
