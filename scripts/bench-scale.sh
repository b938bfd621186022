#!/usr/bin/env bash
# The scale runs of BENCHMARKS.md ("More than one"), one each, on quorum queues (the default):
#   1. one processor_service, the machine's RabbitMQ node;
#   2. two processor_service instances, the same node;
#   3. one processor_service, a three-node RabbitMQ cluster on this machine (scripts/rabbit-cluster.sh);
#   4. two processor_service instances on that cluster.
# Each is `scripts/bench.sh max ORDERS` (default 20,000): the maximum with the CPU of each part.
# Builds once; the runs reuse the release binaries. Output: one report per run, headed `== NAME`.
set -euo pipefail
cd "$(dirname "$0")/.."
orders=${1:-20000}
cargo build --release --bins
export BENCH_BIN=${CARGO_TARGET_DIR:-target}/release

echo "== one node, one processor"
scripts/bench.sh max "$orders"
echo "== one node, two processors"
BENCH_PROCESSORS=2 scripts/bench.sh max "$orders"

export CLUSTER_NAME=bench
trap 'scripts/rabbit-cluster.sh stop' EXIT
urls=$(scripts/rabbit-cluster.sh start)
BENCH_RABBITMQ_PIDS=$(for n in 1 2 3; do scripts/rabbit-cluster.sh pid "$n"; done | tr '\n' ' ')
export BENCH_AMQP_URLS=$urls BENCH_RABBITMQ_PIDS
echo "== three-node cluster, one processor"
scripts/bench.sh max "$orders"
echo "== three-node cluster, two processors"
BENCH_PROCESSORS=2 scripts/bench.sh max "$orders"
