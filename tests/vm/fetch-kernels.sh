#!/usr/bin/env bash
# fetch-kernels.sh — make the Debian cloud kernels used by the VM tests
# available in a cache directory outside the repository.
#
# Usage: tests/vm/fetch-kernels.sh [--force] [--offline] [6.1|6.12 ...]
#   (no series given = both).  Needs root (apt, /etc/apt/sources.list.d).
#   --force    re-extract even if the cache looks complete (a cached .deb is
#              reused)
#   --offline  do not ask apt at all; just check that the cache is complete
#
# Environment:
#   HOSTFWD_VM_CACHE    cache directory (default /var/cache/hostfwd-vm)
#   HOSTFWD_VM_OFFLINE  1 = --offline
#
# Kernels:
#   6.1   the current bookworm cloud kernel: the linux-image-6.1.*-cloud-amd64
#         package that the metapackage linux-image-cloud-amd64 depends on
#         (bookworm / bookworm-security).  Legacy tc only.
#   6.12  the cloud kernel from bookworm-backports: the package that
#         linux-image-cloud-amd64/bookworm-backports depends on.  Has tcx.
#         The backports suite is added, if no apt source has it yet, as
#         /etc/apt/sources.list.d/hostfwd-vm-backports.{sources,list} using
#         the mirror URI (and format) of the existing bookworm source; only
#         that source is refreshed with `apt-get update`, and only when its
#         package list is missing.
#
# Cache layout (CACHE = $HOSTFWD_VM_CACHE):
#   CACHE/debs/<package>_<version>_amd64.deb   downloaded packages (kept)
#   CACHE/<series>/root/                       `dpkg -x` of the package,
#                                              plus modules.dep etc. from
#                                              `depmod -b root VERSION`
#   CACHE/<series>/vmlinuz                     symlink to root/boot/vmlinuz-VERSION
#   CACHE/<series>/version                     one line: kernel release
#                                              (uname -r), e.g. 6.1.0-56-cloud-amd64
#   CACHE/<series>/modules-dir                 one line: absolute path of
#                                              root/lib/modules/VERSION
#   CACHE/<series>/package                     one line: "<package> <deb version>"
#   CACHE/<series>/.complete                   stamp, written last
#   CACHE/<series>/initramfs-base-*.cpio       written by run-guest.sh (cached
#                                              busybox/modules/ip/tc/bpftool part)
#   CACHE/.lock                                flock for concurrent runs
#
# A warm run (cache complete, resolved package unchanged) downloads nothing
# and runs no `apt-get update`; it only asks the local apt cache which
# package is current (about 1 s).  When the mirror has a newer kernel (and
# the lists know it), the next run fetches it and replaces the cached one.
# If apt cannot resolve the package (no network, lists cleaned) but the cache
# is complete, the cached kernel is used with a warning.
set -euo pipefail

prog=${0##*/}
die() { echo "$prog: error: $*" >&2; exit 1; }
info() { echo "$prog: $*" >&2; }

CACHE=${HOSTFWD_VM_CACHE:-/var/cache/hostfwd-vm}
FORCE=0
OFFLINE=${HOSTFWD_VM_OFFLINE:-0}
SERIES=()
while (($#)); do
    case $1 in
        --force) FORCE=1 ;;
        --offline) OFFLINE=1 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        6.1|6.12) SERIES+=("$1") ;;
        *) die "unknown argument '$1' (expected 6.1, 6.12, --force, --offline)" ;;
    esac
    shift
