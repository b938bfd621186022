#!/usr/bin/env bash
# Writes `.env` for docker-compose.yml with random secrets (the keys of .env.example); refuses to
# overwrite an existing one. `scripts/new-env.sh FILE` writes FILE instead.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:-.env}
if [ -e "$target" ]; then
  echo "$target exists; remove it first to generate new secrets" >&2
  exit 1
fi
random() { head -c "$1" /dev/urandom | od -An -tx1 | tr -d ' \n'; }
umask 077
cat > "$target" <<ENV
COMPOSE_PROJECT_NAME=order-pipeline
POSTGRES_PASSWORD=$(random 24)
RABBITMQ_USER=pipeline
RABBITMQ_PASSWORD=$(random 24)
RABBITMQ_ERLANG_COOKIE=$(random 24)
AUTH_ISSUER=order-pipeline
AUTH_AUDIENCE=order-pipeline
AUTH_HS256_SECRET=$(random 32)
AUTH_JWKS_URL=
OPERATOR_TOKEN=$(random 32)
GRAFANA_ADMIN_PASSWORD=$(random 16)
OTEL_EXPORTER_OTLP_ENDPOINT=
ENV
echo "wrote $target"
