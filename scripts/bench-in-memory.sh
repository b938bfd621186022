#!/usr/bin/env bash
# A diagnostic, not a deployment: runs scripts/bench.sh (same arguments) against a throwaway
# PostgreSQL and a throwaway RabbitMQ whose data live in memory (/dev/shm), so that no commit and
# no persistent message waits for the disk. Compared with scripts/bench.sh on the same machine, it
# shows how much of the latency is the disk's (fsync) and how much the CPU's. The pipeline's code
# and settings are the same (commits and confirms still wait for what they wait for); only the
# storage underneath is memory, which nothing survives a restart of. Both servers are removed
# afterwards. Needs PostgreSQL's server binaries (`pg_config --bindir`) and `rabbitmq-server`.
set -euo pipefail
cd "$(dirname "$0")/.."

pg_port=${MEMORY_PG_PORT:-5433}
amqp_port=${MEMORY_AMQP_PORT:-5673}
dist_port=${MEMORY_AMQP_DIST_PORT:-25673}
pg_bin=$(pg_config --bindir)
dir=$(mktemp -d /dev/shm/order-pipeline-bench.XXXXXX)
chmod 755 "$dir"

log() { printf '[bench-in-memory] %s\n' "$*" >&2; }

# PostgreSQL refuses to run as root: run it as the `postgres` user when we are root.
as_postgres() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

cleanup() {
  as_postgres "$pg_bin/pg_ctl" -D "$dir/pg" -m immediate stop >/dev/null 2>&1 || true
  if [ -f "$dir/rabbitmq/pid" ]; then
    local pid
    pid=$(cat "$dir/rabbitmq/pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.2
    done
  fi
  rm -rf "$dir"
}
trap cleanup EXIT

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for port in "$pg_port" "$amqp_port"; do
  if port_open "$port"; then
    log "port $port is taken; set MEMORY_PG_PORT / MEMORY_AMQP_PORT"
    exit 1
  fi
done

log "PostgreSQL on 127.0.0.1:$pg_port, data in $dir/pg"
mkdir "$dir/pg"
[ "$(id -u)" = 0 ] && chown postgres "$dir/pg"
as_postgres "$pg_bin/initdb" -D "$dir/pg" -U postgres --auth=trust >/dev/null
# The settings this kind of machine's own server runs with (shared_buffers, no autovacuum: the
# bench vacuums before each run), so that the two benches differ only by the disk.
as_postgres "$pg_bin/pg_ctl" -D "$dir/pg" -l "$dir/pg/server.log" -w start \
  -o "-p $pg_port -k $dir/pg -c listen_addresses=127.0.0.1 -c shared_buffers=128MB -c autovacuum=off -c max_connections=200" >/dev/null

log "RabbitMQ on 127.0.0.1:$amqp_port, data in $dir/rabbitmq"
mkdir -p "$dir/rabbitmq"
echo "listeners.tcp.local = 127.0.0.1:$amqp_port" > "$dir/rabbitmq/rabbitmq.conf"
echo "[]." > "$dir/rabbitmq/enabled_plugins"
# As root, rabbitmq-server runs itself as the `rabbitmq` user.
[ "$(id -u)" = 0 ] && chown -R rabbitmq "$dir/rabbitmq"
RABBITMQ_CONF_ENV_FILE=/dev/null \
  RABBITMQ_NODENAME="bench-in-memory@localhost" \
  RABBITMQ_NODE_PORT="$amqp_port" \
  RABBITMQ_DIST_PORT="$dist_port" \
  RABBITMQ_CONFIG_FILE="$dir/rabbitmq/rabbitmq.conf" \
  RABBITMQ_MNESIA_BASE="$dir/rabbitmq/mnesia" \
  RABBITMQ_LOG_BASE="$dir/rabbitmq/log" \
  RABBITMQ_ENABLED_PLUGINS_FILE="$dir/rabbitmq/enabled_plugins" \
  RABBITMQ_PID_FILE="$dir/rabbitmq/pid" \
  ERL_EPMD_ADDRESS=127.0.0.1 \
  RABBITMQ_SERVER_ERL_ARGS="+sbwt none +sbwtdcpu none +sbwtdio none" \
  rabbitmq-server -detached
for _ in $(seq 1 60); do
  port_open "$amqp_port" && break
  sleep 1
done
if ! port_open "$amqp_port"; then
  log "RabbitMQ did not come up; its log:"
  tail -n 30 "$dir"/rabbitmq/log/*.log >&2 || true
  exit 1
fi

BENCH_POSTGRES_PID=$(head -n 1 "$dir/pg/postmaster.pid") \
  BENCH_RABBITMQ_PID=$(cat "$dir/rabbitmq/pid") \
  BENCH_POSTGRES="postgres://postgres@127.0.0.1:$pg_port" \
  BENCH_AMQP_URL="amqp://guest:guest@127.0.0.1:$amqp_port/%2f" \
  scripts/bench.sh "$@"
