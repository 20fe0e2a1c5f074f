#!/bin/bash
# The end-to-end test inside the Debian guest (run by hostfwd-e2e.service as
# /e2e/run.sh, with /e2e/hostfwd.deb next to it; see run-e2e.sh). Two boots
# of the same disk:
#   boot 1  install the .deb, enable the unit, NetworkManager builds
#           bond0 + bond0.1000 over a veth, re-creates them, polkit, reload,
#           persisted policy and audit state, a minute without watchdog
#           trouble; then reboot
#   boot 2  everything back after the reboot, enforcement with real
#           traffic, then purge the package
# Every check prints one line, "E2E PASS <name>" or "E2E FAIL <name>:
# <why>" (followed by indented output), and the script ends with
# "E2E DONE"; tests/tests/e2e.rs holds the list of names it expects.
# shellcheck disable=SC2317,SC2329,SC2015,SC2016  # functions run through check/wait_for; A && B || fail
set -u
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export LANG=C.UTF-8 SYSTEMD_PAGER="" SYSTEMD_COLORS=0 NO_COLOR=1 TERM=dumb

ST=/var/lib/hostfwd-e2e # survives the reboot
OUT=/run/e2e-out        # output of the last command
mkdir -p "$ST"
: >"$OUT"
FAILS=0
T_SCRIPT=$(date +%s)
T_ACTIVE=0 # when hostfwd became active (boot 1)
MAINPID=""

# --- helpers ------------------------------------------------------------------

info() { echo "E2E INFO $*"; }
# check NAME FUNCTION: runs the function; it returns non-zero with WHY set
# to say what went wrong.
check() {
	local name=$1 t0 rc
	shift
	WHY=""
	: >"$OUT"
	t0=$(date +%s%N)
	"$@"
	rc=$?
	local ms=$((($(date +%s%N) - t0) / 1000000))
	if [ "$rc" = 0 ]; then
		echo "E2E PASS $name (${ms} ms)"
	else
		FAILS=$((FAILS + 1))
		echo "E2E FAIL $name: ${WHY:-failed} (${ms} ms)"
		[ -s "$OUT" ] && tail -n 40 "$OUT" | sed 's/^/    | /'
	fi
	return 0
}
# run CMD...: output to $OUT (shown if the check fails), one trace line.
run() {
	local t0 rc
	t0=$(date +%s%N)
	"$@" >"$OUT" 2>&1
	rc=$?
	echo "  + $* -> $rc ($((($(date +%s%N) - t0) / 1000000)) ms)"
	return "$rc"
}
# wait_for SECS CMD...: until CMD succeeds (output of the last try in $OUT).
wait_for() {
	local end=$(($(date +%s) + $1))
	shift
	while :; do
		"$@" >"$OUT" 2>&1 && return 0
		[ "$(date +%s)" -ge "$end" ] && return 1
		sleep 0.5
	done
}
# Fails the check unless hostfwd is up (saves waiting for things that
# cannot happen).
need_daemon() {
	systemctl is-active -q hostfwd && return 0
	WHY="hostfwd.service is not active ($(systemctl is-active hostfwd 2>&1))"
	return 1
}
prop() { systemctl show -P "$1" hostfwd 2>/dev/null; }
ifindex() { cat "/sys/class/net/$1/ifindex" 2>/dev/null; }
inspect_lines() { hostfwd inspect --lines; }
inspect_json() { hostfwd inspect; }
link_json() { hostfwdctl -o json link "$1"; }
has_line() { inspect_lines | grep -qx "$1"; }
active_cons() { nmcli -t -f NAME,STATE con show --active; }
# The three connections of the topology are activated.
nm_all_up() {
	local a
	a=$(active_cons) || return 1
	echo "$a"
	for c in bond0 bond0-port0 bond0.1000; do
		grep -qx "$c:activated" <<<"$a" || return 1
	done
}
# TCP from the switch namespace over VLAN 1000: "open" (connected),
# "refused" (RST: the host answered), "timeout" (dropped).
tcp_probe() {
	local port=$1 out rc
	out=$(timeout 4 ip netns exec sw bash -c "exec 3<>/dev/tcp/10.100.0.1/$port" 2>&1)
	rc=$?
	if [ "$rc" = 0 ]; then echo open
	elif [ "$rc" = 124 ]; then echo timeout
	elif grep -q "refused" <<<"$out"; then echo refused
	else echo "error: $out"
	fi
}

