#!/usr/bin/env bash
# Reproduces BENCHMARKS.md on this machine: release build, fresh databases and broker names of its
# own, both services with default settings, then `loadgen bench` (extra arguments go to it, e.g.
# `--orders 20000 --repeat 3`), or with `soak [SECONDS]` a run at half the maximum, or with
# `overload [SECONDS]` a run at twice the maximum, or with `open RATE [SECONDS]` one open loop at
# RATE orders/s (default 30 s; to profile the services meanwhile, e.g. with `perf`), or with
# `max [ORDERS]` the maximum alone. Set
# SEED=1000000 to bulk-load that many orders first. The services inherit the environment, so
# `OTEL_*` variables set tracing up (scripts/bench-observability.sh).
# BENCH_POSTGRES (default postgres://postgres@127.0.0.1:5432) and BENCH_AMQP_URL (default
# amqp://guest:guest@127.0.0.1:5672/%2f) point it at other servers (scripts/bench-in-memory.sh).
# BENCH_AMQP_URLS gives the services several brokers (a cluster's nodes, AMQP__URLS; loadgen
# follows order.processed on the first) and BENCH_RABBITMQ_PIDS their Erlang VMs (space-separated,
# their CPU summed); BENCH_PROCESSORS=N runs N processor_service instances (ports 8001, 8011, ...;
# their CPU summed). scripts/bench-scale.sh uses these.
# BENCH_AUTH=hs256|rs256|es256|eddsa turns authentication on: the order service verifies a JWT on
# every POST (a key generated in .run/bench-auth/), and loadgen signs one for each customer.
set -euo pipefail
cd "$(dirname "$0")/.."
postgres=${BENCH_POSTGRES:-postgres://postgres@127.0.0.1:5432}
amqp=${BENCH_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}
if [ -z "${BENCH_POSTGRES:-}${BENCH_AMQP_URL:-}" ]; then
  ENABLE_MANAGEMENT=0 scripts/ensure-services.sh
fi
# BENCH_BIN names a folder of binaries built before (to alternate builds); else a release build.
if [ -n "${BENCH_BIN:-}" ]; then
  bin=$BENCH_BIN
else
  cargo build --release --bins
  bin=${CARGO_TARGET_DIR:-target}/release
fi
mkdir -p .run

psql -q "$postgres/postgres" -c 'DROP DATABASE IF EXISTS bench_orders WITH (FORCE)' \
  -c 'DROP DATABASE IF EXISTS bench_processor WITH (FORCE)'
export ORDER_SERVICE__DATABASE__URL=$postgres/bench_orders
export PROCESSOR_SERVICE__DATABASE__URL=$postgres/bench_processor
if [ -n "${BENCH_AMQP_URLS:-}" ]; then
  amqp=${BENCH_AMQP_URLS%%,*}
fi
for prefix in ORDER_SERVICE PROCESSOR_SERVICE; do
  export ${prefix}__AMQP__URL=$amqp
  if [ -n "${BENCH_AMQP_URLS:-}" ]; then
    export ${prefix}__AMQP__URLS=$BENCH_AMQP_URLS
  fi
  export ${prefix}__AMQP__EXCHANGE=bench.orders
  export ${prefix}__AMQP__DEAD_LETTER_EXCHANGE=bench.orders.dlx
  export ${prefix}__AMQP__ORDER_CREATED_QUEUE=bench.processor.order-created
  export ${prefix}__AMQP__ORDER_PROCESSED_QUEUE=bench.order-service.order-processed
  export ${prefix}__AMQP__ORDER_CREATED_DEAD_LETTER_QUEUE=bench.processor.order-created.dlq
  export ${prefix}__AMQP__ORDER_PROCESSED_DEAD_LETTER_QUEUE=bench.order-service.order-processed.dlq
done

token_args=()
if [ -n "${BENCH_AUTH:-}" ]; then
  keys=$PWD/.run/bench-auth
  mkdir -p "$keys"
  case "$BENCH_AUTH" in
    hs256)
      openssl rand -hex 32 > "$keys/hs256.key"
      export ORDER_SERVICE__AUTH__HS256_SECRET_FILE=$keys/hs256.key
      signing_key=$keys/hs256.key ;;
    rs256|es256|eddsa)
      case "$BENCH_AUTH" in
        rs256) openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$keys/private.pem" 2>/dev/null ;;
        es256) openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$keys/private.pem" ;;
        eddsa) openssl genpkey -algorithm ed25519 -out "$keys/private.pem" ;;
      esac
      openssl pkey -in "$keys/private.pem" -pubout -out "$keys/public.pem"
      export ORDER_SERVICE__AUTH__PUBLIC_KEY_FILES=$keys/public.pem
      signing_key=$keys/private.pem ;;
    *)
      echo "bench: BENCH_AUTH is one of hs256, rs256, es256, eddsa" >&2
      exit 1 ;;
  esac
  export ORDER_SERVICE__AUTH__ISSUER=order-pipeline-bench ORDER_SERVICE__AUTH__AUDIENCE=order-pipeline
  token_args=(--token-signing "$BENCH_AUTH" --token-key "$signing_key")
