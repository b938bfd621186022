#!/usr/bin/env bash
# What tracing costs, in alternated runs of `scripts/bench.sh` (extra arguments go to it; default
# `--orders 20000`), PAIRS times (default 3), each variant on the same release build:
#   off       OTEL_SDK_DISABLED=true: no OpenTelemetry layer, no trace context;
#   exported  every order traced and exported over OTLP/HTTP to scripts/otlp-sink.py on
#             127.0.0.1:4318, with a batch processor sized for the rate (no span dropped).
# The sink's own CPU is printed after each exported run (it is not among the processes loadgen
# counts). BENCH_BIN: binaries built before (else a release build). Output: one section per run.
set -euo pipefail
cd "$(dirname "$0")/.."
pairs=${PAIRS:-3}
[ $# -gt 0 ] || set -- --orders 20000
if [ -z "${BENCH_BIN:-}" ]; then
  cargo build --release --bins
  export BENCH_BIN=${CARGO_TARGET_DIR:-target}/release
fi
run() {
  local variant=$1 n=$2
  shift 2
  echo "## $variant-$n"
  if [ "$variant" = off ]; then
    OTEL_SDK_DISABLED=true scripts/bench.sh "$@"
  else
    scripts/otlp-sink.py 4318 > .run/otlp-sink.json &
    local sink=$!
    OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 OTEL_BSP_MAX_QUEUE_SIZE=131072 \
      OTEL_BSP_MAX_EXPORT_BATCH_SIZE=4096 OTEL_BSP_SCHEDULE_DELAY=200 scripts/bench.sh "$@"
    kill -TERM "$sink"
    wait "$sink" || true
    echo "otlp sink: $(cat .run/otlp-sink.json)"
    grep -h "dropped" .run/bench-*_service.log || echo "spans dropped: none logged"
  fi
}
mkdir -p .run
for n in $(seq 1 "$pairs"); do
  run off "$n" "$@"
  run exported "$n" "$@"
done