diagnostics() {
	echo "--- diagnostics (boot $BOOT) ---"
	systemctl status --no-pager -n 0 hostfwd 2>&1 | head -n 20
	echo "--- journalctl -u hostfwd (last 60)"
	journalctl -b -u hostfwd --no-pager -n 60 -o short-monotonic 2>&1
	echo "--- hostfwd inspect --lines"
	hostfwd inspect --lines 2>&1 | head -n 60
	echo "--- hostfwdctl links"
	hostfwdctl links 2>&1
	echo "--- nmcli"
	nmcli -f NAME,UUID,TYPE,DEVICE,STATE con show 2>&1
	nmcli dev 2>&1
	ip -d -br link 2>&1
	ip -br addr 2>&1
	echo "--- journalctl -u NetworkManager (last 25)"
	journalctl -b -u NetworkManager --no-pager -n 25 -o short-monotonic 2>&1
	echo "--- end of diagnostics"
}

# --- the test network ------------------------------------------------------------
# veth0 is the bond's port; its peer veth0p sits in the namespace "sw" (the
# switch) with a VLAN 1000 subinterface, 10.100.0.2/24. A unit creates
# this before NetworkManager starts, on both boots, like a NIC that is
# there at boot; a udev rule has NetworkManager manage veth0 (its own rule
# leaves veth devices unmanaged).
setup_switch_unit() {
	cat >/etc/systemd/system/e2e-switch.service <<'EOF'
[Unit]
Description=e2e test: veth0 <-> switch namespace with VLAN 1000
DefaultDependencies=no
After=systemd-udevd.service
Before=NetworkManager.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -ec 'ip netns add sw; ip link add veth0 type veth peer name veth0p; ip link set veth0p netns sw; ip -n sw link set lo up; ip -n sw link set veth0p up; ip -n sw link add link veth0p name veth0p.1000 type vlan id 1000; ip -n sw addr add 10.100.0.2/24 dev veth0p.1000; ip -n sw link set veth0p.1000 up; ip link set veth0 up'

[Install]
WantedBy=multi-user.target
EOF
	echo 'ACTION=="add", SUBSYSTEM=="net", KERNEL=="veth0", ENV{NM_UNMANAGED}="0"' \
		>/etc/udev/rules.d/86-e2e-veth0-managed.rules
	# Servers: no automatic "Wired connection 1" (DHCP) on new NICs.
	printf '[main]\nno-auto-default=*\n' >/etc/NetworkManager/conf.d/90-e2e.conf
	udevadm control --reload
	nmcli general reload conf
	systemctl daemon-reload
	systemctl enable e2e-switch.service
}

