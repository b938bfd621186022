#!/usr/bin/env bash
# Builds and starts the whole pipeline on this machine: PostgreSQL and RabbitMQ (started if needed,
# management UI enabled), then both services in release mode (each creates and migrates its own
# database; queues left of another kind are migrated first). Requests from this machine need no
# token (an operator's rights); tokens signed with the development key in .run/dev-jwt.key
# (generated on first use) are verified, so that a customer's view can be tried with
# `scripts/dev-token.sh`. Ctrl-C stops both services.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/ensure-services.sh
cargo build --release --bin order_service --bin processor_service
target_dir=${CARGO_TARGET_DIR:-target}
mkdir -p .run

source scripts/dev-auth.sh
# Generates the development key if it is missing; the services read it at start.
"$target_dir/release/order_service" dev-token --customer customer-123 >/dev/null

# Queues left by an earlier deployment of another kind (classic queues, now quorum by default)
# are replaced with their messages moved: a no-op when they already are as configured.
for service in order_service processor_service; do
  if ! moved=$("$target_dir/release/$service" queues migrate); then
    echo "$service could not migrate its queues (above); see README, \"Queue kinds\"" >&2
    exit 1
  fi
  [ "$moved" = "[]" ] || echo "$service queues migrated: $moved"
done

"$target_dir/release/order_service" > .run/order_service.log 2>&1 &
order_pid=$!
"$target_dir/release/processor_service" > .run/processor_service.log 2>&1 &
processor_pid=$!
trap 'kill -TERM $order_pid $processor_pid 2>/dev/null; wait $order_pid $processor_pid 2>/dev/null' INT TERM EXIT

order_port=${ORDER_SERVICE__HTTP__PORT:-8000}
processor_port=${PROCESSOR_SERVICE__HTTP__PORT:-8001}
for _ in $(seq 1 60); do
  if curl -fs "http://127.0.0.1:$order_port/ready" >/dev/null && curl -fs "http://127.0.0.1:$processor_port/ready" >/dev/null; then
    break
  fi
  if ! kill -0 $order_pid 2>/dev/null || ! kill -0 $processor_pid 2>/dev/null; then
    echo "a service exited; see .run/*.log" >&2
    tail -n 20 .run/*.log >&2
    exit 1
  fi
  sleep 1
done

cat <<TXT

The order pipeline is running.
  order_service       http://127.0.0.1:$order_port      Swagger UI: http://127.0.0.1:$order_port/docs/
  processor_service   http://127.0.0.1:$processor_port      Swagger UI: http://127.0.0.1:$processor_port/docs/
  RabbitMQ management http://127.0.0.1:15672 (guest/guest)
  PostgreSQL          postgres://postgres@127.0.0.1:5432 (databases orders, processor)
  Logs                .run/order_service.log, .run/processor_service.log

Try (from this machine no token is needed, with an operator's rights):
  curl -s -X POST http://127.0.0.1:$order_port/orders -H 'content-type: application/json' \\
    -d '{"customer_id":"customer-123","items":[{"product_id":"product-1","quantity":2,"price":10.50}]}'

As a customer (sees and places only its own orders), with a development token:
  TOKEN=\$(scripts/dev-token.sh --customer customer-123)
  curl -s http://127.0.0.1:$order_port/orders -H "authorization: Bearer \$TOKEN"
An operator's: scripts/dev-token.sh --operator alice
(Other machines need a token: README, "Authentication".)

Ctrl-C stops both services.
TXT
wait $order_pid $processor_pid
