#!/usr/bin/env bash
# Installs kubernetes-validate (PyPI), pinned, into a virtual environment outside the clone, once;
# scripts/validate-manifests.py runs with its Python (tests/e2e/deployment.rs). Idempotent.
set -euo pipefail

VERSION=1.37.0
VENV=${KUBERNETES_VALIDATE_VENV:-/var/tmp/order-pipeline-k8s-venv}

if "$VENV/bin/kubernetes-validate" --version 2>/dev/null | grep -q "$VERSION"; then
  exit 0
fi
echo "[ensure-kubernetes-validate] installing kubernetes-validate $VERSION into $VENV" >&2
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$VERSION"
"$VENV/bin/kubernetes-validate" --version
