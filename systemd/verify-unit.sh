#!/usr/bin/env bash
# Verifies systemd/upkeep.service as shipped, before any package is installed
# and without root: `systemd-analyze verify --root` on a scratch root that
# holds the unmodified unit, the given upkeep binary at /usr/bin/upkeep, its
# man page (from `upkeep man`, so Documentation=man:upkeep(1) is checked),
# /bin/kill for ExecReload=, and a copy of this host's system units (for
# multi-user.target, network-online.target, ...).
# Passes only if systemd-analyze prints nothing at all and exits 0.
#
# Usage: systemd/verify-unit.sh PATH/TO/upkeep
# (packaging/test-deb.sh checks the installed unit the same way after dpkg -i.)
set -euo pipefail

die() {
    echo "verify-unit: FAIL: $*" >&2
    exit 1
}

[ $# -eq 1 ] || die "usage: $0 PATH/TO/upkeep"
bin=$1
[ -x "$bin" ] || die "$bin is not an executable"
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
unit=$here/upkeep.service
command -v systemd-analyze >/dev/null 2>&1 || die "systemd-analyze not found (Debian package: systemd)"

host_units=
for d in /usr/lib/systemd/system /lib/systemd/system; do
    if [ -f "$d/multi-user.target" ]; then
        host_units=$d
        break
    fi
done
[ -n "$host_units" ] || die "no system units on this host (multi-user.target not found)"

root=$(mktemp -d "${TMPDIR:-/tmp}/upkeep-verify.XXXXXX")
trap 'rm -rf -- "$root"' EXIT
# A merged-/usr layout, like Debian >= 12: /bin and /lib are links into /usr.
mkdir -p "$root/usr/bin" "$root/usr/lib/systemd" "$root/usr/share/man/man1" "$root/etc"
ln -s usr/bin "$root/bin"
ln -s usr/lib "$root/lib"
cp -a "$host_units" "$root/usr/lib/systemd/system"
install -m 0644 "$unit" "$root/lib/systemd/system/upkeep.service"
install -m 0755 "$bin" "$root/usr/bin/upkeep"
# ExecReload= runs /bin/kill (procps), not the shell builtin.
[ -x /bin/kill ] || die "/bin/kill not found (Debian package: procps)"
install -m 0755 /bin/kill "$root/usr/bin/kill"
man_page=$("$bin" man) || die "'$bin man' failed"
grep -q '^\.TH ' <<<"$man_page" || die "'$bin man' printed no roff page (.TH missing)"
printf '%s\n' "$man_page" | gzip -9n >"$root/usr/share/man/man1/upkeep.1.gz"

man_opt=--man=yes
if ! command -v man >/dev/null 2>&1; then
    echo "verify-unit: note: 'man' is not installed, Documentation=man:upkeep(1) is not checked" >&2
    man_opt=--man=no
fi
out=$(MANPATH=$root/usr/share/man systemd-analyze verify "$man_opt" --root="$root" upkeep.service 2>&1) ||
    die "systemd-analyze verify failed:"$'\n'"$out"
[ -z "$out" ] || die "systemd-analyze verify printed:"$'\n'"$out"
echo "verify-unit: ok: systemd-analyze verify printed nothing for $unit"