POLICY_DIR=/var/tmp/e2e # readable by the unprivileged user
write_policies() {
	mkdir -p "$POLICY_DIR"
	chmod 755 "$POLICY_DIR"
	# Persisted by root: TCP/8080 in (ingress then denies everything
	# else except the failsafe ports, e.g. TCP/22).
	cat >"$POLICY_DIR/web.yaml" <<'EOF'
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata:
  name: e2e-web
spec:
  nodeSelector: {}
  ingress:
  - fromEntities:
    - world
    - cluster
    toPorts:
    - ports:
      - port: "8080"
        protocol: TCP
EOF
	# Applied at runtime by the unprivileged user.
	cat >"$POLICY_DIR/dns.yaml" <<'EOF'
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata:
  name: e2e-dns
spec:
  nodeSelector: {}
  ingress:
  - fromEntities:
    - all
    toPorts:
    - ports:
      - port: "53"
        protocol: UDP
EOF
	chmod 644 "$POLICY_DIR"/*.yaml
}

# --- boot 1 ------------------------------------------------------------------------

c_deb_install() {
	run dpkg -i /e2e/hostfwd.deb || { WHY="dpkg -i failed"; return 1; }
	local st
	st=$(dpkg-query -W -f '${Status}' hostfwd 2>&1)
	[ "$st" = "install ok installed" ] || { WHY="package state '$st'"; return 1; }
	getent group hostfwd >/dev/null || { WHY="no group 'hostfwd' after install"; return 1; }
	[ -f /etc/hostfwd/hostfwd.toml ] || { WHY="no /etc/hostfwd/hostfwd.toml"; return 1; }
	[ -x /usr/sbin/hostfwd ] && [ -x /usr/bin/hostfwdctl ] || { WHY="binaries missing"; return 1; }
	info "installed $(dpkg-query -W -f '${Package} ${Version}' hostfwd)"
}

c_not_started() {
	local load active enabled
	load=$(prop LoadState) active=$(systemctl is-active hostfwd 2>&1) enabled=$(systemctl is-enabled hostfwd 2>&1)
	echo "LoadState=$load is-active=$active is-enabled=$enabled" >"$OUT"
	[ "$load" = loaded ] || { WHY="unit not loaded after install (LoadState=$load)"; return 1; }
	[ "$active" != active ] && [ "$active" != activating ] || { WHY="the install started the unit ($active)"; return 1; }
	[ "$enabled" = disabled ] || { WHY="the install enabled the unit or it is odd (is-enabled: $enabled)"; return 1; }
	[ ! -d /sys/fs/bpf/hostfwd ] || { WHY="something is pinned in /sys/fs/bpf/hostfwd already"; return 1; }
}

c_enable_now() {
	run systemctl enable --now hostfwd || { WHY="systemctl enable --now failed"; return 1; }
	# Type=notify: start returned after READY=1, so it is active right now.
	local a
	a=$(systemctl is-active hostfwd)
	[ "$a" = active ] || { WHY="is-active right after start: $a"; return 1; }
	T_ACTIVE=$(date +%s)
	MAINPID=$(prop MainPID)
	echo "$T_ACTIVE $MAINPID" >"$ST/started"
	[ "$(systemctl is-enabled hostfwd)" = enabled ] || { WHY="not enabled"; return 1; }
}

c_notify() {
	local type status wd
	type=$(prop Type) status=$(prop StatusText) wd=$(prop WatchdogUSec)
	echo "Type=$type StatusText=$status WatchdogUSec=$wd" >"$OUT"
	info "StatusText: $status"
	[ "$type" = notify ] || { WHY="Type=$type"; return 1; }
	[ -n "$status" ] || { WHY="no STATUS= text from the daemon"; return 1; }
	[ -n "$wd" ] && [ "$wd" != 0 ] && [ "$wd" != infinity ] || { WHY="no watchdog configured (WatchdogUSec=$wd)"; return 1; }
}

c_busctl() {
	need_daemon || return 1
	run busctl --system introspect org.hostfwd.Firewall1 /org/hostfwd/Firewall1 || { WHY="busctl introspect failed"; return 1; }
	grep -q '^org\.hostfwd\.Firewall1\.Manager[[:space:]]*interface' "$OUT" || { WHY="no org.hostfwd.Firewall1.Manager interface"; return 1; }
}

c_status() {
	need_daemon || return 1
	run hostfwdctl status || { WHY="hostfwdctl status failed"; return 1; }
	sed 's/^/  /' "$OUT"
}

c_audit_default() {
	run hostfwdctl -o json status || { WHY="hostfwdctl -o json status failed"; return 1; }
	[ "$(jq -r .audit_mode "$OUT")" = true ] || { WHY="the shipped configuration does not start in audit mode"; return 1; }
}

c_hardening() {
	need_daemon || return 1
	local pid=$MAINPID s bad=""
	s=$(cat "/proc/$pid/status") || { WHY="no /proc/$pid/status"; return 1; }
	{
		grep -E '^(NoNewPrivs|Seccomp|CapBnd|CapEff):' <<<"$s"
		systemctl show hostfwd -p ProtectSystem -p ProtectHome -p PrivateTmp -p PrivateDevices \
			-p NoNewPrivileges -p CapabilityBoundingSet -p RestrictAddressFamilies -p RestrictNamespaces \
			-p SystemCallFilter -p MemoryDenyWriteExecute -p IPAddressDeny -p NRestarts 2>&1 | cut -c1-200
	} >"$OUT"
	grep -q '^NoNewPrivs:[[:space:]]*1$' <<<"$s" || bad="$bad NoNewPrivs"
	grep -q '^Seccomp:[[:space:]]*2$' <<<"$s" || bad="$bad Seccomp(filter)"
	# Bounding set = CAP_NET_ADMIN(12) CAP_PERFMON(38) CAP_BPF(39)
	local bnd
	bnd=$(sed -n 's/^CapBnd:[[:space:]]*//p' <<<"$s")
	[ "$bnd" = 000000c000001000 ] || bad="$bad CapBnd=$bnd(expected 000000c000001000)"
	[ "$(prop ProtectSystem)" = strict ] || bad="$bad ProtectSystem"
	[ "$(prop ProtectHome)" = yes ] || bad="$bad ProtectHome"
	# Every yes/no-style directive of the installed unit is in effect as
	# written (systemd 252 ignores keys it does not know, with a warning).
	local unit=/usr/lib/systemd/system/hostfwd.service k v got n=0
	while IFS='=' read -r k v; do
		case $v in yes | no | true | false | strict | full | read-only | invisible | noaccess | ptraceable | pid | all | native) ;; *) continue ;; esac
		case $v in true) v=yes ;; false) v=no ;; esac
		got=$(systemctl show -P "$k" hostfwd 2>/dev/null)
		[ "$got" = "$v" ] || bad="$bad $k=$v(systemd:'$got')"
		n=$((n + 1))
	done < <(sed -n '/^\[Service\]/,/^\[/{/^[A-Za-z]*=/p}' "$unit")
	local verify
	verify=$(systemd-analyze verify hostfwd.service 2>&1 | grep -i 'hostfwd\.service' | grep -Ei 'unknown|ignor|invalid|failed to parse|not supported')
	[ -z "$verify" ] || bad="$bad systemd-analyze-verify:[$verify]"
	# Inside its mount namespace: /usr read-only, the state and policy
	# directories and its bpffs directory writable, /root hidden.
	nsenter -t "$pid" -m -- touch /usr/lib/.e2e-probe 2>/dev/null && { bad="$bad /usr-writable"; rm -f /usr/lib/.e2e-probe; }
	nsenter -t "$pid" -m -- touch /etc/.e2e-probe 2>/dev/null && { bad="$bad /etc-writable"; rm -f /etc/.e2e-probe; }
	nsenter -t "$pid" -m -- touch /var/lib/hostfwd/.e2e-probe 2>/dev/null || bad="$bad /var/lib/hostfwd-not-writable"
	rm -f /var/lib/hostfwd/.e2e-probe
	nsenter -t "$pid" -m -- touch /etc/hostfwd/policies/.e2e-probe 2>/dev/null || bad="$bad /etc/hostfwd/policies-not-writable"
	rm -f /etc/hostfwd/policies/.e2e-probe
	# bpffs: only hostfwd's own directory is writable (bpffs names have no dots).
	nsenter -t "$pid" -m -- mkdir /sys/fs/bpf/e2eprobe 2>/dev/null && { bad="$bad /sys/fs/bpf-writable"; rmdir /sys/fs/bpf/e2eprobe; }
	if nsenter -t "$pid" -m -- mkdir /sys/fs/bpf/hostfwd/e2eprobe 2>/dev/null; then
		rmdir /sys/fs/bpf/hostfwd/e2eprobe
	else
		bad="$bad /sys/fs/bpf/hostfwd-not-writable"
	fi
	touch /root/.e2e-probe /tmp/.e2e-probe
	nsenter -t "$pid" -m -- test -e /root/.e2e-probe && bad="$bad /root-visible"
	nsenter -t "$pid" -m -- test -e /tmp/.e2e-probe && bad="$bad /tmp-shared"
	rm -f /root/.e2e-probe /tmp/.e2e-probe
	nsenter -t "$pid" -m -- test -e /dev/nvme0n1 && bad="$bad /dev/nvme0n1-visible"
	[ "$(prop NRestarts)" = 0 ] || bad="$bad NRestarts=$(prop NRestarts)"
	[ -z "$bad" ] || { WHY="sandbox:$bad"; return 1; }
	info "hardening: $n yes/no directives of the unit in effect; NoNewPrivs, seccomp, CapBnd, read-only /usr and /etc, writable state/policy/bpffs dirs, hidden /root, private /tmp and /dev checked in the daemon's namespace"
	echo "--- systemd-analyze security hostfwd"
	systemd-analyze security hostfwd --no-pager 2>&1 | sed 's/^/  /'
	info "$(systemd-analyze security hostfwd --no-pager 2>&1 | grep -i 'overall exposure')"
}