fi

processors=${BENCH_PROCESSORS:-1}
processor_ports=()
for i in $(seq 0 $((processors - 1))); do processor_ports+=($((8001 + 10 * i))); done
# Services left running on the ports (say, by an earlier run) would answer in place of these.
for port in 8000 "${processor_ports[@]}"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "bench: port $port is taken: stop what listens there first" >&2
    exit 1
  fi
done
"$bin/order_service" > .run/bench-order_service.log 2>&1 &
order_pid=$!
processor_pids=()
for port in "${processor_ports[@]}"; do
  # The first migrates its database; the others start once it is ready.
  PROCESSOR_SERVICE__HTTP__PORT=$port "$bin/processor_service" > ".run/bench-processor_service-$port.log" 2>&1 &
  processor_pids+=($!)
  if [ "$port" = 8001 ]; then
    for _ in $(seq 1 60); do curl -fs http://127.0.0.1:8001/ready >/dev/null && break; sleep 1; done
  fi
done
trap 'kill -TERM $order_pid ${processor_pids[*]} 2>/dev/null || true; wait 2>/dev/null || true' EXIT
for _ in $(seq 1 60); do
  ready=1
  for port in 8000 "${processor_ports[@]}"; do
    curl -fs "http://127.0.0.1:$port/ready" >/dev/null || ready=0
  done
  [ "$ready" = 1 ] && break
  sleep 1
done
if ! kill -0 "$order_pid" "${processor_pids[@]}" 2>/dev/null; then
  echo "bench: a service did not start; see .run/bench-*.log" >&2
  exit 1
fi

if [ -n "${SEED:-}" ]; then
  "$bin/loadgen" seed --database-url "$ORDER_SERVICE__DATABASE__URL" --orders "$SEED"
fi
# PostgreSQL on this kind of machine runs with autovacuum = off (`SHOW autovacuum`), which no
# production server does: vacuum before each run, so that a run does not pay for the dead rows of
# the runs before it. `loadgen bench` also CHECKPOINTs and syncs before each run (`--no-settle` to
# skip), so that a run does not pay for writing back what the run before it wrote.
# The servers' main processes, for the CPU each spends per order: BENCH_POSTGRES_PID and
# BENCH_RABBITMQ_PID (scripts/bench-in-memory.sh names its own servers'), else for this machine's
# servers the oldest `postgres` process (the postmaster) and the RabbitMQ node.
if [ -z "${BENCH_POSTGRES:-}${BENCH_AMQP_URL:-}" ]; then
  postgres_pid=${BENCH_POSTGRES_PID:-$(pgrep -o -x postgres || true)}
  rabbitmq_pid=${BENCH_RABBITMQ_PID:-$(pgrep -o -x beam.smp || true)}
else
  postgres_pid=${BENCH_POSTGRES_PID:-}
  rabbitmq_pid=${BENCH_RABBITMQ_PID:-}
fi
server_pids=()
[ -n "$postgres_pid" ] && server_pids+=(--postgres-pid "$postgres_pid")
if [ -n "${BENCH_RABBITMQ_PIDS:-}" ]; then
  for pid in $BENCH_RABBITMQ_PIDS; do server_pids+=(--rabbitmq-pid "$pid"); done
elif [ -n "$rabbitmq_pid" ]; then
  server_pids+=(--rabbitmq-pid "$rabbitmq_pid")
