#!/bin/sh
# /usr/local/lib/hostfwd-e2e/runner in the guest image (hostfwd-e2e.service).
# Runs the injected /e2e/run.sh (by its #! line) with a time limit, then
# powers the guest off or, if the script created /run/hostfwd-e2e.reboot,
# reboots it (qemu runs with -no-reboot: the harness boots the same image
# again). Every line the harness reads starts with "E2E ".
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 SYSTEMD_PAGER="" SYSTEMD_COLORS=0
read -r up _ </proc/uptime
echo "E2E BOOT uptime=${up}s kernel=$(uname -r)"
if [ -f /e2e/run.sh ]; then
	chmod +x /e2e/run.sh
	timeout -k 10 "${HOSTFWD_E2E_GUEST_TIMEOUT:-900}" /e2e/run.sh </dev/null 2>&1
	rc=$?
	[ "$rc" = 0 ] || echo "E2E FAIL runner: /e2e/run.sh exited with status $rc"
else
	echo "E2E FAIL runner: no /e2e/run.sh in the image"
fi
sync
if [ -e /run/hostfwd-e2e.reboot ]; then
	echo "E2E REBOOTING"
	systemctl --no-block reboot
else
	echo "E2E POWEROFF"
	systemctl --no-block poweroff
fi
