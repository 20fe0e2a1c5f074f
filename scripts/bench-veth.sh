#!/bin/bash
# Delivered packets per second over a veth pair, by filter on the receiver:
# none, nftables (a set of allowed ports, ct state established accept),
# iptables (conntrack), an empty tc program, and hostfwd (the release
# daemon with a policy that allows the port). Two traffic shapes: one UDP
# flow, and a new flow per packet (rotating source ports and addresses).
# All traffic stays inside two private network namespaces.
#
#   sudo scripts/bench-veth.sh [SECONDS_PER_RUN] [RUNS]
#
# Prints the median pps of RUNS runs (default 3 x 5 s) per (shape, filter),
# runs interleaved, and each filter's ratio to no filter. A bench, not a
# test: it needs root, installs nftables and iptables when missing, and
# takes a few minutes. Figures: BENCHMARKS.md. FILTERS="hostfwd" and
# SHAPES="new" pick a subset (no filter is always measured: it is the
# baseline); BENCH_HOSTFWD=PATH runs another build of the daemon;
# BENCH_STATS=1 also reports hostfwd's own time per program run (the
# kernel's bpf_stats, on for the bench: it costs two clock reads a run).
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=${1:-5}
RUNS=${2:-3}
PORT=5000
TAG=hfvb$$
NS_S=$TAG-s
NS_R=$TAG-r
WORK=$(mktemp -d)
BPFFS=/sys/fs/bpf/$TAG
DAEMON_PID=
STATS_WAS=

[ "$(id -u)" = 0 ] || { echo "bench-veth: needs root" >&2; exit 1; }
need=()
command -v nft >/dev/null || need+=(nftables)
command -v iptables >/dev/null || need+=(iptables)
if [ ${#need[@]} -gt 0 ]; then
	apt-get install -y --no-install-recommends "${need[@]}" >&2
fi
# The legacy backend, where present: "iptables" is then a filter of its
# own and not nftables under another syntax.
IPT=iptables
command -v iptables-legacy >/dev/null && IPT=iptables-legacy

cargo build --release -p hostfwd --bin hostfwd >&2
cargo build --release -p hostfwd-tests --bin vethbench >&2
HOSTFWD=${BENCH_HOSTFWD:-$PWD/target/release/hostfwd}
VB=$PWD/target/release/vethbench
EMPTY_OBJ=$(ls -t target/release/build/hostfwd-bpf-*/out/empty.bpf.o | head -1)

in_ns() { local ns=$1; shift; nsenter --net=/run/netns/"$ns" "$@"; }

cleanup() {
	if [ -n "$DAEMON_PID" ]; then kill "$DAEMON_PID" 2>/dev/null || true; wait "$DAEMON_PID" 2>/dev/null || true; fi
	rm -rf "$BPFFS"
	if [ -n "$STATS_WAS" ]; then sysctl -qw kernel.bpf_stats_enabled="$STATS_WAS" || true; fi
	ip netns del "$NS_S" 2>/dev/null || true
	ip netns del "$NS_R" 2>/dev/null || true
	rm -rf "$WORK"
}
trap cleanup EXIT

ip netns add "$NS_S"
ip netns add "$NS_R"
ip link add vs netns "$NS_S" type veth peer name vr netns "$NS_R"
in_ns "$NS_S" ip addr add 10.88.0.1/16 dev vs
in_ns "$NS_R" ip addr add 10.88.255.254/16 dev vr
in_ns "$NS_S" ip link set vs up
in_ns "$NS_R" ip link set vr up
in_ns "$NS_R" ip link set lo up
mac() { ip -n "$1" -o link show "$2" | sed -n 's/.*link\/ether \([0-9a-f:]*\).*/\1/p'; }
SRC_MAC=$(mac "$NS_S" vs)
DST_MAC=$(mac "$NS_R" vr)

mkdir -p "$WORK/policies" "$WORK/state"
cat >"$WORK/policies/bench.yaml" <<EOF
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata:
  name: bench
spec:
  ingress:
  - fromCIDR: [10.88.0.0/16]
    toPorts:
    - ports:
      - port: "$PORT"
        protocol: UDP
EOF
cat >"$WORK/hostfwd.toml" <<EOF
audit = false
devices = ["vr"]
dbus = "none"
policy_dir = "$WORK/policies"
state_dir = "$WORK/state"
bpffs_root = "$BPFFS"
EOF

filter_on() {
	case $1 in
	none) ;;
	nftables)
		in_ns "$NS_R" nft -f - <<EOF
table inet hfvb {
	set ports { type inet_service; elements = { 22, $PORT } }
	chain input {
		type filter hook input priority 0; policy drop;
		ct state established,related accept
		ct state invalid drop
		iifname "lo" accept
		udp dport @ports accept
		tcp dport @ports accept
	}
}
EOF
		;;
	iptables)
		in_ns "$NS_R" "$IPT" -A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
		in_ns "$NS_R" "$IPT" -A INPUT -i lo -j ACCEPT
		in_ns "$NS_R" "$IPT" -A INPUT -p udp --dport "$PORT" -j ACCEPT
		in_ns "$NS_R" "$IPT" -P INPUT DROP
		;;
	tc-empty)
		in_ns "$NS_R" tc qdisc add dev vr clsact
		in_ns "$NS_R" tc filter add dev vr ingress bpf direct-action obj "$EMPTY_OBJ" sec tcx/ingress
		;;
	hostfwd)
		# nsenter execs the daemon: $! is the daemon's pid.
		RUST_LOG=warn nsenter --net=/run/netns/"$NS_R" "$HOSTFWD" --config "$WORK/hostfwd.toml" run >"$WORK/daemon.log" 2>&1 &
		DAEMON_PID=$!
		for _ in $(seq 100); do
			if in_ns "$NS_R" "$HOSTFWD" --config "$WORK/hostfwd.toml" inspect --lines 2>/dev/null | grep -qx "attach vr ingress"; then break; fi
			sleep 0.1
		done
		in_ns "$NS_R" "$HOSTFWD" --config "$WORK/hostfwd.toml" inspect --lines | grep -qx "attach vr ingress" || { echo "bench-veth: hostfwd did not attach" >&2; exit 1; }
		sleep 1 # the policy follows the first reconcile pass
		;;
	esac
}