c_nm_bond_vlan() {
	setup_switch_unit >"$OUT" 2>&1 || { WHY="setting up the switch unit failed"; return 1; }
	run systemctl start e2e-switch.service || { WHY="creating veth0/switch failed"; return 1; }
	run nmcli con add type bond con-name bond0 ifname bond0 \
		bond.options mode=active-backup,miimon=100 ipv4.method disabled ipv6.method disabled \
		|| { WHY="nmcli con add bond0 failed"; return 1; }
	run nmcli con add type ethernet con-name bond0-port0 ifname veth0 slave-type bond master bond0 \
		|| { WHY="nmcli con add bond0-port0 failed"; return 1; }
	run nmcli con add type vlan con-name bond0.1000 ifname bond0.1000 dev bond0 id 1000 \
		ipv4.method manual ipv4.addresses 10.100.0.1/24 ipv6.method disabled \
		|| { WHY="nmcli con add bond0.1000 failed"; return 1; }
	# veth0 has carrier: NetworkManager activates everything by itself.
	wait_for 40 nm_all_up || { WHY="NetworkManager did not activate bond0, bond0-port0 and bond0.1000 within 40 s"; return 1; }
	ip -br addr show bond0.1000 | grep -q '10\.100\.0\.1/24' || { WHY="bond0.1000 has no 10.100.0.1/24"; return 1; }
	echo "$(ifindex bond0) $(ifindex bond0.1000)" >"$ST/ifindex1"
	info "bond0 ifindex $(ifindex bond0), bond0.1000 ifindex $(ifindex bond0.1000)"
}

