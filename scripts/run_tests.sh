#!/usr/bin/env bash
# Set up (idempotent), then run the test suite: unit tests and the reduced-size demo workflow.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH=$PWD/.venv/bin:$PATH
exec python -m pytest -q "$@"
