#!/usr/bin/env bash
# The test suite: `bash run_tests.sh [pytest args]`. Creates/reuses .venv first.
# Without a -m selection it runs every test but the `slow` paper smoke test (about 6 min on 2 CPU cores);
# `bash run_tests.sh -m slow` runs that one, and CI (.ci/run) runs both.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup_venv.sh
export ENCNET_NO_PROGRESS=1 MPLBACKEND=Agg
select=(-m "not slow")
for arg in "$@"; do
    case "$arg" in -m|-m*) select=() ;; esac
done
exec .venv/bin/python -m pytest -q "${select[@]}" "$@"
