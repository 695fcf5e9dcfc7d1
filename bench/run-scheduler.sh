#!/usr/bin/env bash
# Scheduler throughput with 5,000 simulated nodes: one control-plane member in-process (fsync
# on), pods created through the API, binds committed through Raft. Runs in a network
# namespace of its own (needs root). Builds release, then runs; arguments go to the bench.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p berth-bench --bin scheduler-bench
exec target/release/scheduler-bench "$@"