# hostfwd's view: bond0.1000 enforced, bond0 a VLAN guard allowing 1000,
# the port ignored; the kernel holds exactly that at the current ifindexes.
attached_right() {
	local b v j
	b=$(ifindex bond0) v=$(ifindex bond0.1000)
	[ -n "$b" ] && [ -n "$v" ] || { echo "bond0/bond0.1000 missing"; return 1; }
	j=$(inspect_json) || return 1
	inspect_lines
	jq -e --argjson b "$b" --argjson v "$v" '
		([.attachments[] | select(.ifindex == $v and .direction == "ingress")] | length == 1) and
		([.attachments[] | select(.ifindex == $b and .direction == "ingress")] | length == 1) and
		([.vlans[] | select(.ifindex == $b and .vid == 1000)] | length == 1) and
		([.attachments[] | select(.name == "veth0")] | length == 0) and
		([.attachments[] | select(.name | startswith("#"))] | length == 0)' <<<"$j" >/dev/null || return 1
	local lb lv
	lb=$(link_json bond0) && lv=$(link_json bond0.1000) || return 1
	echo "$lb" "$lv"
	jq -e --argjson b "$b" '.ifindex == $b and .role == "vlan-guard" and (.allowed_vlans | index(1000) != null) and .attach_mode != ""' <<<"$lb" >/dev/null || return 1
	jq -e --argjson v "$v" '.ifindex == $v and .role == "enforce" and .attach_mode != ""' <<<"$lv" >/dev/null || return 1
	[ "$(jq -r .role <<<"$(link_json veth0)")" = ignored ] || return 1
}

c_attach() {
	need_daemon || return 1
	wait_for 30 attached_right || { WHY="within 30 s: expected bond0.1000 enforced and attached, bond0 vlan-guard attached with VID 1000 allowed, veth0 ignored, nothing on stale ifindexes"; return 1; }
	info "attach mode: $(jq -r .attach_mode <<<"$(link_json bond0.1000)")"
}

c_vlan_traffic() {
	local r
	r=$(tcp_probe 22)
	echo "tcp/22 over VLAN 1000: $r" >"$OUT"
	[ "$r" = refused ] || { WHY="TCP to 10.100.0.1:22 from the switch over VLAN 1000: $r (expected refused: the host answers)"; return 1; }
}

c_recreate() {
	need_daemon || return 1
	local b1 v1 b2 v2
	read -r b1 v1 <"$ST/ifindex1"
	run nmcli con down bond0 || { WHY="nmcli con down bond0 failed"; return 1; }
	run nmcli con up bond0 || { WHY="nmcli con up bond0 failed"; return 1; }
	wait_for 40 nm_all_up || { WHY="after con down/up, the connections did not all come back within 40 s"; return 1; }
	b2=$(ifindex bond0) v2=$(ifindex bond0.1000)
	info "re-created: bond0 $b1 -> $b2, bond0.1000 $v1 -> $v2"
	[ "$b2" != "$b1" ] && [ "$v2" != "$v1" ] || { WHY="NetworkManager kept the ifindexes ($b1/$v1 -> $b2/$v2): nothing was re-created"; return 1; }
	wait_for 30 attached_right || { WHY="within 30 s of the re-creation: not re-attached to bond0 $b2 / bond0.1000 $v2 with VID 1000"; return 1; }
	local r
	r=$(tcp_probe 22)
	[ "$r" = refused ] || { WHY="after re-creation, TCP/22 over VLAN 1000: $r"; return 1; }
}

c_nm_undisturbed() {
	# A little later, still all activated, and bond0.1000 fully connected.
	sleep 2
	nm_all_up >"$OUT" 2>&1 || { WHY="NetworkManager's connections are not all activated"; return 1; }
	local st
	st=$(nmcli -g GENERAL.STATE dev show bond0.1000 2>&1)
	[ "${st%% *}" = 100 ] || { WHY="bond0.1000 device state: $st"; return 1; }
	! journalctl -b -u NetworkManager --no-pager -p warning 2>/dev/null | grep -v dispatcher | grep -Eiq 'bond0|veth0' \
		|| { journalctl -b -u NetworkManager --no-pager -p warning | grep -v dispatcher >"$OUT"; WHY="NetworkManager warned about the topology"; return 1; }
}

