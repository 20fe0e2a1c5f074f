#!/bin/sh
# Guest side of the "loads on this kernel" check: hostfwd's own loader loads
# the datapath (the kernel's verifier accepts it), attaches to a veth in the
# mode the kernel supports, lists what the kernel holds, and detaches.
set -eu
ip link add v0 type veth peer name v1
ip link set v0 up
ip link set v1 up
want=tcx
[ "$HOSTFWD_VM_KERNEL" = 6.1 ] && want=tc
out=$(./hostfwd probe --attach v0 --keep)
echo "probe: $out"
echo "$out" | grep -q "\"mode\":\"$want\"" || { echo "expected mode $want"; exit 1; }
echo "$out" | grep -q '"direction":"ingress"' || { echo "no ingress attachment"; exit 1; }
echo "$out" | grep -q '"direction":"egress"' || { echo "no egress attachment"; exit 1; }
if [ "$want" = tc ]; then
	tc filter show dev v0 ingress | grep -q hf_ingress || { echo "tc does not show hf_ingress"; exit 1; }
fi
# A second load adopts: still exactly one attachment per direction.
out2=$(./hostfwd probe --attach v0 --keep)
echo "probe again: $out2"
[ "$(echo "$out2" | grep -o '"direction"' | wc -l)" = 2 ] || { echo "duplicate attachments"; exit 1; }
./hostfwd detach
echo "loaded, attached ($want), adopted and detached on $(uname -r)"