done
((${#SERIES[@]})) || SERIES=(6.1 6.12)

[[ $(id -u) == 0 ]] || die "must run as root (uses apt-get and writes $CACHE)"
for t in apt-get apt-cache dpkg depmod flock; do
    command -v "$t" >/dev/null || die "'$t' not found (install: apt-get install -y apt dpkg kmod util-linux)"
done

ARCH=$(dpkg --print-architecture)
[[ $ARCH == amd64 ]] || die "only amd64 is supported (host is $ARCH)"
CODENAME=bookworm
BACKPORTS=$CODENAME-backports
OUR_SOURCES=/etc/apt/sources.list.d/hostfwd-vm-backports.sources
OUR_LIST=/etc/apt/sources.list.d/hostfwd-vm-backports.list

mkdir -p "$CACHE/debs"
exec 9>"$CACHE/.lock"
flock 9 || die "cannot lock $CACHE/.lock"

# --- apt sources --------------------------------------------------------------

# All apt source files apt reads (deb822 *.sources and one-line *.list).
apt_source_files() {
    local f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        [[ -f $f ]] && echo "$f"
    done
}

# Is some enabled apt source already providing $BACKPORTS?
backports_configured() {
    local f
    while read -r f; do
        if [[ $f == *.sources ]]; then
            # deb822: a stanza whose Suites contains the suite and that is not Enabled: no
            awk -v s="$BACKPORTS" '
                BEGIN { RS=""; FS="\n"; found=0 }
                {
                    suites=0; disabled=0
                    for (i=1;i<=NF;i++) {
                        if ($i ~ /^Suites:/) { n=split(substr($i,8),a,/[ \t]+/); for(j=1;j<=n;j++) if (a[j]==s) suites=1 }
                        if ($i ~ /^Enabled:[ \t]*no/) disabled=1
                    }
                    if (suites && !disabled) found=1
                }
                END { exit !found }' "$f" && return 0
        else
            grep -Eq "^[[:space:]]*deb[[:space:]]+(\[[^]]*\][[:space:]]+)?[^[:space:]]+[[:space:]]+$BACKPORTS([[:space:]]|$)" "$f" && return 0
        fi
    done < <(apt_source_files)
    return 1
}

# Writes our backports source, copying mirror URI (and Signed-By / options)
# from the existing source for the plain $CODENAME suite.
add_backports_source() {
    local f uri signed opts line
    # Prefer deb822 if the bookworm suite is defined that way.
    while read -r f; do
        [[ $f == *.sources ]] || continue
        # Print "URI<TAB>Signed-By" of the first enabled deb stanza with Suites containing $CODENAME.
        line=$(awk -v s="$CODENAME" '
            BEGIN { RS=""; FS="\n" }
            {
                suites=0; deb=0; disabled=0; uri=""; sb=""
                for (i=1;i<=NF;i++) {
                    if ($i ~ /^Suites:/) { n=split(substr($i,8),a,/[ \t]+/); for(j=1;j<=n;j++) if (a[j]==s) suites=1 }
                    if ($i ~ /^Types:/ && $i ~ /[ \t]deb([ \t]|$)/) deb=1
                    if ($i ~ /^Enabled:[ \t]*no/) disabled=1
                    if ($i ~ /^URIs:/) { split(substr($i,6),u,/[ \t]+/); for (k in u) if (u[k]!="") { uri=u[k]; break } }
                    if ($i ~ /^Signed-By:/) { sb=substr($i,11); gsub(/^[ \t]+/,"",sb) }
                }
                if (suites && deb && !disabled && uri!="") { print uri "\t" sb; exit }
            }' "$f")
        if [[ -n $line ]]; then
            uri=${line%%$'\t'*}
            signed=${line#*$'\t'}
            info "adding $BACKPORTS (deb822, mirror $uri from $f) as $OUR_SOURCES"
            {
                echo "# Added by hostfwd tests/vm/fetch-kernels.sh: 6.12 cloud kernel for VM tests."
                echo "Types: deb"
                echo "URIs: $uri"
                echo "Suites: $BACKPORTS"
                echo "Components: main"
                [[ -n $signed ]] && echo "Signed-By: $signed"
            } >"$OUR_SOURCES"
            return 0
        fi
    done < <(apt_source_files)
    # One-line format: "deb [opts] URI bookworm comp..."
    while read -r f; do
        [[ $f == *.list ]] || [[ $f == /etc/apt/sources.list ]] || continue
        line=$(grep -E "^[[:space:]]*deb[[:space:]]+(\[[^]]*\][[:space:]]+)?[^[:space:]]+[[:space:]]+$CODENAME([[:space:]]|$)" "$f" | head -n1 || true)
        if [[ -n $line ]]; then
            opts=$(sed -nE 's/^[[:space:]]*deb[[:space:]]+(\[[^]]*\])[[:space:]].*/\1/p' <<<"$line")
            uri=$(sed -E 's/^[[:space:]]*deb[[:space:]]+(\[[^]]*\][[:space:]]+)?//' <<<"$line" | awk '{print $1}')
            info "adding $BACKPORTS (one-line format, mirror $uri from $f) as $OUR_LIST"
            {
                echo "# Added by hostfwd tests/vm/fetch-kernels.sh: 6.12 cloud kernel for VM tests."
                echo "deb ${opts:+$opts }$uri $BACKPORTS main"
            } >"$OUR_LIST"
            return 0
        fi
    done < <(apt_source_files)
    die "no apt source for '$CODENAME' found in /etc/apt/sources.list*; cannot derive a mirror for $BACKPORTS"
}

# Refresh only our backports source (or, if backports came from elsewhere, everything).
apt_update_backports() {
    local src
    if [[ -f $OUR_SOURCES ]]; then src=$OUR_SOURCES
    elif [[ -f $OUR_LIST ]]; then src=$OUR_LIST
    else src=""
    fi
    if [[ -n $src ]]; then
        info "apt-get update (only $src)"
        apt-get update -q -o Dir::Etc::SourceList="$src" -o Dir::Etc::SourceParts=/dev/null \
            -o APT::Get::List-Cleanup=0 >&2 || die "apt-get update for $BACKPORTS failed"
    else
        info "apt-get update"
        apt-get update -q >&2 || die "apt-get update failed"
    fi
}

# --- resolving packages -------------------------------------------------------
# Uses only the local apt cache.  (apt-cache is ~0.5 s per call here because
# the image disables apt's binary cache, so calls are batched.)

DEPENDS_OUT=""
refresh_depends() {
    DEPENDS_OUT=$(apt-cache depends linux-image-cloud-amd64 "linux-image-cloud-amd64/$BACKPORTS" 2>/dev/null || true)
}

# image_pkg SERIES -> the linux-image-SERIES.*-cloud-amd64 package that a
# linux-image-cloud-amd64 version (the candidate, or the backports one) depends on.
image_pkg() {
    sed -nE "s/^[[:space:]]*Depends:[[:space:]]*(linux-image-${1//./\\.}\.[^[:space:]]*-cloud-amd64)([[:space:]].*)?$/\1/p" \
        <<<"$DEPENDS_OUT" | head -n1
}

# candidate_versions PKG... -> "PKG VERSION" lines (one apt-cache call).
candidate_versions() {
    apt-cache policy "$@" 2>/dev/null | awk '
        /^[^ ].*:$/ { pkg=substr($0,1,length($0)-1) }
        /^  Candidate:/ { if ($2 != "(none)") print pkg, $2 }'
}

# --- fetching -------------------------------------------------------------------

cache_ok() {
    local dir=$1 want=$2
    [[ -f $dir/.complete && -f $dir/package && -e $dir/vmlinuz && -f $dir/version && -f $dir/modules-dir ]] || return 1
    [[ $(cat "$dir/package") == "$want" ]] || return 1
    [[ -f $(cat "$dir/modules-dir")/modules.dep ]]
}

download() {
    local pkg=$1 ver=$2 deb=$CACHE/debs/${1}_${2//:/%3a}_$ARCH.deb
    if [[ -s $deb ]] && dpkg-deb --info "$deb" >/dev/null 2>&1; then
        echo "$deb"; return 0
    fi
    local tmp; tmp=$(mktemp -d "$CACHE/debs/.dl.XXXXXX")
    # _apt must be able to write the target dir, otherwise apt warns and downloads unsandboxed.
    chmod 755 "$tmp"; chown _apt "$tmp" 2>/dev/null || true
    info "downloading $pkg=$ver"
    if ! (cd "$tmp" && apt-get download -q "$pkg=$ver" >&2); then
        info "download failed; refreshing package lists and retrying once"
        rm -rf "$tmp"; return 2
    fi
    local got; got=$(ls "$tmp"/*.deb 2>/dev/null | head -n1)
    [[ -n $got ]] || { rm -rf "$tmp"; die "apt-get download produced no .deb for $pkg"; }
    mv "$got" "$deb"; rm -rf "$tmp"
    echo "$deb"
}

# fetch_series SERIES "PKG VERSION"
fetch_series() {
    local series=$1 res=$2 dir=$CACHE/$1 pkg ver deb kver moddir img rc d
    read -r pkg ver <<<"$res"
    if ((!FORCE)) && cache_ok "$dir" "$res"; then
        info "$series: cached $pkg $ver"
        return 0
    fi
    rc=0; deb=$(download "$pkg" "$ver") || rc=$?
    if ((rc == 2)); then
        # The lists are stale (version gone from the mirror): refresh and re-resolve.
        if [[ $series == 6.12 ]]; then apt_update_backports; else info "apt-get update"; apt-get update -q >&2; fi
        refresh_depends
        pkg=$(image_pkg "$series"); [[ -n $pkg ]] || die "cannot resolve the $series kernel after apt-get update"
        res=$(candidate_versions "$pkg" | head -n1); [[ -n $res ]] || die "no candidate version for $pkg"
        read -r pkg ver <<<"$res"
        deb=$(download "$pkg" "$ver") || die "apt-get download $pkg=$ver failed"
    elif ((rc)); then
        exit "$rc"
    fi
    info "$series: extracting $(basename "$deb")"
    rm -rf "$dir.new"; mkdir -p "$dir.new"
    dpkg -x "$deb" "$dir.new/root"
    # Modules live in lib/modules (bookworm) or usr/lib/modules (newer packaging).
    moddir=""
    for d in "$dir.new/root/lib/modules/"* "$dir.new/root/usr/lib/modules/"*; do
        [[ -d $d ]] && { moddir=$d; break; }
    done
    [[ -n $moddir ]] || die "$pkg contains no lib/modules/<version>"
    kver=${moddir##*/}
    if [[ $moddir == "$dir.new/root/usr/lib/modules/$kver" && ! -e $dir.new/root/lib/modules ]]; then
        mkdir -p "$dir.new/root/lib"; ln -s ../usr/lib/modules "$dir.new/root/lib/modules"
    fi
    img=$dir.new/root/boot/vmlinuz-$kver
    [[ -f $img ]] || die "$pkg contains no boot/vmlinuz-$kver"
    depmod -b "$dir.new/root" "$kver" || die "depmod -b $dir.new/root $kver failed"
    # Swap in (the small files hold paths of the final location).
    rm -rf "$dir.old"; if [[ -e $dir ]]; then mv "$dir" "$dir.old"; fi
    mv "$dir.new" "$dir"; rm -rf "$dir.old"
    ln -sfn "root/boot/vmlinuz-$kver" "$dir/vmlinuz"
    echo "$kver" >"$dir/version"
    if [[ -L $dir/root/lib/modules ]]; then echo "$dir/root/usr/lib/modules/$kver" >"$dir/modules-dir"
    else echo "$dir/root/lib/modules/$kver" >"$dir/modules-dir"
    fi
    echo "$pkg $ver" >"$dir/package"
    touch "$dir/.complete"
    info "$series: installed $pkg $ver"
}

complete() { [[ -f $CACHE/$1/.complete && -f $CACHE/$1/package ]]; }

if ((OFFLINE)); then
    for s in "${SERIES[@]}"; do
        complete "$s" || die "--offline: kernel $s is not in $CACHE yet"
        info "$s: cached $(cat "$CACHE/$s/package") (offline, not checked against apt)"
    done
else
    want_612=0; want_61=0
    for s in "${SERIES[@]}"; do [[ $s == 6.12 ]] && want_612=1; [[ $s == 6.1 ]] && want_61=1; done
    if ((want_612)); then
        backports_configured || add_backports_source
    fi
    refresh_depends
    # Refresh package lists only when the local apt cache cannot answer.
    if ((want_612)) && [[ -z $(image_pkg 6.12) ]]; then
        apt_update_backports || info "warning: apt-get update for $BACKPORTS failed"
        refresh_depends
    fi
    if ((want_61)) && [[ -z $(image_pkg 6.1) ]]; then
        info "apt-get update"; apt-get update -q >&2 || info "warning: apt-get update failed"
        refresh_depends
    fi
    declare -A PKG=() RES=()
    for s in "${SERIES[@]}"; do PKG[$s]=$(image_pkg "$s"); done
    while read -r p v; do
        for s in "${SERIES[@]}"; do [[ ${PKG[$s]} == "$p" ]] && RES[$s]="$p $v"; done
    done < <(candidate_versions "${PKG[@]}")
    for s in "${SERIES[@]}"; do
        if [[ -z ${RES[$s]:-} ]]; then
            # apt cannot tell (no network, lists cleaned): a complete cache is good enough.
            if complete "$s"; then
                info "warning: cannot resolve the current $s cloud kernel with apt; using the cached $(cat "$CACHE/$s/package")"
                continue
            fi
            if [[ -z ${PKG[$s]} ]]; then
                meta=linux-image-cloud-amd64; [[ $s == 6.12 ]] && meta+=/$BACKPORTS
                die "cannot resolve the $s cloud kernel: no linux-image-$s.*-cloud-amd64 among the dependencies of $meta (see: apt-cache policy linux-image-cloud-amd64)"
            fi
            die "no installable version of ${PKG[$s]} in the apt cache"
        fi
        fetch_series "$s" "${RES[$s]}"
    done
fi

echo "kernel cache: $CACHE"
for s in "${SERIES[@]}"; do
    d=$CACHE/$s
    printf '  %-5s %s (%s)\n        vmlinuz: %s\n        modules: %s\n' \
        "$s" "$(cat "$d/version")" "$(cat "$d/package")" "$(readlink -f "$d/vmlinuz")" "$(cat "$d/modules-dir")"
done
