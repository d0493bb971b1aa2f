#!/usr/bin/env bash
# The test suite: `bash run_tests.sh [pytest args]`. Creates/reuses .venv first.
# Without a -m selection it runs every test but the `slow` paper smoke test and the `peers` tests (about 4 min on
# 2 CPU cores); `bash run_tests.sh -m slow` runs the first, `bash scripts/install_peers.sh && bash run_tests.sh
# -m peers` the second (the authors' and mmsegmentation's released code), and CI (.ci/run) runs all three.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup_venv.sh
export ENCNET_NO_PROGRESS=1 MPLBACKEND=Agg
select=(-m "not slow and not peers")
for arg in "$@"; do
    case "$arg" in -m|-m*) select=() ;; esac
done
exec .venv/bin/python -m pytest -q "${select[@]}" "$@"
