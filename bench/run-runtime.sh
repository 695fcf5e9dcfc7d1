#!/usr/bin/env bash
# Container start through berth's runtime against runc and crun, interleaved in one run.
# Installs runc, crun and busybox-static (for the rootfs) if missing, builds release, runs as
# root (the benchmark runs in network and mount namespaces of its own; containers get fresh
# network namespaces inside it).
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
command -v runc >/dev/null 2>&1 || missing+=(runc)
command -v crun >/dev/null 2>&1 || missing+=(crun)
[ -x /bin/busybox ] && dpkg -s busybox-static >/dev/null 2>&1 || missing+=(busybox-static)
if [ ${#missing[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y --no-install-recommends "${missing[@]}"
fi
cargo build --release -p berth -p berth-bench
exec target/release/runtime-bench --berth target/release/berth "$@"
