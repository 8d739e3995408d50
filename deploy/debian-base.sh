#!/usr/bin/env bash
# Lays out a base file system like gcr.io/distroless/cc-debian12:nonroot
# (glibc, libgcc, libstdc++, libgomp, time zones, CA certificates, a
# nonroot user 65532) into OUT from this machine's installed Debian 12
# packages, for building Nereid's image where no registry is reachable
# (deploy/build-oci.sh). Docs, manuals and locales are left out, as in
# distroless.
#
# usage: deploy/debian-base.sh OUT
set -euo pipefail
if [[ $# -ne 1 ]]; then
	echo "usage: deploy/debian-base.sh OUT" >&2
	exit 2
fi
out=$1
. /etc/os-release
if [[ ${ID:-} != debian || ${VERSION_ID:-} != 12 ]]; then
	echo "debian-base.sh: needs Debian 12 (this is ${PRETTY_NAME:-unknown}): the image's base is Debian 12" >&2
	exit 1
fi
required=(libc6 libgcc-s1 libstdc++6)
optional=(libgomp1 tzdata netbase base-files)
for p in "${required[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
		{ echo "debian-base.sh: package $p is not installed" >&2; exit 1; }
done
pkgs=("${required[@]}")
for p in "${optional[@]}"; do
	if dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then pkgs+=("$p"); fi
done

mkdir -p "$out"/{etc,home/nonroot,root,tmp,usr/bin,usr/lib,usr/lib64,usr/sbin,var/lib/dpkg/status.d}
# Debian 12's merged /usr.
for d in bin lib lib64 sbin; do ln -sfn "usr/$d" "$out/$d"; done
list=$(mktemp)
trap 'rm -f "$list"' EXIT
for p in "${pkgs[@]}"; do
	dpkg-query -L "$p" | while read -r f; do
		case $f in
		/usr/share/doc/* | /usr/share/man/* | /usr/share/info/* | /usr/share/lintian/* | /usr/share/locale/* | /usr/share/gcc/*) continue ;;
		esac
		if [[ -L $f || -f $f ]]; then echo "${f#/}"; fi
	done
	# distroless keeps each package's status for scanners.
	dpkg-query -s "$p" >"$out/var/lib/dpkg/status.d/$p"
done >"$list"
# Paths through /lib or /bin land in usr/ by the links above.
tar -C / --no-recursion -cf - -T "$list" | tar -C "$out" --keep-directory-symlink -xf -
if [[ -f /etc/ssl/certs/ca-certificates.crt ]]; then
	mkdir -p "$out/etc/ssl/certs"
	cp /etc/ssl/certs/ca-certificates.crt "$out/etc/ssl/certs/"
fi
cat >"$out/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
PASSWD
cat >"$out/etc/group" <<'GROUP'
root:x:0:
nogroup:x:65534:
nonroot:x:65532:
GROUP
chmod 1777 "$out/tmp"
chmod 0700 "$out/root"
