#!/usr/bin/env bash
# Install (into .venv) and start the service: SQLite file, simulated telephony, demo tenants.
# Usage: scripts/start.sh [CONFIG]   (default: config.example.toml)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e .
exec .venv/bin/dialer serve --config "${1:-config.example.toml}"
