#!/usr/bin/env bash
# Set up (idempotent), then run the demo recipe end to end and print its results table.
# Extra arguments go to snakemake (e.g. a stage name such as `finetune`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH=$PWD/.venv/bin:$PATH
snakemake -c "$(nproc)" --configfile=egs/demo/config.yaml "$@"
[ -f exp/demo/results.md ] && cat exp/demo/results.md
