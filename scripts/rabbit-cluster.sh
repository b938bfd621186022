#!/usr/bin/env bash
# A three-node RabbitMQ cluster on this machine, from the Debian install: nodes
# rabbit-<name>-1..3@localhost, each with its own AMQP port, distribution port and data directory,
# clustered by their peer discovery configuration (classic_config: each node lists the others).
#
#   scripts/rabbit-cluster.sh start             start the three nodes, wait until they form one cluster
#   scripts/rabbit-cluster.sh stop              stop them and remove their data
#   scripts/rabbit-cluster.sh urls              the AMQP__URLS value for the services
#   scripts/rabbit-cluster.sh status            the cluster as node 1 sees it
#   scripts/rabbit-cluster.sh ctl ARGS...       rabbitmqctl ARGS against node 1
#   scripts/rabbit-cluster.sh stop-node N       stop node N cleanly (its connections are closed)
#   scripts/rabbit-cluster.sh kill-node N       SIGKILL node N (its sockets just go)
#   scripts/rabbit-cluster.sh pid N             the process id of node N's Erlang VM
#   scripts/rabbit-cluster.sh start-node N      start node N again, wait until it is back in the cluster
#
# CLUSTER_NAME (default `cluster`) names the nodes and the directory
# ${CLUSTER_DIR:-/var/tmp/rabbit-$CLUSTER_NAME}; CLUSTER_PORT (default 5701) is node 1's AMQP port,
# node N listening on CLUSTER_PORT + N - 1 and distributing on CLUSTER_PORT + 20000 + N - 1.
# guest/guest is allowed from loopback only. Needs root (the nodes run as the rabbitmq user).
set -euo pipefail

name=${CLUSTER_NAME:-cluster}
dir=${CLUSTER_DIR:-/var/tmp/rabbit-$name}
base=${CLUSTER_PORT:-5701}
nodes=(1 2 3)

node_name() { echo "rabbit-$name-$1@localhost"; }
amqp_port() { echo $((base + $1 - 1)); }

# Runs a RabbitMQ command ($2...) in node $1's environment.
in_node() {
  local n=$1
  shift
  local home=$dir/node-$n
  env RABBITMQ_NODENAME="$(node_name "$n")" \
    RABBITMQ_NODE_PORT="$(amqp_port "$n")" \
    RABBITMQ_DIST_PORT=$((base + 20000 + n - 1)) \
    RABBITMQ_CONF_ENV_FILE="$home/env.conf" \
    RABBITMQ_CONFIG_FILE="$home/rabbitmq.conf" \
    RABBITMQ_MNESIA_BASE="$home/mnesia" \
    RABBITMQ_LOG_BASE="$home/log" \
    RABBITMQ_PID_FILE="$home/pid" \
    RABBITMQ_ENABLED_PLUGINS_FILE="$home/enabled_plugins" \
    RABBITMQ_PLUGINS_EXPAND_DIR="$home/plugins" \
    RABBITMQ_FEATURE_FLAGS_FILE="$home/feature_flags" \
    ERL_EPMD_ADDRESS=127.0.0.1 \
    "$@"
}

ctl() {
  local n=$1
  shift
  in_node "$n" rabbitmqctl -n "$(node_name "$n")" "$@"
}

configure() {
  local n=$1 home=$dir/node-$1
  mkdir -p "$home/log"
  : >"$home/env.conf"
  echo '[].' >"$home/enabled_plugins"
  {
    echo "listeners.tcp.local = 127.0.0.1:$(amqp_port "$n")"
    echo "cluster_formation.peer_discovery_backend = classic_config"
    for m in "${nodes[@]}"; do
      echo "cluster_formation.classic_config.nodes.$m = $(node_name "$m")"
    done
    echo "log.file.level = info"
  } >"$home/rabbitmq.conf"
}

start_node() {
  local n=$1
  in_node "$n" rabbitmq-server -detached
}

wait_node() {
  local n=$1
  for _ in $(seq 1 60); do
    if ctl "$n" await_startup --timeout 5 >/dev/null 2>&1; then
      return 0
    fi
    sleep 1
  done
  echo "node $(node_name "$n") did not start; its log: $dir/node-$n/log" >&2
  return 1
}

# Waits until node 1 sees all three nodes running.
wait_cluster() {
  for _ in $(seq 1 120); do
    local running
    running=$(ctl 1 cluster_status --formatter json 2>/dev/null |
      python3 -c 'import json,sys; print(len(json.load(sys.stdin).get("running_nodes", [])))' 2>/dev/null || echo 0)
    [ "$running" = "${#nodes[@]}" ] && return 0
    sleep 1
  done
  echo "the nodes did not form one cluster:" >&2
  ctl 1 cluster_status >&2 || true
  return 1
}

urls() {
  local list=()
  for n in "${nodes[@]}"; do
    list+=("amqp://guest:guest@127.0.0.1:$(amqp_port "$n")/%2f")
  done
  (IFS=,; echo "${list[*]}")
}

case ${1:-} in
  start)
    mkdir -p "$dir"
    for n in "${nodes[@]}"; do configure "$n"; done
    chown -R rabbitmq:rabbitmq "$dir"
    for n in "${nodes[@]}"; do start_node "$n"; done
    for n in "${nodes[@]}"; do wait_node "$n"; done
    wait_cluster
    urls
    ;;
  stop)
    for n in "${nodes[@]}"; do
      pid=$(cat "$dir/node-$n/pid" 2>/dev/null || true)
      ctl "$n" stop >/dev/null 2>&1 || { [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null; } || true
    done
    rm -rf "$dir"
    ;;
  urls) urls ;;
  status) ctl 1 cluster_status ;;
  ctl)
    shift
    ctl 1 "$@"
    ;;
  stop-node) ctl "$2" stop ;;
  pid) ctl "$2" eval "os:getpid()." | tr -d '"' ;;
  kill-node) kill -KILL "$(ctl "$2" eval "os:getpid()." | tr -d '"')" ;;
  start-node)
    start_node "$2"
    wait_node "$2"
    wait_cluster
    ;;
  *)
    sed -n '2,19p' "$0" >&2
    exit 2
    ;;
esac
