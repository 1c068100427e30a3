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
# Every stage runs even when an earlier one failed (the tests run with
# --no-fail-fast), and the summary at the end lists every failure. A
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
# The tests are built first; then the release build of the .deb goes on in
# the background at the lowest priority while they run (they mostly wait on
# processes), and packaging/test-deb.sh finds it done.
stage "build the tests" cargo test --workspace --locked --no-run
# In a session of its own (setsid), so that its compiler processes can be
# given back normal priority as a group once the tests are done.
setsid nice -n 19 cargo build --release --locked -p upkeep >target/release-build.log 2>&1 &
release_build=$!
# The output is kept in target/test-output.txt; grep it for "FAIL" or "panicked".
if cargo nextest --version >/dev/null 2>&1; then
    # Each test in a process of its own, several at once (.config/nextest.toml).
    stage "cargo nextest run" bash -o pipefail -c 'cargo nextest run --workspace --locked --no-fail-fast 2>&1 | tee target/test-output.txt'
else
    echo "--- cargo-nextest is not installed: cargo test runs the test binaries one after another (about twice as long)"
    stage "cargo test" bash -o pipefail -c 'cargo test --workspace --locked --no-fail-fast 2>&1 | tee target/test-output.txt'
fi
# The tests are done: the release build gets normal priority to finish (at
# nice 19 other jobs on a busy machine would starve it).
build_group=$(ps -o pgid= -p "$release_build" 2>/dev/null | tr -d ' ')
if [ -n "$build_group" ] && [ "$build_group" != "$(ps -o pgid= -p $$ | tr -d ' ')" ]; then
    renice -n 0 -g "$build_group" >/dev/null 2>&1
fi
wait "$release_build" || echo "--- the background release build failed (target/release-build.log); test-deb.sh builds again" >&2
stage "packaging/test-deb.sh" bash packaging/test-deb.sh

if ((${#failed[@]})); then
    echo "--- FAILED stages: ${failed[*]}" >&2
    if [ -f target/test-output.txt ]; then
        grep -E ' FAILED$|^error: |^    `|^ +(FAIL|TIMEOUT|SIGSEGV|SIGABRT) \[' target/test-output.txt >&2 || true
    fi
    exit 1
fi
echo "--- all tests passed"
