#!/usr/bin/env bash
# Create or reuse .venv and install encnet with its test extras.
# Sourced by run_all.sh and run_tests.sh, so both commands work on a fresh machine with only python3.
# pyproject.toml holds version ranges; constraints.txt pins the exact versions the demo and CI run (torch,
# torchvision, numpy, ...), so this venv is the same on every machine. Plain pip (no uv/poetry, which ignore local
# wheels).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo/.venv"
py="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
    echo "[setup] creating $venv"
    "$py" -m venv "$venv"
fi
# Reinstall only when the dependency list or the pins changed: a stamp holds the hash of both files.
stamp="$venv/.encnet-installed"
want="$(cat "$repo/pyproject.toml" "$repo/constraints.txt" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "[setup] installing encnet and its dependencies into $venv (first time: a few minutes)"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        -c "$repo/constraints.txt" -e "$repo[test]" 2>&1 \
        | grep -v "^WARNING: Location" || true
    if ! "$venv/bin/python" -c "import encnet, torch, torchvision"; then
        echo "[setup] installation failed: see the pip output above" >&2
        # The commonest cause is a full disk: the CUDA build of torch pip picks on x86_64 takes about 6 GB.
        echo "[setup] free space where the venv lives: $(df -h --output=avail "$venv" | tail -1 | tr -d ' ')" \
            "(torch's CUDA build needs about 6 GB; pip also unpacks into ${TMPDIR:-/tmp})" >&2
        exit 1
    fi
    echo "$want" > "$stamp"
fi
