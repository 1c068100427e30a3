#!/usr/bin/env bash
# End-to-end test of the Debian package, as root, on a Debian host:
#   build (packaging/build-deb.sh) -> dpkg -i -> files, modes, dpkg -L,
#   conffile, md5sums -> the installed binary: --version, man page,
#   `check` of the kubeadm fixtures and of the example config ->
#   systemd-analyze verify of the INSTALLED unit (must print nothing) ->
#   reinstall keeps a locally edited conffile -> dpkg --purge -> all gone
#   except /var/log/upkeep (kept on purge by design).
# Never starts upkeep (postinst does not start it; this script checks that).
#
# Usage (as root): packaging/test-deb.sh       [CARGO_TARGET_DIR honoured]
# Exits non-zero with "test-deb: FAIL: ..." on the first failure.
set -euo pipefail
umask 022

fail() {
    echo "test-deb: FAIL: $*" >&2
    exit 1
}
step() { echo "test-deb: $*" >&2; }

[ "$(id -u)" -eq 0 ] || fail "must run as root (it installs and purges the package)"
for tool in dpkg dpkg-deb dpkg-query systemd-analyze readelf zcat cmp flock; do
    command -v "$tool" >/dev/null 2>&1 || fail "'$tool' is required"
done

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
fixtures=$repo/tests/fixtures/manifests
[ -d "$fixtures" ] || fail "fixtures not found at $fixtures (they are part of the repository)"

# One package test at a time on a machine: another clone's run of the suite
# installs and purges the same package. Wait for it (up to 30 min) rather
# than fail or, worse, purge its installation.
mkdir -p /run/lock
exec 9>/run/lock/upkeep-test-deb.lock
step "waiting for any other package test on this machine"
flock -w 1800 9 || fail "another packaging/test-deb.sh held /run/lock/upkeep-test-deb.lock for 30 min"

if dpkg-query -W -f='${Status}' upkeep 2>/dev/null | grep -q 'installed'; then
    fail "upkeep is already installed on this machine; refusing to replace and purge it"
fi
had_log_dir=no
log_dir_before=
if [ -e /var/log/upkeep ]; then
    had_log_dir=yes
    log_dir_before=$(stat -c '%a %U %G' /var/log/upkeep)
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/upkeep-test-deb.XXXXXX")
installed=no
cleanup() {
    local rc=$?
    if [ "$installed" = yes ]; then
        dpkg --purge upkeep >/dev/null 2>&1 || true
    fi
    if [ "$had_log_dir" = no ]; then
        rm -rf /var/log/upkeep
    else
        rm -f /var/log/upkeep/test-deb.log
    fi
    rm -rf -- "$work"
    exit "$rc"
}
trap cleanup EXIT

