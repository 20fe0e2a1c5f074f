# Shared helpers of the guest scenario scripts (sourced; POSIX sh).
# Every check prints what was expected and what the kernel showed.

export PATH="/payload:$PATH"
LOG=/tmp/hostfwd.log
STATE=/tmp/inspect.txt

inspect() {
	hostfwd inspect --lines >"$STATE" 2>/tmp/inspect.err || { cat /tmp/inspect.err; return 1; }
}

# has LINE: the last inspection holds this exact line.
has() { grep -qx "$1" "$STATE"; }

show() {
	echo "--- kernel state (hostfwd inspect):"
	cat "$STATE"
	echo "--- daemon log (tail):"
	tail -n 30 "$LOG" 2>/dev/null || true
}

fail() {
	echo "FAIL: $*"
	show
	exit 1
}

# wait_state SECONDS DESCRIPTION CONDITION...: re-inspects until the shell
# condition holds (evaluated with the fresh state).
wait_state() {
	secs=$1
	what=$2
	shift 2
	end=$(($(date +%s) + secs))
	while :; do
		inspect || true
		if eval "$*"; then
			echo "ok: $what"
			return 0
		fi
		[ "$(date +%s)" -ge "$end" ] && fail "$what: expected ($*) within ${secs}s"
		sleep 0.3
	done
}

# expect_rc RC DESCRIPTION COMMAND...
expect_rc() {
	want=$1
	what=$2
	shift 2
	set +e
	out=$("$@" 2>&1)
	rc=$?
	set -e
	[ "$rc" = "$want" ] || fail "$what: expected exit $want, got $rc: $out"
	echo "ok: $what"
}

start_daemon() {
	hostfwd run >>"$LOG" 2>&1 &
	DAEMON=$!
	echo "daemon pid $DAEMON"
}

stop_daemon() {
	kill "$DAEMON" 2>/dev/null || true
	wait "$DAEMON" 2>/dev/null || true
}

mac_of() { cat "/sys/class/net/$1/address"; }

count_lines() { grep -c "$1" "$STATE" || true; }

# Milliseconds since boot (busybox date has no %N).
ms() { awk '{ printf "%d\n", $1 * 1000 }' /proc/uptime; }