c_reload() {
	need_daemon || return 1
	local since pid
	since=$(date +%s)
	pid=$(prop MainPID)
	sleep 1
	run systemctl reload hostfwd || { WHY="systemctl reload failed"; return 1; }
	[ "$(systemctl is-active hostfwd)" = active ] || { WHY="not active after reload"; return 1; }
	[ "$(prop MainPID)" = "$pid" ] || { WHY="the main PID changed ($pid -> $(prop MainPID))"; return 1; }
	wait_for 15 sh -c "journalctl -b _PID=$pid --since @$since --no-pager -o cat | grep -i reload" \
		|| { journalctl -b -u hostfwd --since "@$since" --no-pager -o short-monotonic >"$OUT"; WHY="the daemon logged no reload"; return 1; }
	info "reload logged: $(head -n 1 "$OUT")"
	wait_for 15 attached_right || { WHY="attachments not right after the reload"; return 1; }
}

c_polkit_denied() {
	need_daemon || return 1
	id tester >/dev/null 2>&1 || useradd -m -s /bin/bash tester
	write_policies
	# Reading is open to everybody.
	run runuser -u tester -- hostfwdctl status || { WHY="an unprivileged 'hostfwdctl status' failed"; return 1; }
	run runuser -u tester -- hostfwdctl --no-ask-password policy apply "$POLICY_DIR/dns.yaml" --name tester-runtime
	local rc=$?
	[ "$rc" = 4 ] || { WHY="expected exit status 4 (access denied), got $rc"; return 1; }
	if hostfwdctl -o json policy list | jq -e '.[] | select(.name == "tester-runtime")' >/dev/null; then
		WHY="refused, yet the policy is listed"
		return 1
	fi
}

c_polkit_group() {
	need_daemon || return 1
	run usermod -aG hostfwd tester || { WHY="usermod failed"; return 1; }
	run install -m 0644 /usr/share/doc/hostfwd/examples/50-hostfwd.rules /etc/polkit-1/rules.d/50-hostfwd.rules \
		|| { WHY="no example rule at /usr/share/doc/hostfwd/examples/50-hostfwd.rules"; return 1; }
	# polkitd notices new rules by itself (inotify): allow it a moment.
	wait_for 20 runuser -u tester -- hostfwdctl --no-ask-password policy apply "$POLICY_DIR/dns.yaml" --name tester-runtime \
		|| { WHY="a member of group hostfwd was still refused with the example rule installed"; return 1; }
	run hostfwdctl -o json policy list || { WHY="policy list failed"; return 1; }
	jq -e '.[] | select(.name == "tester-runtime")' "$OUT" >/dev/null || { WHY="tester-runtime not listed"; return 1; }
}

c_persist_policy() {
	need_daemon || return 1
	run hostfwdctl policy apply "$POLICY_DIR/web.yaml" --name e2e-web --persist || { WHY="apply --persist failed"; return 1; }
	run hostfwdctl -o json policy list || { WHY="policy list failed"; return 1; }
	jq -e '.[] | select(.name == "e2e-web")' "$OUT" >/dev/null || { WHY="e2e-web not listed"; return 1; }
	[ -f /etc/hostfwd/policies/e2e-web.yaml ] || [ -f /etc/hostfwd/policies/e2e-web.yml ] || { ls -la /etc/hostfwd/policies >"$OUT"; WHY="not saved in /etc/hostfwd/policies"; return 1; }
}

c_persist_audit() {
	need_daemon || return 1
	run hostfwdctl audit off --persist || { WHY="audit off --persist failed"; return 1; }
	run hostfwdctl audit on --link bond0 --persist || { WHY="audit on --link bond0 --persist failed"; return 1; }
	[ "$(hostfwdctl -o json status | jq -r .audit_mode)" = false ] || { WHY="global audit mode still on"; return 1; }
	[ "$(link_json bond0 | jq -r .audit_mode)" = true ] || { WHY="bond0's audit mode not on"; return 1; }
	[ "$(link_json bond0.1000 | jq -r .audit_mode)" = false ] || { WHY="bond0.1000's audit mode not off"; return 1; }
	[ "$(inspect_json | jq -r .audit)" = false ] || { WHY="the kernel's global audit flag is still set"; return 1; }
	wait_for 10 sh -c 'hostfwd inspect --lines | grep -Eq "^link bond0 .*audit"' || { WHY="the kernel's link flags of bond0 lack audit"; return 1; }
}

