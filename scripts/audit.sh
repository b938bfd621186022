#!/usr/bin/env bash
# Checks Cargo.lock against the RustSec advisory database, offline, from the snapshot bundle that
# ships beside the project (ADVISORY_DB_BUNDLE, default ../shared/advisory-db.bundle or
# /work/shared/advisory-db.bundle). Vulnerabilities and warnings (unmaintained, unsound, yanked)
# fail it, except the advisories `.cargo/audit.toml` ignores, each with its date and reason.
# cargo-audit is installed once into CARGO_TOOLS (default /var/tmp/cargo-tools, outside the clone)
# and reused: installing it takes about ten minutes here.
set -euo pipefail
cd "$(dirname "$0")/.."
tools=${CARGO_TOOLS:-/var/tmp/cargo-tools}
bundle=${ADVISORY_DB_BUNDLE:-}
if [ -z "$bundle" ]; then
  for candidate in ../shared/advisory-db.bundle /work/shared/advisory-db.bundle; do
    if [ -f "$candidate" ]; then bundle=$candidate; break; fi
  done
fi
if [ -z "$bundle" ] || [ ! -f "$bundle" ]; then
  echo "audit: no advisory database bundle (set ADVISORY_DB_BUNDLE)" >&2
  exit 1
fi
if [ ! -x "$tools/bin/cargo-audit" ]; then
  CARGO_TARGET_DIR="$tools/build" cargo install --locked --root "$tools" cargo-audit --version 0.22.2
  rm -rf "$tools/build"
fi
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
git -c init.defaultBranch=main clone -q "$bundle" "$scratch/advisory-db"
audit() {
  "$tools/bin/cargo-audit" audit --db "$scratch/advisory-db" --no-fetch --stale -D warnings "$@"
}
# The check itself first: a lock file with a known advisory must fail it.
if audit --file scripts/audit/known-vulnerable.lock > /dev/null 2>&1; then
  echo "audit: a known advisory passed the check; the database or the tool is not working" >&2
  exit 1
fi
audit
