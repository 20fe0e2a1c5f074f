#!/bin/sh
# The reference report's topology, done right: bond0 (two veth slaves, no
# address) with bond0.1000 carrying the host address; a "switch" namespace
# on the other side of the slaves sends tagged traffic. hostfwd runs with
# devices = bond0 (and s2, a NIC that is enslaved and released later).
set -eu
cd /payload
. ./lib.sh

# --- topology (topo.sh plus s2, a free NIC, and VLAN 2000 on the switch) ---
. ./topo.sh
ip link add s2 type veth peer name sw2 netns sw
ip -n sw link set sw2 up
ip -n sw link add link sw0 name sw0.2000 type vlan id 2000
ip -n sw addr add 10.200.0.2/24 dev sw0.2000
ip -n sw link set sw0.2000 up

nettest listen 0.0.0.0:22 &
nettest listen 0.0.0.0:8080 &

# VLAN 3000 exists on bond0 but is excluded from hostfwd: VID 3000 must never
# pass bond0, however the frame hides it in a tag stack.
ip link add link bond0 name bond0.3000 type vlan id 3000
ip addr add 10.30.0.1/24 dev bond0.3000
ip link set bond0.3000 up

# Policy: ingress TCP/22 from the switch's subnet only (default deny); the
# failsafe list is narrowed so that port 22 is decided by the policy.
mkdir -p /etc/hostfwd/policies
cat >/etc/hostfwd/policies/ssh.yaml <<'Y'
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata:
  name: ssh-from-switch
spec:
  nodeSelector: {}
  ingress:
  - fromCIDR: [10.100.0.0/24, 10.200.0.0/24]
    toPorts:
    - ports:
      - port: "22"
        protocol: TCP
      - port: "161"
        protocol: UDP
Y
export HOSTFWD_DEVICES=bond0,s2 HOSTFWD_EXCLUDE=bond0.3000 HOSTFWD_AUDIT=false HOSTFWD_FAILSAFE__INGRESS=udp/68 HOSTFWD_DBUS=none RUST_LOG=info
start_daemon

# --- 1. bond0 vlan-guard, bond0.1000 enforce, VID 1000 allowed ---------------
wait_state 30 "bond0 guarded, bond0.1000 enforced, VID 1000 allowed" \
	'has "attach bond0 ingress" && has "attach bond0 egress" && has "attach bond0.1000 ingress" && has "vlan bond0 1000" && ! grep -q "^attach s[01] " "$STATE"'
grep -q 'link="bond0" .*role=vlan-guard' "$LOG" || fail "log does not show bond0 as vlan-guard"
grep -q 'link="bond0.1000" .*role=enforce' "$LOG" || fail "log does not show bond0.1000 as enforce"
expect_rc 0 "TCP/22 over VLAN 1000" ip netns exec sw nettest connect 10.100.0.1:22
expect_rc 3 "TCP/8080 dropped on bond0.1000" ip netns exec sw nettest connect 10.100.0.1:8080 800
inspect
grep -q "^drop bond0.1000 ingress policy-denied enforced" "$STATE" || fail "no policy-denied drop counted on bond0.1000"
ip netns exec sw nettest send-tagged sw0 2000 "$(mac_of bond0)" 10.200.0.2 10.200.0.1 5
wait_state 10 "frames tagged 2000 dropped on bond0 as vlan-filtered" \
	'grep -Eq "^drop bond0 ingress vlan-filtered enforced ([5-9]|[0-9][0-9]+)$" "$STATE"'

# --- 1b. tag stacks: the VID the kernel delivers through decides ----------
grep -q 'link="bond0.3000" .*role=ignored' "$LOG" || fail "log does not show bond0.3000 as ignored"
inspect
has "vlan bond0 3000" && fail "VID 3000 allowed on bond0 although bond0.3000 is excluded"
nettest udp-count 10.30.0.1:161 4000 >/tmp/v3000.out &
C3000=$!
nettest udp-count 10.100.0.1:161 4000 >/tmp/v1000.out &
C1000=$!
sleep 0.5
for stack in 0x8100:3000 0x8100:0,0x8100:3000 0x8100:0,0x8100:0,0x8100:3000 \
	0x88a8:0,0x8100:3000 0x8100:0,0x88a8:0,0x8100:0,0x8100:3000; do
	ip netns exec sw nettest send-stack sw0 "$stack" "$(mac_of bond0)" 10.30.0.2 10.30.0.1 161 5
