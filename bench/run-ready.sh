#!/usr/bin/env bash
# Apply → Ready latency of a 100-replica Deployment on three local nodes (root: the nodes run
# real containers, each node in a network namespace of its own). Installs busybox-static (the
# image) if missing, builds release, runs.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x /bin/busybox ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y --no-install-recommends busybox-static
fi
cargo build --release -p berth -p berth-bench
export RUST_LOG="${RUST_LOG:-warn}"
exec target/release/ready-bench "$@"
