#!/usr/bin/env bash
# The test suite: `bash run_tests.sh [pytest args]`. Creates/reuses .venv first.
# Without a -m selection it runs every test but the `slow` paper smoke test and the `peers` tests (about 7 min on
# 2 CPU cores, in two xdist workers); `bash run_tests.sh -m slow` runs the first, `bash scripts/install_peers.sh &&
# bash run_tests.sh -m peers` the second (the authors' and mmsegmentation's released code), and CI (.ci/run) runs
# all three.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup_venv.sh
export ENCNET_NO_PROGRESS=1 MPLBACKEND=Agg
select=(-m "not slow and not peers")
# The fast suite in two pytest-xdist workers, a test file to each at a time (its module fixtures, such as the
# benchmarks' --quick runs, are then built once): alone it keeps 2 cores 58 % busy, as most of its tests wait on
# interpreters that import torch or on other processes. The smoke and peers runs stay in one process: their
# tests keep both cores busy. -n, -p no:xdist or a -m selection of your own turn this off.
workers=(-n 2 --dist loadfile)
for arg in "$@"; do
    case "$arg" in
        -m|-m*) select=(); workers=() ;;
        -n|-n*|--numprocesses*|no:xdist) workers=() ;;
    esac
done
exec .venv/bin/python -m pytest -q "${select[@]}" "${workers[@]}" "$@"