fi
pids=(--order-service-pid "$order_pid" "${server_pids[@]}" "${token_args[@]}")
for pid in "${processor_pids[@]}"; do pids+=(--processor-service-pid "$pid"); done
if [ "${1:-}" = soak ]; then
  # `scripts/bench.sh soak [SECONDS] [LOADGEN ARGS...]`: the maximum (closed loop), then an open
  # loop at half of it for SECONDS (default 600), with autovacuum on as on any production server
  # (this machine's PostgreSQL runs without it): latency and memory must show no trend.
  seconds=${2:-600}
  shift $(( $# < 2 ? $# : 2 ))
  max=$("$bin/loadgen" run --exchange bench.orders --amqp-url "$amqp" --orders 20000 \
    --concurrency 64 --json --quiet "${pids[@]}" | python3 -c 'import json,sys; print(int(json.load(sys.stdin)["final_per_s"]))')
  rate=$((max / 2))
  echo "maximum: $max orders final/s; open loop at $rate/s for $seconds s"
  psql -q "$postgres/postgres" -c 'ALTER SYSTEM SET autovacuum = on' -c 'SELECT pg_reload_conf()'
  trap 'psql -q "$postgres/postgres" -c "ALTER SYSTEM RESET autovacuum" -c "SELECT pg_reload_conf()"
    kill -TERM $order_pid ${processor_pids[*]} 2>/dev/null || true; wait 2>/dev/null || true' EXIT
  "$bin/loadgen" run --exchange bench.orders --amqp-url "$amqp" --rate "$rate" \
    --orders $((rate * seconds)) --deadline-seconds 120 "${pids[@]}" "$@"
  exit
fi
if [ "${1:-}" = open ]; then
  # `scripts/bench.sh open RATE [SECONDS] [LOADGEN ARGS...]`: 2,000 orders of warm-up, then one
  # open loop at RATE orders/s for SECONDS (default 30).
  rate=${2:?"bench.sh open RATE [SECONDS]"}
  seconds=${3:-30}
  shift $(( $# < 3 ? $# : 3 ))
  "$bin/loadgen" run --exchange bench.orders --amqp-url "$amqp" --orders 2000 \
    --concurrency 64 --quiet "${pids[@]}" > /dev/null
  echo "open loop at $rate/s for $seconds s"
  "$bin/loadgen" run --exchange bench.orders --amqp-url "$amqp" --rate "$rate" \
    --orders $((rate * seconds)) "${pids[@]}" "$@"
  exit
fi
if [ "${1:-}" = max ]; then
  # `scripts/bench.sh max [ORDERS] [LOADGEN ARGS...]`: 2,000 orders of warm-up, then the maximum
  # alone (closed loop, 64 clients, ORDERS orders, default 20,000) with the CPU of each part.
  orders=${2:-20000}
  shift $(( $# < 2 ? $# : 2 ))
  "$bin/loadgen" run --exchange bench.orders --amqp-url "$amqp" --orders 2000 \
    --concurrency 64 --quiet "${pids[@]}" > /dev/null
  "$bin/loadgen" run --exchange bench.orders --amqp-url "$amqp" --orders "$orders" \
    --concurrency 64 "${pids[@]}" "$@"
  exit
fi
if [ "${1:-}" = overload ]; then
  # `scripts/bench.sh overload [SECONDS] [LOADGEN ARGS...]`: the maximum (closed loop), then an
  # open loop at twice it for SECONDS (default 60): what is refused is refused at once, memory
  # stays bounded, and every accepted order ends final.
  seconds=${2:-60}
  shift $(( $# < 2 ? $# : 2 ))
  max=$("$bin/loadgen" run --exchange bench.orders --amqp-url "$amqp" --orders 20000 \
    --concurrency 64 --json --quiet "${pids[@]}" | python3 -c 'import json,sys; print(int(json.load(sys.stdin)["final_per_s"]))')
  rate=$((2 * max))
  echo "maximum: $max orders final/s; open loop at $rate/s for $seconds s"
  # From two threads: one cannot keep a schedule of twice the maximum whose requests mostly fail.
  "$bin/loadgen" run --exchange bench.orders --amqp-url "$amqp" --rate "$rate" --threads 2 \
    --orders $((rate * seconds)) --deadline-seconds 600 "${pids[@]}" "$@"
  exit
fi
"$bin/loadgen" bench --exchange bench.orders --amqp-url "$amqp" --database-url "$postgres/postgres" \
  --vacuum "$ORDER_SERVICE__DATABASE__URL" --vacuum "$PROCESSOR_SERVICE__DATABASE__URL" \
  "${pids[@]}" "$@"
