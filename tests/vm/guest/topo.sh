# The shared topology (sourced): bond0 active-backup over veth slaves s0/s1
# (no address), bond0.1000 with 10.100.0.1/24; namespace "sw" plays the
# switch with sw0.1000 = 10.100.0.2/24.
ip netns add sw
ip -n sw link set lo up
for i in 0 1; do
	ip link add s$i type veth peer name sw$i netns sw
	ip -n sw link set sw$i up
done
ip link set bond0 down
echo active-backup >/sys/class/net/bond0/bonding/mode
ip link set s0 master bond0
ip link set s1 master bond0
echo s0 >/sys/class/net/bond0/bonding/primary
ip link set bond0 up
ip link add link bond0 name bond0.1000 type vlan id 1000
ip addr add 10.100.0.1/24 dev bond0.1000
ip link set bond0.1000 up
ip -n sw link add link sw0 name sw0.1000 type vlan id 1000
ip -n sw addr add 10.100.0.2/24 dev sw0.1000
ip -n sw link set sw0.1000 up
