#!/bin/sh
# devices = auto on the reference topology: the VLAN subinterface with the
# host address is enforced, its bond guards the tags, the slaves are left
# alone; traffic over VLAN 1000 works.
set -eu
cd /payload
. ./lib.sh
. ./topo.sh
nettest listen 0.0.0.0:22 &
export HOSTFWD_AUDIT=false HOSTFWD_DBUS=none RUST_LOG=info
start_daemon
wait_state 30 "auto: bond0.1000 enforced, bond0 guarded with VID 1000, slaves ignored" \
	'has "attach bond0.1000 ingress" && has "attach bond0 ingress" && has "vlan bond0 1000" && ! grep -Eq "^(attach|link) s[01] " "$STATE"'
grep -q 'link="s0" .*role=ignored' "$LOG" || fail "log does not show s0 as ignored"
expect_rc 0 "TCP/22 over VLAN 1000" ip netns exec sw nettest connect 10.100.0.1:22
stop_daemon
echo "auto scenario passed on $(uname -r)"
