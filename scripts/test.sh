#!/usr/bin/env bash
# Runs every test (unit, integration, end to end) against the local PostgreSQL and RabbitMQ,
# starting them first if needed. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
ENABLE_MANAGEMENT=${ENABLE_MANAGEMENT:-0} scripts/ensure-services.sh
exec cargo test --workspace --all-targets "$@"
