#!/usr/bin/env bash
# The whole upkeep test suite on a fresh Debian machine.
#
#   sudo bash scripts/test.sh
#
# Installs what the tests need (etcd for the end-to-end and cluster tests,
# openssl for their TLS certificates, promtool for the metrics checks,
# systemd-journald for log = "journal") when it is missing; that needs root,
# and so do the tests that switch users, create cgroups, mount tmpfs and
# install the .deb. Without root, the missing
# pieces make the run fail loudly rather than skip.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || need+=(etcd-client)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v systemd-analyze >/dev/null 2>&1 && [ -x /lib/systemd/systemd-journald ] || need+=(systemd)
command -v dpkg-deb >/dev/null 2>&1 || need+=(dpkg)
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v strace >/dev/null 2>&1 || need+=(strace)
if ((${#need[@]})); then
    if [ "$(id -u)" != 0 ]; then
        echo "scripts/test.sh: missing ${need[*]}; run as root so they can be installed" >&2
        exit 1
    fi
    echo "--- installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if [ "$(id -u)" != 0 ]; then
    echo "scripts/test.sh: the suite needs root (cgroups, setuid tests, dpkg -i)" >&2
    exit 1
fi

echo "--- cargo fmt --check"
cargo fmt --all --check
echo "--- cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "--- cargo test"
cargo test --workspace --locked 2>&1 | tee target/test-output.txt
echo "--- packaging"
bash packaging/test-deb.sh
echo "--- all tests passed"
