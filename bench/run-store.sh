#!/usr/bin/env bash
# berth's 3-member control plane against a 3-member etcd 3.4, same load generator, same run.
# Installs etcd (Debian's etcd-server) if missing, builds release, runs as root (the
# benchmark puts both clusters in a network namespace of its own, on loopback).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v etcd >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y --no-install-recommends etcd-server
fi
cargo build --release -p berth -p berth-bench
exec target/release/store-bench --berth target/release/berth --etcd "$(command -v etcd)" "$@"
