#!/usr/bin/env bash
# Set up (idempotent), then run the test suite: unit tests and the reduced-size demo workflow.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH=$PWD/.venv/bin:$PATH
# Triton, for the tests only (~290 MB; the demo does not need it): its GPU kernels' tests run on a
# machine without a GPU through Triton's CPU interpreter (tests/conftest.py sets TRITON_INTERPRET)
if ! python -c "import triton" 2>/dev/null; then
  echo "[tests] installing Triton (its kernels' tests run through the CPU interpreter)"
  python -m pip install -q --disable-pip-version-check "triton==3.9.0" 2>&1 | grep -v '^WARNING: Location' || true
  python -c "import triton" 2>/dev/null || echo "[tests] Triton did not install: its kernels' tests skip"
fi
exec python -m pytest -q "$@"
