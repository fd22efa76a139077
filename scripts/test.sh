#!/usr/bin/env bash
# Install (into .venv) and run every check: lint, format, types, tests.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
echo "== ruff check";         .venv/bin/ruff check .
echo "== ruff format --check"; .venv/bin/ruff format --check .
echo "== mypy --strict";      .venv/bin/mypy
echo "== pytest"
# pytest exits 5 when no test ran; set -e turns that (and any failure) into a failed run.
.venv/bin/pytest -q "$@"
