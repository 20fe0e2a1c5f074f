#!/usr/bin/env bash
# build-rootfs.sh — the Debian guest image of the end-to-end test: a
# debootstrap'ed bookworm (minbase + tests/vm/debian/packages) with the
# 6.12 cloud kernel's modules and the test runner unit, as an ext4 image
# that the kernel mounts directly (NVMe and ext4 are built into the cloud
# kernels: no initramfs).
#
# Usage: tests/vm/debian/build-rootfs.sh [--force] [--kernel 6.12]
#   Prints the path of the image (read-only use: copy it per boot) on stdout.
#   Needs root (debootstrap, chroot) unless the image is already cached.
#   The kernel must be cached already (tests/vm/fetch-kernels.sh 6.12).
#
# Cache (HOSTFWD_VM_CACHE, default /var/cache/hostfwd-vm):
#   CACHE/debian-<key>/root.img    the image (sparse, 1.5 GiB, ~330 MB used)
#   CACHE/debian-<key>/info        what went in (packages, kernel, mirror)
#   CACHE/debian-<key>/.complete   stamp, written last
#   CACHE/debootstrap-debs/        downloaded .debs, kept across keys
#   CACHE/.debian.lock             flock for concurrent runs
# <key> hashes this script, the package list, the runner unit and script,
# and the kernel release and package: change any of them and the next run
# builds a new image (about a minute); stale images are removed after an
# hour of disuse.
#
# Environment:
#   HOSTFWD_VM_CACHE    cache directory
#   HOSTFWD_VM_MIRROR   Debian mirror for debootstrap (default: the URI of
#                       the host's apt source for bookworm, else
#                       http://deb.debian.org/debian)
set -euo pipefail