# --- build ----------------------------------------------------------------------
step "building the package"
"$here/build-deb.sh" >"$work/build.out" || fail "build-deb.sh failed (output above)"
deb=$(tail -n 1 "$work/build.out")
[ -f "$deb" ] || fail "build-deb.sh's last line is not a file: '$deb'"
case $(basename "$deb") in
upkeep_*_"$(dpkg --print-architecture)".deb) ;;
*) fail "unexpected package file name $(basename "$deb")" ;;
esac
cargo_version=$(awk '/^\[/ { s = ($0 == "[workspace.package]"); next }
    s && /^version *=/ { gsub(/.*= *"|".*/, ""); print; exit }' "$repo/Cargo.toml")
[ "$(dpkg-deb -f "$deb" Package)" = upkeep ] || fail "Package field is not 'upkeep'"
[ "$(dpkg-deb -f "$deb" Version)" = "${cargo_version/-/\~}" ] ||
    fail "Version $(dpkg-deb -f "$deb" Version) does not match Cargo's $cargo_version"
dpkg-deb -f "$deb" Depends | grep -q 'libc6 (>= ' || fail "Depends lacks libc6"

# --- install ------------------------------------------------------------------------
step "dpkg -i $deb"
installed=yes
dpkg -i "$deb" >"$work/dpkg-i.out" 2>&1 || { cat "$work/dpkg-i.out" >&2; fail "dpkg -i failed"; }
dpkg-query -W -f='${Status}' upkeep | grep -q '^install ok installed$' || fail "dpkg does not report upkeep installed"

expect_file() { # path mode
    [ -f "$1" ] || fail "$1 is missing after install"
    local mode
    mode=$(stat -c '%a %U:%G' "$1")
    [ "$mode" = "$2 root:root" ] || fail "$1 has mode/owner '$mode', expected '$2 root:root'"
}
expect_file /usr/bin/upkeep 755
expect_file /lib/systemd/system/upkeep.service 644
expect_file /etc/upkeep/upkeep.toml 644
expect_file /usr/share/man/man1/upkeep.1.gz 644
expect_file /usr/share/bash-completion/completions/upkeep 644
expect_file /usr/share/zsh/vendor-completions/_upkeep 644
expect_file /usr/share/fish/vendor_completions.d/upkeep.fish 644
expect_file /usr/share/doc/upkeep/copyright 644
# The documents operations.md points to.
for f in operations.md.gz migrating-from-monit.md.gz kubeadm.md.gz metrics.md.gz \
    examples/alerts.yml examples/grafana-dashboard.json examples/kubeadm-upkeep.toml \
    examples/kubeadm-kubelet-config-patch.yaml examples/kubeadm-README.md; do
    expect_file "/usr/share/doc/upkeep/$f" 644
done
cmp -s /lib/systemd/system/upkeep.service "$repo/systemd/upkeep.service" || fail "installed unit differs from systemd/upkeep.service"
cmp -s /etc/upkeep/upkeep.toml "$here/upkeep.toml" || fail "installed config differs from packaging/upkeep.toml"
[ "$(stat -c '%a %U' /var/lib/upkeep)" = "700 root" ] || fail "/var/lib/upkeep is not 0700 root"
# postinst creates /var/log/upkeep 0750 root (group adm where it exists) and
# leaves an existing directory as the operator set it.
if [ "$had_log_dir" = no ]; then
    [ "$(stat -c '%a %U' /var/log/upkeep)" = "750 root" ] || fail "/var/log/upkeep is not 0750 root"
else
    [ "$(stat -c '%a %U %G' /var/log/upkeep)" = "$log_dir_before" ] ||
        fail "postinst changed the existing /var/log/upkeep ($log_dir_before -> $(stat -c '%a %U %G' /var/log/upkeep))"
fi
if readelf -S /usr/bin/upkeep | grep -q '\.symtab'; then
    fail "/usr/bin/upkeep is not stripped"
fi

listed=$(dpkg -L upkeep)
for p in /usr/bin/upkeep /lib/systemd/system/upkeep.service /etc/upkeep/upkeep.toml \
    /usr/share/man/man1/upkeep.1.gz /usr/share/bash-completion/completions/upkeep \
    /usr/share/zsh/vendor-completions/_upkeep /usr/share/fish/vendor_completions.d/upkeep.fish \
    /usr/share/doc/upkeep/copyright; do
    grep -qxF "$p" <<<"$listed" || fail "dpkg -L upkeep does not list $p"
done
dpkg-query -W -f='${Conffiles}\n' upkeep | grep -q '^ /etc/upkeep/upkeep.toml [0-9a-f]\{32\}$' ||
    fail "/etc/upkeep/upkeep.toml is not registered as a conffile"
verify_out=$(dpkg --verify upkeep 2>&1) || true
[ -z "$verify_out" ] || fail "dpkg --verify upkeep reports:"$'\n'"$verify_out"
if [ -d /run/systemd/system ] && systemctl is-active --quiet upkeep; then
    fail "upkeep was started by the installation; the package must not start it"
fi

# --- the installed binary -----------------------------------------------------------
step "running the installed binary"
version_out=$(/usr/bin/upkeep --version) || fail "upkeep --version failed"
[ "$version_out" = "upkeep $cargo_version" ] || fail "upkeep --version printed '$version_out', expected 'upkeep $cargo_version'"
if command -v man >/dev/null 2>&1; then
    [ "$(man -w upkeep 2>/dev/null)" = /usr/share/man/man1/upkeep.1.gz ] || fail "man -w upkeep does not find the installed page"
fi
zcat /usr/share/man/man1/upkeep.1.gz | grep -q '^\.TH ' || fail "the man page has no .TH header"
bash -n /usr/share/bash-completion/completions/upkeep || fail "the bash completion has syntax errors"

# The kubeadm static Pods as kubeadm writes them: files 0600 in a 0700 dir.
manifests=$work/manifests
install -d -m 0700 "$manifests"
for f in etcd kube-apiserver kube-controller-manager kube-scheduler; do
    install -m 0600 "$fixtures/kubeadm-v1.29-$f.yaml" "$manifests/$f.yaml"
done
if ! /usr/bin/upkeep check --config /etc/upkeep/upkeep.toml --manifests "$manifests" >"$work/check.out" 2>&1; then
    cat "$work/check.out" >&2
    fail "upkeep check of the default config + kubeadm manifests did not exit 0"
fi
if ! /usr/bin/upkeep check --config "$repo/examples/kubeadm/upkeep.toml" --manifests "$manifests" >"$work/check2.out" 2>&1; then
    cat "$work/check2.out" >&2
    fail "upkeep check of examples/kubeadm/upkeep.toml + kubeadm manifests did not exit 0"
fi
# The shipped config documents every key commented out. (a) Uncommenting
# everything (every key, the [images] entries and all three services) must
# still be a valid config, so a renamed or removed key cannot rot there;
# (b) uncommenting only the daemon keys must render exactly what the empty
# file renders, so the values shown really are the built-in defaults.
awk 'inarr { print substr($0, 2); if ($0 ~ /^#\]/) inarr = 0; next }
     /^#[A-Za-z\["]/ { line = substr($0, 2); print line; if (line ~ /\[[[:space:]]*$/) inarr = 1; next }
     { print }' /etc/upkeep/upkeep.toml >"$work/all.toml"
grep -q '^\[services\.kubelet\]' "$work/all.toml" || fail "uncommenting the shipped config found no [services.kubelet]"
if ! /usr/bin/upkeep check --config "$work/all.toml" --manifests "$manifests" >"$work/check-all.out" 2>&1; then
    cat "$work/check-all.out" >&2
    fail "the shipped config with every key uncommented does not pass upkeep check"
fi
awk '/^\[images\]/ { exit } /^#node_name/ { print; next } /^#[A-Za-z\["]/ { print substr($0, 2); next } { print }' \
    /etc/upkeep/upkeep.toml >"$work/defaults.toml"
grep -q '^initial = ' "$work/defaults.toml" ||
    fail "uncommenting the daemon keys of the shipped config found no [defaults.backoff] initial"
/usr/bin/upkeep render -o json --config /etc/upkeep/upkeep.toml --manifests "$manifests" >"$work/render-shipped.json" 2>/dev/null ||
    fail "upkeep render -o json with the shipped config failed"
/usr/bin/upkeep render -o json --config "$work/defaults.toml" --manifests "$manifests" >"$work/render-defaults.json" 2>/dev/null ||
    fail "upkeep render -o json with the uncommented defaults failed"
[ -s "$work/render-shipped.json" ] || fail "upkeep render -o json printed nothing"
cmp -s "$work/render-shipped.json" "$work/render-defaults.json" ||
    fail "the defaults written in the shipped config differ from the built-in ones (render output differs)"
# A broken config must fail the same check (the check is not a no-op).
printf 'no_such_key = 1\n' >"$work/bad.toml"
if /usr/bin/upkeep check --config "$work/bad.toml" --manifests "$manifests" >"$work/check3.out" 2>&1; then
    fail "upkeep check accepted a config with an unknown key"
fi

# --- the installed unit ------------------------------------------------------------
step "systemd-analyze verify /lib/systemd/system/upkeep.service"
man_opt=--man=yes
if ! command -v man >/dev/null 2>&1; then
    step "note: 'man' is not installed, so Documentation=man:upkeep(1) is not checked"
    man_opt=--man=no
fi
out=$(systemd-analyze verify "$man_opt" /lib/systemd/system/upkeep.service 2>&1) ||
    fail "systemd-analyze verify failed:"$'\n'"$out"
[ -z "$out" ] || fail "systemd-analyze verify printed:"$'\n'"$out"

# --- reinstall keeps a local conffile edit ------------------------------------------
step "reinstall (upgrade path) keeps a locally edited conffile"
echo '# local edit by test-deb.sh' >>/etc/upkeep/upkeep.toml
dpkg -i --force-confold "$deb" >"$work/dpkg-i2.out" 2>&1 || { cat "$work/dpkg-i2.out" >&2; fail "reinstall failed"; }
tail -n 1 /etc/upkeep/upkeep.toml | grep -q '^# local edit by test-deb.sh$' || fail "reinstall overwrote the edited conffile"
echo "marker" >/var/log/upkeep/test-deb.log

# --- purge ------------------------------------------------------------------------------
step "dpkg --purge upkeep"
dpkg --purge upkeep >"$work/purge.out" 2>&1 || { cat "$work/purge.out" >&2; fail "dpkg --purge failed"; }
installed=no
if dpkg-query -W -f='${Status}' upkeep 2>/dev/null | grep -q 'installed'; then
    fail "dpkg still reports upkeep after purge"
fi
for p in /usr/bin/upkeep /lib/systemd/system/upkeep.service /etc/upkeep/upkeep.toml /etc/upkeep \
    /usr/share/man/man1/upkeep.1.gz /usr/share/doc/upkeep /var/lib/upkeep \
    /usr/share/bash-completion/completions/upkeep /usr/share/zsh/vendor-completions/_upkeep \
    /usr/share/fish/vendor_completions.d/upkeep.fish; do
    [ ! -e "$p" ] || fail "$p still exists after purge"
done
[ -f /var/log/upkeep/test-deb.log ] || fail "purge removed /var/log/upkeep (it must keep the logs)"

step "ok: $(basename "$deb") builds, installs, checks, verifies and purges cleanly"