done
# The control: priority tags in front of the allowed VID 1000 arrive.
ip netns exec sw nettest send-stack sw0 0x8100:0,0x8100:0,0x8100:1000 "$(mac_of bond0)" 10.100.0.2 10.100.0.1 161 5
wait "$C3000" "$C1000"
grep -qx "received 0" /tmp/v3000.out || fail "tagged frames reached a socket behind the excluded VID 3000: $(cat /tmp/v3000.out)"
grep -qx "received 5" /tmp/v1000.out || fail "priority-tagged frames for VID 1000 lost: $(cat /tmp/v1000.out)"
wait_state 10 "25 stacked frames for VID 3000 dropped on bond0 as vlan-filtered (plus 5 of VID 2000)" \
	'grep -Eq "^drop bond0 ingress vlan-filtered enforced (3[0-9]|[4-9][0-9]|[0-9]{3,})$" "$STATE"'

# --- 2. a new VLAN subinterface: allowed and enforced in one reconcile ------
ip link add link bond0 name bond0.2000 type vlan id 2000
ip addr add 10.200.0.1/24 dev bond0.2000
ip link set bond0.2000 up
wait_state 10 "VID 2000 allowed and bond0.2000 enforced" 'has "vlan bond0 2000" && has "attach bond0.2000 ingress"'
expect_rc 0 "TCP/22 over VLAN 2000" ip netns exec sw nettest connect 10.200.0.1:22
ip link del bond0.2000
wait_state 10 "VID 2000 and bond0.2000 gone" '! has "vlan bond0 2000" && ! grep -q "^attach bond0.2000 " "$STATE"'

# --- 3. enslave and release a NIC -------------------------------------------
wait_state 10 "s2 selected while free" 'has "attach s2 ingress"'
ip link set s2 master bond0
wait_state 10 "nothing on s2 once it is a bond port" '! grep -q "^attach s2 " "$STATE" && ! grep -q "^link s2 " "$STATE"'
ip link set s2 nomaster
wait_state 10 "s2 selected again after release" 'has "attach s2 ingress"'

# --- 4. foreign clsact delete (legacy tc path re-attaches) -------------------
tc qdisc del dev bond0 clsact 2>/dev/null || true
wait_state 10 "bond0 attached after a foreign clsact delete" 'has "attach bond0 ingress" && has "attach bond0 egress"'
expect_rc 0 "TCP/22 still fine" ip netns exec sw nettest connect 10.100.0.1:22

# --- 5. SIGKILL and restart mid-traffic -------------------------------------
ip netns exec sw nettest session 10.100.0.1:22 8 >/tmp/session.out 2>&1 &
SESSION=$!
sleep 1
kill -9 "$DAEMON"
wait "$DAEMON" 2>/dev/null || true
inspect
has "attach bond0.1000 ingress" || fail "SIGKILL removed the programs"
start_daemon
set +e
wait "$SESSION"
rc=$?
set -e
cat /tmp/session.out
[ "$rc" = 0 ] || fail "the established session over VLAN 1000 saw failures across the restart"
wait_state 15 "one attachment per hook after restart" \
	'[ "$(grep -c "^attach bond0.1000 ingress$" "$STATE")" = 1 ] && ! grep -Eq "^hook .* [2-9]$" "$STATE"'

# --- 6. delete and re-create bond0 and its VLAN -----------------------------
old=$(cat /sys/class/net/bond0/ifindex)
ip link del bond0
ip link add bond0 type bond mode active-backup
ip link set s0 master bond0
ip link set s1 master bond0
ip link set bond0 up
ip link add link bond0 name bond0.1000 type vlan id 1000
ip addr add 10.100.0.1/24 dev bond0.1000
ip link set bond0.1000 up
new=$(cat /sys/class/net/bond0/ifindex)
[ "$old" != "$new" ] || fail "bond0 kept its ifindex"
wait_state 15 "programs back on the new bond0 ($new) and bond0.1000, VID 1000 allowed" \
	'has "attach bond0 ingress" && has "attach bond0.1000 ingress" && has "vlan bond0 1000"'
if has "mode tcx"; then
	stale=$(ls /sys/fs/bpf/hostfwd/links | grep -c "^tcx-$old-" || true)
	[ "$stale" = 0 ] || fail "stale pins for ifindex $old: $(ls /sys/fs/bpf/hostfwd/links)"
fi
expect_rc 0 "TCP/22 over the re-created VLAN" ip netns exec sw nettest connect 10.100.0.1:22 3000

stop_daemon
echo "bond-vlan scenario passed on $(uname -r)"
