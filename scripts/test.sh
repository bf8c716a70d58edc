#!/usr/bin/env bash
# The test command: the whole suite, real runtimes as oracles (README: "Tests").
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
exec "$PY" -m pytest -q -p no:cacheprovider --durations=15 "$@"