c_watchdog() {
	need_daemon || return 1
	local now left
	now=$(date +%s)
	left=$((T_ACTIVE + 62 - now))
	if [ "$left" -gt 0 ]; then
		info "waiting ${left}s more: the daemon runs a minute before the watchdog check"
		sleep "$left"
	fi
	local wd n pid
	wd=$(prop WatchdogUSec) n=$(prop NRestarts) pid=$(prop MainPID)
	echo "up $(($(date +%s) - T_ACTIVE))s WatchdogUSec=$wd NRestarts=$n MainPID=$pid (was $MAINPID)" >"$OUT"
	[ "$(systemctl is-active hostfwd)" = active ] || { WHY="not active"; return 1; }
	[ "$n" = 0 ] || { WHY="NRestarts=$n"; return 1; }
	[ "$pid" = "$MAINPID" ] || { WHY="MainPID changed: $MAINPID -> $pid"; return 1; }
	if journalctl -b -u hostfwd --no-pager -o cat | grep -i watchdog >"$OUT"; then
		WHY="the journal mentions the watchdog"
		return 1
	fi
}

boot1() {
	info "boot 1: install, enable, NetworkManager topology, polkit, reload, persisted state"
	unit_times NetworkManager.service dbus.service polkit.service multi-user.target
	check deb-install c_deb_install
	check unit-not-started-by-install c_not_started
	check enable-now c_enable_now
	check notify-ready c_notify
	check busctl-introspect c_busctl
	check hostfwdctl-status c_status
	check audit-default-on c_audit_default
	check hardening c_hardening
	check nm-bond-vlan c_nm_bond_vlan
	check attach-bond-vlan c_attach
	check vlan-traffic c_vlan_traffic
	check nm-recreate-reattach c_recreate
	check nm-undisturbed c_nm_undisturbed
	check reload c_reload
	check polkit-nonroot-denied c_polkit_denied
	check polkit-group-allowed c_polkit_group
	check persist-policy c_persist_policy
	check persist-audit c_persist_audit
	check watchdog-quiet c_watchdog
	[ "$FAILS" = 0 ] || diagnostics
	echo 2 >"$ST/boot"
	info "boot 1 checks took $(($(date +%s) - T_SCRIPT))s; rebooting"
	touch /run/hostfwd-e2e.reboot
}

# --- boot 2 ------------------------------------------------------------------------

c_b2_active() {
	local a
	wait_for 30 sh -c '[ "$(systemctl is-active hostfwd)" = active ]' || { systemctl status --no-pager hostfwd >"$OUT" 2>&1; WHY="hostfwd not active after the reboot ($(systemctl is-active hostfwd))"; return 1; }
	a=$(systemctl is-enabled hostfwd)
	[ "$a" = enabled ] || { WHY="is-enabled: $a"; return 1; }
	[ "$(prop NRestarts)" = 0 ] || { WHY="NRestarts=$(prop NRestarts)"; return 1; }
	MAINPID=$(prop MainPID)
	# Started before NetworkManager (ordered before network-pre.target).
	local h n
	h=$(prop ExecMainStartTimestampMonotonic) n=$(systemctl show -P ExecMainStartTimestampMonotonic NetworkManager)
	echo "hostfwd started at ${h}us, NetworkManager at ${n}us (monotonic)" >"$OUT"
	[ -n "$h" ] && [ -n "$n" ] && [ "$h" -lt "$n" ] || { WHY="hostfwd did not start before NetworkManager"; return 1; }
}

c_b2_nm() {
	wait_for 40 nm_all_up || { WHY="NetworkManager did not bring bond0, bond0-port0 and bond0.1000 up at boot"; return 1; }
	info "after reboot: bond0 ifindex $(ifindex bond0), bond0.1000 ifindex $(ifindex bond0.1000)"
}

c_b2_attached() {
	need_daemon || return 1
	wait_for 30 attached_right || { WHY="after the reboot: expected bond0.1000 enforced, bond0 vlan-guard with VID 1000, at the current ifindexes"; return 1; }
}

c_b2_policy() {
	need_daemon || return 1
	run hostfwdctl -o json policy list || { WHY="policy list failed"; return 1; }
	jq -e '.[] | select(.name == "e2e-web")' "$OUT" >/dev/null || { WHY="the persisted policy e2e-web is gone"; return 1; }
	if jq -e '.[] | select(.name == "tester-runtime")' "$OUT" >/dev/null; then
		WHY="the runtime policy tester-runtime survived the reboot"
		return 1
	fi
}

