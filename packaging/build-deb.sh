#!/bin/bash
# Build the tsyncd .deb from the working tree and copy it to OUTDIR.
#
#   packaging/build-deb.sh OUTDIR
#
# The tree (git-tracked files plus untracked files git does not ignore) is copied to a
# temporary directory, packaging/debian becomes debian/, the systemd files (tsyncd.service,
# tsyncd-wait.service, sysusers, tmpfiles) are placed where
# dh_installsystemd/dh_installsysusers/dh_installtmpfiles look for them, and
# `dpkg-buildpackage -us -uc -b` builds an unsigned binary package. Build output goes to
# stderr; the last line on stdout is the path of the copied .deb.
#
# Needs (Debian 12): dpkg-dev debhelper dh-python pybuild-plugin-pyproject python3-all
# python3-setuptools git. Missing tools or build dependencies are an error, never a skip.
set -euo pipefail

die() {
	echo "build-deb.sh: $*" >&2
	exit 1
}

[ $# -eq 1 ] || die "usage: $0 OUTDIR"
mkdir -p -- "$1"
outdir=$(cd -- "$1" && pwd)

for tool in git tar dpkg-buildpackage dpkg-parsechangelog dh pybuild; do
	command -v "$tool" >/dev/null 2>&1 ||
		die "missing '$tool'; apt-get install build-essential dpkg-dev debhelper dh-python pybuild-plugin-pyproject python3-all python3-setuptools git"
done

repo=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
[ -d "$repo/packaging/debian" ] || die "no packaging/debian under $repo"
[ ! -e "$repo/debian" ] || die "$repo/debian exists; packaging/debian is the only source of truth"

for f in systemd/tsyncd.service systemd/tsyncd-wait.service systemd/tsyncd.sysusers systemd/tsyncd.tmpfiles etc/tsyncd.toml; do
	[ -f "$repo/$f" ] || die "missing $f (it is packaged)"
done

# The package version must be the Python version, or /usr/bin/tsyncd --version would lie.
deb_version=$(dpkg-parsechangelog -l "$repo/packaging/debian/changelog" -S Version)
py_version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$repo/tsyncd/__init__.py")
[ "$deb_version" = "$py_version" ] ||
	die "packaging/debian/changelog says $deb_version but tsyncd.__version__ is $py_version"

work=$(mktemp -d "${TMPDIR:-/tmp}/tsyncd-deb.XXXXXX")
trap 'rm -rf -- "$work"' EXIT
src="$work/tsyncd-$deb_version"
mkdir -- "$src"

# -c lists the index (a file deleted but not yet staged is still listed, hence
# --ignore-failed-read); -o --exclude-standard adds untracked files .gitignore keeps.
git -C "$repo" ls-files -z -c -o --exclude-standard |
	tar -C "$repo" --null --files-from=- --ignore-failed-read -cf - 2>/dev/null |
	tar -C "$src" -xf -

cp -a -- "$repo/packaging/debian" "$src/debian"
cp -- "$repo/systemd/tsyncd.service" "$src/debian/tsyncd.service"
# A second unit of package tsyncd: debhelper finds it as debian/tsyncd.tsyncd-wait.service.
cp -- "$repo/systemd/tsyncd-wait.service" "$src/debian/tsyncd.tsyncd-wait.service"
cp -- "$repo/systemd/tsyncd.sysusers" "$src/debian/tsyncd.sysusers"
cp -- "$repo/systemd/tsyncd.tmpfiles" "$src/debian/tsyncd.tmpfiles"

# Debian's own interpreter and tools only: a pyenv/venv python first on PATH, or a
# PYTHONPATH, must not leak into the package.
(
	cd -- "$src"
	env -u PYTHONPATH -u PYTHONHOME -u PYTHONSTARTUP -u VIRTUAL_ENV \
		PATH=/usr/sbin:/usr/bin:/sbin:/bin DEB_BUILD_OPTIONS=nocheck \
		dpkg-buildpackage -us -uc -b
) >&2 || die "dpkg-buildpackage failed (output above)"

shopt -s nullglob
debs=("$work"/tsyncd_"$deb_version"_*.deb)
[ ${#debs[@]} -eq 1 ] || die "expected one tsyncd_${deb_version}_*.deb, found ${#debs[@]}"
cp -- "${debs[0]}" "$outdir/"
echo "$outdir/$(basename -- "${debs[0]}")"
