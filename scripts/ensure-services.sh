#!/usr/bin/env bash
# Makes sure the local PostgreSQL and RabbitMQ run (starting them with this machine's commands if
# not), enables the RabbitMQ management UI when the plugin is available and RabbitMQ's Prometheus
# endpoint. Idempotent.
set -euo pipefail

log() { printf '[ensure-services] %s\n' "$*" >&2; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() { # name, seconds, command...
  local name=$1 seconds=$2; shift 2
  for _ in $(seq 1 "$seconds"); do
    if "$@"; then return 0; fi
    sleep 1
  done
  log "$name did not come up within ${seconds}s"
  return 1
}

# promtool and prometheus (Debian's package) for the metrics tests.
if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
  log "installing Debian's prometheus package (promtool, prometheus)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus >/dev/null \
    || { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus >/dev/null; }
fi

# ip (iproute2) and curl for the test that calls a service from another network namespace.
if ! command -v ip >/dev/null 2>&1 || ! command -v curl >/dev/null 2>&1; then
  log "installing Debian's iproute2 and curl"
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends iproute2 curl >/dev/null \
    || { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends iproute2 curl >/dev/null; }
fi

# docker-compose (Debian's, 1.29) to resolve docker-compose.yml in the deployment test; no engine.
if ! command -v docker-compose >/dev/null 2>&1; then
  log "installing Debian's docker-compose"
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends docker-compose >/dev/null \
    || { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends docker-compose >/dev/null; }
fi

# chromium and chromium-driver (Debian's) for the browser test of the order page.
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  log "installing Debian's chromium and chromium-driver"
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium chromium-driver >/dev/null \
    || { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium chromium-driver >/dev/null; }
fi

# PostgreSQL
if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null && ! port_open 5432; then
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    log "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  else
    log "PostgreSQL is not running on 127.0.0.1:5432 and cannot be started here"
    exit 1
  fi
fi
wait_for PostgreSQL 60 port_open 5432
log "PostgreSQL is up on 127.0.0.1:5432"

# RabbitMQ
if ! port_open 5672; then
  if command -v rabbitmq-server >/dev/null 2>&1; then
    log "starting RabbitMQ"
    rabbitmq-server -detached || true
  else
    log "RabbitMQ is not running on 127.0.0.1:5672 and cannot be started here"
    exit 1
  fi
fi
if command -v rabbitmqctl >/dev/null 2>&1; then
  timeout 120 rabbitmqctl await_startup >/dev/null 2>&1 || true
fi
wait_for RabbitMQ 120 port_open 5672
log "RabbitMQ is up on 127.0.0.1:5672"

# The management UI on 15672, when the plugin exists (best effort: it is not needed by the tests).
if [ "${ENABLE_MANAGEMENT:-1}" = 1 ] && command -v rabbitmq-plugins >/dev/null 2>&1 && ! port_open 15672; then
  if timeout 60 rabbitmq-plugins enable rabbitmq_management >/dev/null 2>&1; then
    log "RabbitMQ management UI enabled on http://127.0.0.1:15672 (guest/guest)"
  else
    log "could not enable the RabbitMQ management UI (continuing without it)"
  fi
fi

# RabbitMQ's own metrics on 15692 (rabbitmq_prometheus): the observability test scrapes them.
if command -v rabbitmq-plugins >/dev/null 2>&1 && ! port_open 15692; then
  if timeout 60 rabbitmq-plugins enable rabbitmq_prometheus >/dev/null 2>&1 \
    && wait_for "RabbitMQ's metrics endpoint" 30 port_open 15692; then
    log "RabbitMQ metrics on http://127.0.0.1:15692/metrics"
  else
    log "could not enable rabbitmq_prometheus: the observability test will fail"
  fi
fi