filter_off() {
	case $1 in
	none) ;;
	nftables) in_ns "$NS_R" nft delete table inet hfvb ;;
	iptables)
		in_ns "$NS_R" "$IPT" -P INPUT ACCEPT
		in_ns "$NS_R" "$IPT" -F INPUT
		;;
	tc-empty) in_ns "$NS_R" tc qdisc del dev vr clsact ;;
	hostfwd)
		kill "$DAEMON_PID"
		wait "$DAEMON_PID" || true
		DAEMON_PID=
		in_ns "$NS_R" "$HOSTFWD" --config "$WORK/hostfwd.toml" detach >/dev/null 2>&1 || true
		rm -rf "$BPFFS"
		;;
	esac
	# Flows of one filter must not help the next.
	in_ns "$NS_R" sh -c 'command -v conntrack >/dev/null && conntrack -F' >/dev/null 2>&1 || true
}

# One run: delivered pps at the receiver.
measure() {
	local shape=$1 out
	nsenter --net=/run/netns/"$NS_R" taskset -c 1 "$VB" recv "$PORT" "$(echo "$SECS + 1.5" | bc)" >"$WORK/recv" &
	local recv=$!
	sleep 0.5
	in_ns "$NS_S" taskset -c 0 "$VB" send vs "$SRC_MAC" "$DST_MAC" 10.88.0.1 10.88.255.254 "$PORT" "$SECS" "$shape" >"$WORK/sent"
	wait "$recv"
	out=$(cut -d' ' -f1 "$WORK/recv")
	echo $((out / SECS))
}

# run_time_ns and run_cnt summed over the daemon's programs (its fds).
prog_stats() {
	local t=0 n=0 f v
	for f in /proc/"$DAEMON_PID"/fdinfo/*; do
		grep -q '^prog_type:' "$f" 2>/dev/null || continue
		v=$(sed -n 's/^run_time_ns:[[:space:]]*//p' "$f"); t=$((t + ${v:-0}))
		v=$(sed -n 's/^run_cnt:[[:space:]]*//p' "$f"); n=$((n + ${v:-0}))
	done
	echo "$t $n"
}
if [ -n "${BENCH_STATS:-}" ]; then
	STATS_WAS=$(sysctl -n kernel.bpf_stats_enabled)
	sysctl -qw kernel.bpf_stats_enabled=1
fi

FILTERS="none $(echo "${FILTERS:-nftables iptables tc-empty hostfwd}" | sed 's/\bnone\b//g')"
SHAPES=${SHAPES:-one new}
declare -A R S
for shape in $SHAPES; do
	for run in $(seq "$RUNS"); do
		for f in $FILTERS; do
			filter_on "$f"
			if [ "$f" = hostfwd ] && [ -n "${BENCH_STATS:-}" ]; then
				read -r t0 n0 < <(prog_stats)
				R[$shape.$f]+="$(measure "$shape") "
				read -r t1 n1 < <(prog_stats)
				S[$shape]+="$(( (t1 - t0) / (n1 - n0 > 0 ? n1 - n0 : 1) )) "
			else
				R[$shape.$f]+="$(measure "$shape") "
			fi
			filter_off "$f"
		done
	done
done

median() { tr " " "\n" | { grep . || true; } | sort -n | awk '{a[NR]=$1} END {if (NR) print a[int((NR+1)/2)]}'; }
echo "# veth delivered pps, kernel $(uname -r), $(nproc) CPUs, median of $RUNS runs of ${SECS}s; iptables: $IPT"
echo
echo "| filter | one flow pps | / no filter | new flow per packet pps | / no filter |"
echo "|---|---:|---:|---:|---:|"
ratio() { [ -n "$1" ] && [ -n "$2" ] && echo "$1 / $2" | bc -l || echo 0; }
one0=$(echo "${R[one.none]:-}" | median)
new0=$(echo "${R[new.none]:-}" | median)
for f in $FILTERS; do
	one=$(echo "${R[one.$f]:-}" | median)
	new=$(echo "${R[new.$f]:-}" | median)
	printf '| %s | %d | %.2f | %d | %.2f |\n' "$f" "${one:-0}" "$(ratio "$one" "$one0")" "${new:-0}" "$(ratio "$new" "$new0")"
done
echo
for shape in $SHAPES; do
	for f in $FILTERS; do echo "runs $shape $f: ${R[$shape.$f]:-}"; done
	if [ -n "${BENCH_STATS:-}" ]; then echo "hostfwd ns per program run (bpf_stats) $shape: ${S[$shape]:-}"; fi
done
