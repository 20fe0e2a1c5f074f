#!/bin/sh
# Turns a `make install DESTDIR=ROOT` tree into a .deb with dpkg-deb (no
# debhelper, no cargo-deb: CI stays fast and needs nothing beyond dpkg).
# Called by `make deb`:
#
#   packaging/debian/build-deb.sh ROOT VERSION ARCH OUT.deb
#
# It strips the binaries (the unstripped ones stay in target/release),
# compresses man pages, adds copyright, changelog, control, md5sums and the
# maintainer scripts, and builds OUT.deb owned by root:root.
set -eu

[ $# -eq 4 ] || { echo "usage: $0 ROOT VERSION ARCH OUT.deb" >&2; exit 2; }
root=$1 version=$2 arch=$3 out=$4
here=$(cd "$(dirname "$0")" && pwd)
maintainer=${DEB_MAINTAINER:-hostfwd developers <hostfwd@example.org>}
doc=$root/usr/share/doc/hostfwd

[ -x "$root/usr/sbin/hostfwd" ] || { echo "$0: $root is not an install tree" >&2; exit 1; }
[ -n "$version" ] || { echo "$0: no version" >&2; exit 1; }

# Binaries: as dh_strip does (symbols and debug info out).
for b in "$root/usr/sbin/hostfwd" "$root/usr/bin/hostfwdctl"; do
	strip --strip-unneeded --remove-section=.comment --remove-section=.note "$b"
done

# Man pages and the changelog compressed, reproducibly (-n: no name/time).
find "$root/usr/share/man" -type f -name '*.[0-9]' -exec gzip -9n {} +

# Debian policy: copyright and changelog in the doc directory.
# Build time: SOURCE_DATE_EPOCH, else the last commit (reproducible).
epoch=${SOURCE_DATE_EPOCH:-$(git -C "$here" log -1 --format=%ct 2>/dev/null || date +%s)}
cat >"$doc/copyright" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: hostfwd

Files: *
Copyright: $(date -u -d "@$epoch" +%Y) hostfwd authors
License: GPL-2.0-only
 On Debian systems, the full text of the GNU General Public License
 version 2 can be found in the file /usr/share/common-licenses/GPL-2.
EOF
# A native package (no Debian revision): changelog.gz.
date=$(date -u -R -d "@$epoch")
cat >"$doc/changelog" <<EOF
hostfwd ($version) unstable; urgency=medium

  * Built from the source tree with make deb.

 -- $maintainer  $date
EOF
gzip -9nf "$doc/changelog"

# Shared-library dependencies: computed when dpkg-dev is there, else the
# result of dpkg-shlibdeps on Debian 12 (amd64).
shlibs="libc6 (>= 2.34), libelf1 (>= 0.144), libgcc-s1 (>= 4.2), zlib1g (>= 1:1.2.3.3)"
if command -v dpkg-shlibdeps >/dev/null 2>&1; then
	tmp=$(mktemp -d)
	mkdir "$tmp/debian"
	printf 'Source: hostfwd\n\nPackage: hostfwd\nArchitecture: any\n' >"$tmp/debian/control"
	abs=$(cd "$root" && pwd)
	if computed=$(cd "$tmp" && dpkg-shlibdeps -O "$abs/usr/sbin/hostfwd" "$abs/usr/bin/hostfwdctl" 2>/dev/null); then
		shlibs=${computed#shlibs:Depends=}
	fi
	rm -rf "$tmp"
fi

install -D -m 0644 "$here/lintian-overrides" "$root/usr/share/lintian/overrides/hostfwd"

chmod 0755 "$root"
mkdir -p "$root/DEBIAN"
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e "s|@VERSION@|$version|" -e "s|@ARCH@|$arch|" -e "s|@MAINTAINER@|$maintainer|" \
	-e "s|@INSTALLED_SIZE@|$size|" -e "s|@SHLIBS_DEPENDS@|$shlibs|" \
	"$here/control.in" >"$root/DEBIAN/control"
install -m 0644 "$here/conffiles" "$root/DEBIAN/conffiles"
for s in postinst prerm postrm; do
	install -m 0755 "$here/$s" "$root/DEBIAN/$s"
done
# md5sums of everything but the conffiles (dpkg keeps those itself).
(cd "$root" && find . -path ./DEBIAN -prune -o -path ./etc -prune -o -type f -print |
	sed 's|^\./||' | LC_ALL=C sort | xargs -r md5sum) >"$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/md5sums"

mkdir -p "$(dirname "$out")"
dpkg-deb --root-owner-group -Zxz --build "$root" "$out" >/dev/null
