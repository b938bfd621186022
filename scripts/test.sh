#!/usr/bin/env bash
# Runs every test against the local PostgreSQL and RabbitMQ, starting them first if needed (and
# installing schemathesis for the HTTP fuzzing tests and kubernetes-validate for the manifests):
#   1. unit, integration and end-to-end tests, in parallel (each isolates its state);
#   2. then, alone, the disruptive ones, which stop RabbitMQ or PostgreSQL or SIGKILL the services
#      and leave them running again (skip them with DISRUPTIVE=0).
# Extra arguments go to the first `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
ENABLE_MANAGEMENT=${ENABLE_MANAGEMENT:-0} scripts/ensure-services.sh
# schemathesis for the HTTP fuzzing tests, into a virtual environment outside the clone.
scripts/ensure-schemathesis.sh
# kubernetes-validate for the offline check of the Kubernetes manifests, likewise.
scripts/ensure-kubernetes-validate.sh
cargo test --workspace --all-targets "$@"
if [ "${DISRUPTIVE:-1}" = 1 ]; then
  status=0
  cargo test -p e2e --test e2e -- --ignored --test-threads=1 || status=$?
  # Whatever happened, leave the servers up for whoever comes next.
  ENABLE_MANAGEMENT=0 scripts/ensure-services.sh
  exit "$status"
fi