c_b2_audit() {
	need_daemon || return 1
	local g l v
	g=$(hostfwdctl -o json status | jq -r .audit_mode)
	l=$(link_json bond0 | jq -r .audit_mode)
	v=$(link_json bond0.1000 | jq -r .audit_mode)
	echo "global=$g bond0=$l bond0.1000=$v" >"$OUT"
	[ "$g" = false ] && [ "$l" = true ] && [ "$v" = false ] || { WHY="audit state after reboot: global=$g bond0=$l bond0.1000=$v (expected false/true/false)"; return 1; }
	[ "$(inspect_json | jq -r .audit)" = false ] || { WHY="the kernel's global audit flag is set"; return 1; }
	inspect_lines | grep -Eq '^link bond0 .*audit' || { inspect_lines >"$OUT"; WHY="the kernel's link flags of bond0 lack audit"; return 1; }
}

c_b2_enforce() {
	need_daemon || return 1
	local p22 p8080 p9999
	p22=$(tcp_probe 22) p8080=$(tcp_probe 8080) p9999=$(tcp_probe 9999)
	echo "over VLAN 1000 to 10.100.0.1: tcp/22 $p22, tcp/8080 $p8080, tcp/9999 $p9999" >"$OUT"
	[ "$p22" = refused ] && [ "$p8080" = refused ] && [ "$p9999" = timeout ] \
		|| { WHY="expected tcp/22 refused (failsafe), tcp/8080 refused (allowed), tcp/9999 timeout (dropped): $(cat "$OUT")"; return 1; }
	inspect_lines | grep -E '^drop bond0\.1000 ingress policy-denied enforced [1-9]' >"$OUT" \
		|| { inspect_lines >"$OUT"; WHY="no enforced policy-denied drop counted on bond0.1000"; return 1; }
}

c_purge() {
	run dpkg --purge hostfwd || { WHY="dpkg --purge failed"; return 1; }
	local left=""
	[ -e /usr/sbin/hostfwd ] && left="$left /usr/sbin/hostfwd"
	[ -e /usr/bin/hostfwdctl ] && left="$left /usr/bin/hostfwdctl"
	[ -e /usr/lib/systemd/system/hostfwd.service ] && left="$left unit"
	[ -e /etc/hostfwd/hostfwd.toml ] && left="$left /etc/hostfwd/hostfwd.toml"
	[ -e /var/lib/hostfwd ] && left="$left /var/lib/hostfwd"
	[ -e /etc/systemd/system/multi-user.target.wants/hostfwd.service ] && left="$left enable-link"
	[ -d /sys/fs/bpf/hostfwd ] && [ -n "$(ls -A /sys/fs/bpf/hostfwd 2>/dev/null)" ] && left="$left pins"
	pidof hostfwd >/dev/null && left="$left process"
	local load
	load=$(systemctl show -P LoadState hostfwd 2>/dev/null)
	[ "$load" = not-found ] || left="$left LoadState=$load"
	[ -z "$left" ] || { WHY="left behind:$left"; return 1; }
	nm_all_up >"$OUT" || { WHY="NetworkManager's connections went down during the purge"; return 1; }
	# Nothing filters any more: the port that was dropped answers.
	local p
	p=$(tcp_probe 9999)
	[ "$p" = refused ] || { WHY="after the purge, TCP/9999 over VLAN 1000: $p (expected refused: nothing attached)"; return 1; }
}

# When units became active (monotonic seconds), for the timing picture.
unit_times() {
	local u t out=""
	for u in "$@"; do
		t=$(systemctl show -P ActiveEnterTimestampMonotonic "$u" 2>/dev/null)
		out="$out $u=$(awk -v t="${t:-0}" 'BEGIN { printf "%.1fs", t / 1e6 }')"
	done
	info "active at:$out"
}

boot2() {
	info "boot 2: after the reboot"
	unit_times hostfwd.service e2e-switch.service NetworkManager.service dbus.service polkit.service multi-user.target
	check boot2-enabled-active c_b2_active
	check boot2-nm-up c_b2_nm
	check boot2-attached c_b2_attached
	check boot2-policy c_b2_policy
	check boot2-audit c_b2_audit
	check boot2-enforce c_b2_enforce
	[ "$FAILS" = 0 ] || diagnostics
	check deb-purge c_purge
	echo "done" >"$ST/boot"
	info "boot 2 checks took $(($(date +%s) - T_SCRIPT))s"
	echo "E2E DONE"
}

BOOT=$(cat "$ST/boot" 2>/dev/null || echo 1)
case $BOOT in
	1) boot1 ;;
	2) boot2 ;;
	*) echo "E2E FAIL harness: this image ran both boots already (state '$BOOT')" ;;
esac
exit 0
