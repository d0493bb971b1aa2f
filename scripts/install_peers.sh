#!/usr/bin/env bash
# The peers' released code for the `peers` tests (tests/test_peers.py), from the package registry into .peers/site,
# never into .venv: the authors' torch-encoding 0.5.0 (its PyPI sdist, unpacked, not built: its setup compiles
# C++/CUDA ops, for which the tests substitute tests/peers_stand_ins/encoding_lib.py), and mmsegmentation 1.2.2 with
# mmcv-lite 2.1.0 and mmengine 0.10.7 (pure Python; tests/peers_stand_ins/mmcv_ext.py stands in for mmcv._ext).
# Installed --no-deps with every import-time dependency listed and pinned, so nothing here replaces the venv's torch
# or numpy (the tests append .peers/site to sys.path, after the venv's packages). Usage:
#   bash scripts/install_peers.sh            (PYTHON= picks the interpreter whose pip runs; default .venv/bin/python)
# A second run is a no-op while the stamp (the hash of the package list below) matches.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="${PYTHON:-$repo/.venv/bin/python}"
site="$repo/.peers/site"
packages=(
    mmsegmentation==1.2.2 mmcv-lite==2.1.0 mmengine==0.10.7
    # What those three import and the venv lacks, found by listing the modules a `-m peers` session loads from
    # .peers/site. rich's markdown-it-py is left out: nothing the tests run imports rich.markdown.
    addict==2.4.0 yapf==0.43.0 rich==15.0.0 termcolor==3.3.0 prettytable==3.19.0 opencv-python-headless==5.1.0.95
    ftfy==6.3.1 regex==2026.12.2
    # torch-encoding's encoding.utils imports requests at import time (the venv has urllib3/idna/certifi today, as
    # selenium's; pinned here too, so a venv without selenium still imports requests)
    requests==2.34.2 urllib3==2.8.0 idna==3.21 charset-normalizer==3.5.3 certifi==2026.10.19.post1
)
encoding_sdist=torch-encoding==0.5.0
want="$(printf '%s\n' "$encoding_sdist" "${packages[@]}" | sha256sum | cut -d' ' -f1)"
stamp="$repo/.peers/.installed"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -d "$site/encoding" ]; then
    echo "[peers] up to date in $site"
    exit 0
fi
if [ ! -x "$py" ]; then
    echo "[peers] no Python at $py: run 'bash scripts/setup_venv.sh' first, or set PYTHON=" >&2
    exit 1
fi
# Built beside the final folder and renamed at the end: an interrupted install leaves no half-filled site behind.
work="$repo/.peers/partial"
rm -rf "$work"
mkdir -p "$work/download"
log="$work/pip.log"
fail() {
    grep -v "^WARNING: Location" "$log" >&2 || true
    echo "[peers] $1 (the output above; is the package registry reachable?); $site is as it was" >&2
    rm -rf "$work"
    exit 1
}
echo "[peers] installing the peers' released code into $site"
"$py" -m pip install --quiet --disable-pip-version-check --no-deps --target "$work/site" "${packages[@]}" \
    >"$log" 2>&1 || fail "pip install --target failed"
"$py" -m pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: "$encoding_sdist" \
    -d "$work/download" >"$log" 2>&1 || fail "pip download of the $encoding_sdist sdist failed"
# The package's files as released, its compiled-op sources included (never compiled; see the stand-in).
tar -xzf "$work/download/torch-encoding-0.5.0.tar.gz" -C "$work/download"
mv "$work/download/torch-encoding-0.5.0/encoding" "$work/site/encoding"
# The dependency list is checked here, not at the first test: each must import beside the venv's packages (mmcv and
# mmseg need the tests' mmcv._ext stand-in, encoding its encoding.lib one, so they are left to the tests).
PYTHONPATH="" "$py" -c "import sys; sys.path.append(sys.argv[1])
import addict, cv2, ftfy, mmengine.runner, prettytable, regex, requests, rich, termcolor, yapf" "$work/site" \
    >"$log" 2>&1 || fail "the installed packages do not import"
rm -rf "$site"
mv "$work/site" "$site"
rm -rf "$work"
echo "$want" > "$stamp"
echo "[peers] installed: $(ls "$site" | grep -c dist-info) packages and torch-encoding 0.5.0 (unbuilt) in $site"
