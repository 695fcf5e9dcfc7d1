#!/usr/bin/env bash
# Pull + unpack of a generated ~50 MB 5-layer image from berth's registry, through berth's
# registry client against skopeo copy + umoci unpack, interleaved in one run. Installs skopeo
# and umoci if missing, builds release, runs as root (the benchmark and its one-member control
# plane run in a network namespace of their own, on loopback).
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
command -v skopeo >/dev/null 2>&1 || missing+=(skopeo)
command -v umoci >/dev/null 2>&1 || missing+=(umoci)
if [ ${#missing[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y --no-install-recommends "${missing[@]}"
fi
cargo build --release -p berth -p berth-bench
exec target/release/image-bench --berth target/release/berth "$@"
