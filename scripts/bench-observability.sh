#!/usr/bin/env bash
# What metrics and tracing cost, in alternated runs of `scripts/bench.sh` (extra arguments go to
# it; default `--orders 20000 --repeat 1`), PAIRS rounds (default 3) of these variants in turn:
#   base      only with BASE_BIN: binaries of a build without metrics or tracing, for the cost
#             of both (build one with `git worktree add` and a target directory of its own);
#   off       OTEL_SDK_DISABLED=true: metrics, but no OpenTelemetry layer and no trace context;
#   default   the default: trace context propagated and logged, nothing exported;
#   exported  every order traced and exported over OTLP/HTTP to scripts/otlp-sink.py on
#             127.0.0.1:4318, with a batch processor sized for the rate (no span dropped);
#   sampled   the same with OTEL_TRACES_SAMPLER=parentbased_traceidratio at SAMPLE (default 0.1).
# VARIANTS picks and orders them (default "base off default exported sampled", base skipped
# without BASE_BIN). The sink's own CPU is printed after each exporting run (it is not among the
# processes loadgen counts). BENCH_BIN: binaries built before (else a release build). Output: one
# section per run, `## VARIANT-ROUND`.
set -euo pipefail
cd "$(dirname "$0")/.."
pairs=${PAIRS:-3}
variants=${VARIANTS:-base off default exported sampled}
[ $# -gt 0 ] || set -- --orders 20000 --repeat 1
if [ -z "${BENCH_BIN:-}" ]; then
  cargo build --release --bins
  export BENCH_BIN=${CARGO_TARGET_DIR:-target}/release
fi
exporting() {
  scripts/otlp-sink.py 4318 > .run/otlp-sink.json &
  local sink=$!
  OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 OTEL_BSP_MAX_QUEUE_SIZE=131072 \
    OTEL_BSP_MAX_EXPORT_BATCH_SIZE=4096 OTEL_BSP_SCHEDULE_DELAY=200 "$@"
  kill -TERM "$sink"
  wait "$sink" || true
  echo "otlp sink: $(cat .run/otlp-sink.json)"
  grep -h "dropped" .run/bench-*_service.log || echo "spans dropped: none logged"
}
run() {
  local variant=$1 n=$2
  shift 2
  case $variant in
    base)
      [ -n "${BASE_BIN:-}" ] || return 0
      echo "## $variant-$n"
      BENCH_BIN=$BASE_BIN scripts/bench.sh "$@" ;;
    off)
      echo "## $variant-$n"
      OTEL_SDK_DISABLED=true scripts/bench.sh "$@" ;;
    default)
      echo "## $variant-$n"
      scripts/bench.sh "$@" ;;
    exported)
      echo "## $variant-$n"
      exporting scripts/bench.sh "$@" ;;
    sampled)
      echo "## $variant-$n (ratio ${SAMPLE:-0.1})"
      OTEL_TRACES_SAMPLER=parentbased_traceidratio OTEL_TRACES_SAMPLER_ARG=${SAMPLE:-0.1} \
        exporting scripts/bench.sh "$@" ;;
    *) echo "bench-observability: unknown variant $variant" >&2; exit 2 ;;
  esac
}
mkdir -p .run
for n in $(seq 1 "$pairs"); do
  for variant in $variants; do
    run "$variant" "$n" "$@"
  done
done
