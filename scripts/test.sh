#!/usr/bin/env bash
# The whole upkeep test suite on a Debian machine, as root (no sudo needed):
#
#   bash scripts/test.sh
#
# What it does to the machine (README, "Testing"):
#   - installs the Debian packages the tests need when they are missing
#     (etcd-server, etcd-client, openssl for the cluster tests' TLS
#     certificates, prometheus for promtool, systemd for systemd-analyze and
#     systemd-journald, strace, binutils for readelf, gcc/libc6-dev for
#     linking, python3), with one `apt-get update` first;
#   - the tests create cgroups under /sys/fs/cgroup/upkeep-<hash> (one per test
#     daemon, removed when the test ends), run processes as other users, and
#     bind loopback ports picked by the kernel;
#   - packaging/test-deb.sh builds the .deb, installs it with dpkg -i and purges
#     it (it refuses to touch an upkeep that was installed before; concurrent
#     runs in other clones wait for each other's package test).
#
# Every stage runs even when an earlier one failed (`cargo test --no-fail-fast`
# runs every test binary), and the summary at the end lists every failure. A
# needed component that is missing and cannot be installed is a failure,
# never a skip.
set -uo pipefail
cd "$(dirname "$0")/.."

die() {
    echo "scripts/test.sh: $*" >&2
    exit 1
}

[ "$(id -u)" = 0 ] || die "the suite needs root (cgroups, tests that switch users, dpkg -i of the .deb); run it as root"
command -v cargo >/dev/null 2>&1 || die "cargo is not installed (a Rust toolchain >= the workspace's rust-version is needed)"

need=()
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || need+=(etcd-client)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v systemd-analyze >/dev/null 2>&1 && [ -x /lib/systemd/systemd-journald ] || need+=(systemd)
command -v dpkg-deb >/dev/null 2>&1 || need+=(dpkg)
command -v strace >/dev/null 2>&1 || need+=(strace)
command -v readelf >/dev/null 2>&1 || need+=(binutils)
command -v cc >/dev/null 2>&1 || need+=(gcc libc6-dev)
command -v flock >/dev/null 2>&1 || need+=(util-linux)
# The probe tests run python3's http.server as a service, whose PATH is
# upkeep's clean default: a python3 found only through the caller's PATH won't do.
[ -x /usr/bin/python3 ] || need+=(python3)
if ((${#need[@]})); then
    echo "--- installing ${need[*]}"
    apt-get update -qq || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null ||
        die "apt-get install ${need[*]} failed"
fi
for tool in etcd etcdctl openssl promtool systemd-analyze dpkg-deb strace readelf cc flock; do
    command -v "$tool" >/dev/null 2>&1 || die "'$tool' is still missing after the installation"
done
[ -x /usr/bin/python3 ] || die "/usr/bin/python3 is still missing after the installation"


failed=()
stage() {
    local name=$1
    shift
    echo "--- $name"
    if ! "$@"; then
        echo "--- FAILED: $name" >&2
        failed+=("$name")
    fi
}

mkdir -p target
stage "cargo fmt --check" cargo fmt --all --check
stage "cargo clippy" cargo clippy --workspace --all-targets --locked -- -D warnings
# The output is kept in target/test-output.txt; grep it for "FAILED" or "panicked".
stage "cargo test" bash -o pipefail -c 'cargo test --workspace --locked --no-fail-fast 2>&1 | tee target/test-output.txt'
stage "packaging/test-deb.sh" bash packaging/test-deb.sh

if ((${#failed[@]})); then
    echo "--- FAILED stages: ${failed[*]}" >&2
    if [ -f target/test-output.txt ]; then
        grep -E ' FAILED$|^error: |^    `' target/test-output.txt >&2 || true
    fi
    exit 1
fi
echo "--- all tests passed"
