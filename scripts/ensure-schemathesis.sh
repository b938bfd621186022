#!/usr/bin/env bash
# Installs schemathesis (PyPI), pinned, into a virtual environment outside the clone, once; the
# HTTP fuzzing tests run it from there (test_support::schemathesis). Idempotent.
set -euo pipefail

VERSION=4.32.5
VENV=${SCHEMATHESIS_VENV:-/var/tmp/order-pipeline-venv}

if "$VENV/bin/schemathesis" --version 2>/dev/null | grep -q "version $VERSION\$"; then
  exit 0
fi
echo "[ensure-schemathesis] installing schemathesis $VERSION into $VENV" >&2
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$VERSION"
"$VENV/bin/schemathesis" --version