prog=${0##*/}
die() { echo "$prog: error: $*" >&2; exit 1; }
info() { echo "$prog: $*" >&2; }

HERE=$(cd "$(dirname "$0")" && pwd -P)
CACHE=${HOSTFWD_VM_CACHE:-/var/cache/hostfwd-vm}
SUITE=bookworm
SERIES=6.12
FORCE=0
while (($#)); do
    case $1 in
        --force) FORCE=1 ;;
        --kernel) SERIES=${2:?--kernel needs 6.1 or 6.12}; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument '$1'" ;;
    esac
    shift
done

KDIR=$CACHE/$SERIES
[[ -f $KDIR/.complete && -f $KDIR/version && -f $KDIR/modules-dir ]] \
    || die "kernel $SERIES not in $KDIR (run tests/vm/fetch-kernels.sh $SERIES first)"
KVER=$(cat "$KDIR/version")
KMODDIR=$(cat "$KDIR/modules-dir")
[[ -d $KMODDIR ]] || die "$KMODDIR missing (re-run tests/vm/fetch-kernels.sh --force $SERIES)"

mapfile -t PKGS < <(sed 's/#.*//; s/[[:space:]]//g; /^$/d' "$HERE/packages")
((${#PKGS[@]})) || die "$HERE/packages lists no package"

key=$( {
    sha256sum "$0" "$HERE/packages" "$HERE/hostfwd-e2e.service" "$HERE/runner.sh" | cut -d' ' -f1
    echo "$SUITE $KVER $(cat "$KDIR/package")"
} | sha256sum | cut -c1-16)
OUT=$CACHE/debian-$key
IMG=$OUT/root.img

if ((!FORCE)) && [[ -f $OUT/.complete && -s $IMG ]]; then
    touch "$OUT" 2>/dev/null || true
    echo "$IMG"
    exit 0
fi

[[ $(id -u) == 0 ]] || die "must run as root to build the image (debootstrap, chroot); $IMG is not cached yet"
for t in debootstrap mkfs.ext4 chroot flock sha256sum; do
    command -v "$t" >/dev/null || die "'$t' not found (install: apt-get install -y debootstrap e2fsprogs coreutils util-linux)"
done

mkdir -p "$CACHE/debootstrap-debs"
exec 9>"$CACHE/.debian.lock"
flock 9 || die "cannot lock $CACHE/.debian.lock"
# Someone else may have built it while we waited.
if ((!FORCE)) && [[ -f $OUT/.complete && -s $IMG ]]; then
    echo "$IMG"
    exit 0
fi

# --- mirror -------------------------------------------------------------------

mirror() {
    [[ -n ${HOSTFWD_VM_MIRROR:-} ]] && { echo "$HOSTFWD_VM_MIRROR"; return; }
    local f uri
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -f $f ]] || continue
        uri=$(awk -v s="$SUITE" '
            BEGIN { RS=""; FS="\n" }
            {
                ok=0; deb=0; off=0; u=""
                for (i=1;i<=NF;i++) {
                    if ($i ~ /^Suites:/) { n=split(substr($i,8),a,/[ \t]+/); for(j=1;j<=n;j++) if (a[j]==s) ok=1 }
                    if ($i ~ /^Types:/ && $i ~ /[ \t]deb([ \t]|$)/) deb=1
                    if ($i ~ /^Enabled:[ \t]*no/) off=1
                    if ($i ~ /^URIs:/) { split(substr($i,6),x,/[ \t]+/); for (k in x) if (x[k]!="") { u=x[k]; break } }
                }
                if (ok && deb && !off && u!="") { print u; exit }
            }' "$f")
        [[ -n $uri ]] && { echo "$uri"; return; }
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -f $f ]] || continue
        uri=$(sed -nE "s/^[[:space:]]*deb[[:space:]]+(\[[^]]*\][[:space:]]+)?([^[:space:]]+)[[:space:]]+$SUITE([[:space:]].*)?$/\2/p" "$f" | head -n1)
        [[ -n $uri ]] && { echo "$uri"; return; }
    done
    echo http://deb.debian.org/debian
}
MIRROR=$(mirror)

# --- build --------------------------------------------------------------------

WORK=$(mktemp -d "$CACHE/.debian-build.XXXXXX")
cleanup() {
    local m
    # never leave anything mounted inside the build tree
    awk -v w="$WORK/" 'index($2, w) == 1 { print $2 }' /proc/self/mounts | sort -r | while read -r m; do
        umount -l "$m" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
R=$WORK/root
# The tree lives in memory (~350 MB): debootstrap's many small writes and the
# final removal cost nothing there; only the image goes to disk.
mkdir -p "$R"
mount -t tmpfs -o size=2g,mode=0755 hostfwd-e2e-build "$R" || info "no tmpfs for the build tree (building on disk)"
t0=$(date +%s)
info "debootstrap $SUITE from $MIRROR (+${#PKGS[@]} packages) into $R"
include=$(IFS=,; echo "${PKGS[*]}")
# dpkg without fsync (the tree is copied into an image anyway): much faster.
mkdir -p "$R/etc/dpkg/dpkg.cfg.d"
echo force-unsafe-io >"$R/etc/dpkg/dpkg.cfg.d/hostfwd-e2e-unsafe-io"
if ! debootstrap --variant=minbase --include="$include" --cache-dir="$CACHE/debootstrap-debs" \
        "$SUITE" "$R" "$MIRROR" >"$WORK/debootstrap.log" 2>&1; then
    tail -n 40 "$WORK/debootstrap.log" >&2
    [[ -f $R/debootstrap/debootstrap.log ]] && tail -n 40 "$R/debootstrap/debootstrap.log" >&2
    die "debootstrap failed (mirror $MIRROR; set HOSTFWD_VM_MIRROR to use another)"
fi
info "debootstrap took $(($(date +%s) - t0)) s"

rm -f "$R/etc/dpkg/dpkg.cfg.d/hostfwd-e2e-unsafe-io"

# Kernel modules (bonding, 8021q, veth, ...) for the kernel we boot.
mkdir -p "$R/usr/lib/modules"
cp -a "$KMODDIR" "$R/usr/lib/modules/$KVER"
chroot "$R" depmod -a "$KVER"

# No fstab: the kernel mounts the root read-write (root=/dev/nvme0n1 rw).
echo "# hostfwd e2e guest: root is mounted by the kernel" >"$R/etc/fstab"
echo hostfwd-e2e >"$R/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\thostfwd-e2e\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$R/etc/hosts"
# A machine id, so that the first boot is not a "first boot" (no firstboot
# prompts, presets not applied).
chroot "$R" systemd-machine-id-setup >/dev/null
# Units that cost boot time and do nothing for the test.
for u in getty@.service serial-getty@.service console-getty.service \
         apt-daily.timer apt-daily-upgrade.timer apt-daily.service apt-daily-upgrade.service \
         e2scrub_all.timer e2scrub_reap.service fstrim.timer man-db.timer dpkg-db-backup.timer \
         systemd-timesyncd.service logrotate.timer NetworkManager-wait-online.service; do
    ln -sfn /dev/null "$R/etc/systemd/system/$u"
done
# A persistent journal (the second boot can read the first one), not on the console.
mkdir -p "$R/etc/systemd/journald.conf.d"
printf '[Journal]\nStorage=persistent\nForwardToConsole=no\n' >"$R/etc/systemd/journald.conf.d/e2e.conf"
mkdir -p "$R/var/log/journal"
# The test runner.
install -D -m 0755 "$HERE/runner.sh" "$R/usr/local/lib/hostfwd-e2e/runner"
install -D -m 0644 "$HERE/hostfwd-e2e.service" "$R/etc/systemd/system/hostfwd-e2e.service"
mkdir -p "$R/etc/systemd/system/multi-user.target.wants"
ln -sfn ../hostfwd-e2e.service "$R/etc/systemd/system/multi-user.target.wants/hostfwd-e2e.service"
# Smaller image, no stale package lists.
rm -rf "$R"/var/cache/apt/*.bin "$R"/var/cache/apt/archives/*.deb "$R"/var/lib/apt/lists/* "$R/debootstrap"
{
    echo "suite $SUITE"
    echo "mirror $MIRROR"
    echo "kernel $KVER ($(cat "$KDIR/package"))"
    echo "packages ${PKGS[*]}"
    echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ) in $(($(date +%s) - t0)) s"
    # shellcheck disable=SC2016  # dpkg-query's format
    chroot "$R" dpkg-query -W -f '${Package} ${Version}\n'
} >"$WORK/info"

rm -f "$WORK/root.img"
truncate -s 1536M "$WORK/root.img"
mkfs.ext4 -q -F -L hostfwd-e2e -d "$R" "$WORK/root.img" || die "mkfs.ext4 -d failed"
used=$(du -m "$WORK/root.img" | cut -f1)

rm -rf "$OUT"
mkdir -p "$OUT"
mv "$WORK/info" "$OUT/info"
mv "$WORK/root.img" "$IMG"
touch "$OUT/.complete"
info "image $IMG (${used} MB used) built in $(($(date +%s) - t0)) s"
# Images of other keys unused for an hour are stale.
find "$CACHE" -maxdepth 1 -name 'debian-*' -type d ! -name "debian-$key" -mmin +60 -exec rm -rf {} + 2>/dev/null || true
echo "$IMG"
