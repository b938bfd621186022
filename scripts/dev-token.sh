#!/usr/bin/env bash
# Prints a development token for the services scripts/run.sh starts:
#   scripts/dev-token.sh --customer customer-123
#   scripts/dev-token.sh --operator alice [--minutes 120]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/dev-auth.sh
target_dir=${CARGO_TARGET_DIR:-target}
binary="$target_dir/release/order_service"
[ -x "$binary" ] || cargo build --release --bin order_service >&2
exec "$binary" dev-token "$@"
