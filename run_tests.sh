#!/usr/bin/env bash
# The test suite: `bash run_tests.sh [pytest args]`. Creates/reuses .venv first.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup_venv.sh
export ENCNET_NO_PROGRESS=1 MPLBACKEND=Agg
exec .venv/bin/python -m pytest -q "$@"
