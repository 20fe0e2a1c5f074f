#!/bin/sh
# Create and delete 200 VLAN subinterfaces as fast as possible: afterwards
# the attachments and map entries match the kernel's links exactly.
set -eu
cd /payload
. ./lib.sh
. ./topo.sh
export HOSTFWD_DEVICES=bond0 HOSTFWD_AUDIT=false HOSTFWD_DBUS=none RUST_LOG=warn
start_daemon
wait_state 30 "initial state" 'has "vlan bond0 1000" && has "attach bond0.1000 ingress"'

start=$(ms)
i=3000
while [ $i -lt 3200 ]; do
	echo "link add link bond0 name v$i type vlan id $i"
	echo "addr add 10.$((i / 256)).$((i % 256)).1/32 dev v$i"
	echo "link set v$i up"
	i=$((i + 1))
done >/tmp/add.batch
ip -batch /tmp/add.batch
wait_state 120 "200 new VLANs allowed and enforced" \
	'[ "$(grep -c "^vlan bond0 " "$STATE")" = 201 ] && [ "$(grep -c "^attach v3[01][0-9][0-9] ingress$" "$STATE")" = 200 ]'
up=$(ms)
i=3000
while [ $i -lt 3200 ]; do
	echo "link del v$i"
	i=$((i + 1))
done >/tmp/del.batch
ip -batch /tmp/del.batch
wait_state 120 "all 200 gone again" \
	'[ "$(grep -c "^vlan bond0 " "$STATE")" = 1 ] && has "vlan bond0 1000" && ! grep -q "^attach v3" "$STATE" && ! grep -q "^link v3" "$STATE" && ! grep -q "^link #" "$STATE"'
down=$(ms)
# Exactly the expected set, nothing more.
[ "$(grep -c "^attach " "$STATE")" = 4 ] || fail "expected attachments on bond0 and bond0.1000 only"
if has "mode tcx"; then
	[ "$(ls /sys/fs/bpf/hostfwd/links | wc -l)" = 4 ] || fail "stale link pins: $(ls /sys/fs/bpf/hostfwd/links)"
fi
echo "storm: converged up in $((up - start)) ms, down in $((down - up)) ms (including inspection polls)"
stop_daemon
echo "storm scenario passed on $(uname -r)"
