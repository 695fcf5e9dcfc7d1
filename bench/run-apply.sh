#!/usr/bin/env bash
# Apply benchmark against a one-member berth store. Builds release, then runs the load
# generator, which starts `berth server` in a network namespace of its own (needs root).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p berth -p berth-bench
exec target/release/apply-bench --berth target/release/berth "$@"
