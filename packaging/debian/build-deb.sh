#!/bin/sh
# build-deb.sh ROOT OUTDIR VERSION -- turns a staged `make install` tree into wshub's .deb.
#
# `make deb` stages the files with `make install DESTDIR=ROOT PREFIX=/usr` and calls this script,
# which does what debhelper would for a package this small, with dpkg's own tools only:
#   strip the binaries and gzip the man pages (Debian policy), write a changelog.Debian.gz;
#   compute Depends with dpkg-shlibdeps from the binaries' real NEEDED entries, then add what
#     no ELF header shows: libwebsockets-evlib-ev (lws dlopen()s its libev event-loop plugin
#     when the worker creates its context) and adduser (postinst);
#   list every file under /etc as a conffile, write md5sums for the others;
#   copy the maintainer scripts and build with dpkg-deb --root-owner-group.
# The package file is OUTDIR/wshub_VERSION-1_ARCH.deb; its path is printed last.
set -eu

root=$1
out=$2
version=$3
here=$(cd "$(dirname "$0")" && pwd)
arch=$(dpkg --print-architecture)
pkgver="$version-1"
deb="$out/wshub_${pkgver}_${arch}.deb"

for b in wshub wshub-worker wshub-admin wshubctl; do
    strip --strip-unneeded --remove-section=.comment --remove-section=.note "$root/usr/sbin/$b"
done
gzip -9n "$root"/usr/share/man/man*/*
when=$(date -R -u -d @"${SOURCE_DATE_EPOCH:-$(date +%s)}")
printf 'wshub (%s) unstable; urgency=medium\n\n  * Built by %s.\n\n -- %s  %s\n' \
    "$pkgver" "make deb" "wshub maintainers <wshub@localhost>" "$when" |
    gzip -9n > "$root/usr/share/doc/wshub/changelog.Debian.gz"

# dpkg-shlibdeps wants a debian/control naming the package; give it a scratch one.
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
mkdir "$scratch/debian"
printf 'Source: wshub\n\nPackage: wshub\nArchitecture: any\n' > "$scratch/debian/control"
sbin="$root/usr/sbin"
shlibs=$(cd "$scratch" && dpkg-shlibdeps -O -e"$sbin/wshub" -e"$sbin/wshub-worker" \
    -e"$sbin/wshub-admin" -e"$sbin/wshubctl" 2>"$scratch/warnings" |
    sed -n 's/^shlibs:Depends=//p')
grep -v "binaries to analyze should already be installed" "$scratch/warnings" >&2 || true
if [ -z "$shlibs" ]; then
    echo "build-deb.sh: dpkg-shlibdeps found no dependencies" >&2
    exit 1
fi
depends="$shlibs, libwebsockets-evlib-ev, adduser"

mkdir -p "$root/DEBIAN"
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e "s|@VERSION@|$pkgver|" -e "s|@ARCH@|$arch|" -e "s|@SIZE@|$size|" \
    -e "s|@DEPENDS@|$depends|" "$here/control.in" > "$root/DEBIAN/control"
(cd "$root" && find etc -type f | sort | sed 's|^|/|') > "$root/DEBIAN/conffiles"
(cd "$root" && find . -path ./DEBIAN -prune -o -path ./etc -prune -o -type f -print | sort |
    sed 's|^\./||' | xargs md5sum) > "$root/DEBIAN/md5sums"
for s in postinst prerm postrm; do
    install -m 0755 "$here/$s" "$root/DEBIAN/$s"
done

dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >&2
echo "$deb"
