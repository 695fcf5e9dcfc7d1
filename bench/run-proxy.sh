#!/usr/bin/env bash
# berth's proxy against nginx 1.22 and HAProxy 2.6 as round-robin load balancers in front of
# the same 3 nginx backends, same wrk load, same run: HTTP keep-alive and TCP mode. Installs
# nginx, its stream module, haproxy and wrk (Debian) if missing, builds release, runs as root
# (the benchmark puts everything in a network namespace of its own, on loopback).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v nginx >/dev/null 2>&1 || ! command -v haproxy >/dev/null 2>&1 \
    || ! command -v wrk >/dev/null 2>&1 || [ ! -e /usr/lib/nginx/modules/ngx_stream_module.so ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y --no-install-recommends nginx libnginx-mod-stream haproxy wrk
fi
cargo build --release -p berth -p berth-bench
exec target/release/proxy-bench --berth target/release/berth "$@"
