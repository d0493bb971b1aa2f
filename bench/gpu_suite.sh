#!/usr/bin/env bash
# Everything only a GPU shows, within 9 minutes on one GPU; per-part budgets in bench/gpu_suite.py.
#   bash bench/gpu_suite.sh            # full run on CUDA: bench/results/*-<gpu>.json, tables/benchmarks.md
#   bash bench/gpu_suite.sh --quick    # tiny CPU smoke run (the tests), pass --results-dir DIR to keep it out
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" ENCNET_NO_PROGRESS=1
# 9 minutes of parts + start-up; a hard stop well before a 10-minute slot ends.
exec timeout 570 "$PYTHON" bench/gpu_suite.py "$@"
