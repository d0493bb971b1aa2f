"""Installing the suite into an environment that has its own torch keeps that torch (issue 36, item 1).

pyproject.toml asks for version ranges; constraints.txt pins what the demo and CI run. What pip would do is read from
pip itself: ``pip install --dry-run --report -`` resolves the project's dependencies against an environment and
prints the plan as JSON, installing nothing. The environment is a researcher's as pip sees it: a venv whose
site-packages holds the installed distributions' metadata (torch 2.5.1+cu121 and its torchvision, and the other
dependencies at this venv's versions); no index is reached, so any package the plan needs makes pip fail.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
DEPENDENCIES = PYPROJECT["project"]["dependencies"]
CUDA_OR_TORCH = re.compile(r"^(torch|torchvision|triton|nvidia-.*)$")


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].strip().lower()


def _installed(site: Path, name: str, version: str, requires: tuple[str, ...] = ()) -> None:
    """The metadata pip reads for an installed distribution (what ``pip install`` leaves in site-packages)."""
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}",
             *(f"Requires-Dist: {r}" for r in requires)]
    (info / "METADATA").write_text("\n".join(lines) + "\n")
    (info / "INSTALLER").write_text("pip\n")
    (info / "RECORD").write_text("")


@pytest.fixture(scope="module")
def own_torch_env(tmp_path_factory) -> Path:
    """A venv as a lab's cluster has it: torch 2.5.1+cu121 with torchvision 0.20.1+cu121 (which pins it), and the
    suite's other dependencies at this venv's versions. Returns its python."""
    root = tmp_path_factory.mktemp("own_torch_env")
    venv.create(root, with_pip=False)
    site = next(root.glob("lib/python*/site-packages"))
    _installed(site, "torch", "2.5.1+cu121")
    _installed(site, "torchvision", "0.20.1+cu121", ("torch==2.5.1",))
    for requirement in DEPENDENCIES:
        name = _name(requirement)
        if name not in ("torch", "torchvision"):
            _installed(site, name, importlib.metadata.version(name))
    return root / "bin" / "python"


def _plan(python: Path, requirements: list[str]) -> subprocess.CompletedProcess:
    # No pip configuration (this machine's caps torch and adds local wheel folders) and no index: the plan is what
    # the requirements and the environment alone decide.
    env = {**os.environ, "PIP_CONFIG_FILE": os.devnull}
    return subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--dry-run", "--quiet",
                           "--no-index", "--report", "-", *requirements], capture_output=True, text=True, env=env,
                          timeout=300)


def test_installing_into_an_environment_with_its_own_torch_plans_no_torch_or_cuda_package(own_torch_env):
    done = _plan(own_torch_env, DEPENDENCIES)
    assert done.returncode == 0, done.stderr
    planned = [item["metadata"]["name"] for item in json.loads(done.stdout)["install"]]
    assert not [name for name in planned if CUDA_OR_TORCH.match(name.lower())], planned
    assert planned == [], planned  # everything the suite needs is already there


def test_the_exact_pins_would_replace_that_torch(own_torch_env):
    """The negative control: the pins of constraints.txt (what pyproject.toml held before) cannot be met without
    installing torch 2.14.1 over the researcher's build."""
    pins = [line for line in (REPO / "constraints.txt").read_text().splitlines()
            if line.startswith(("torch==", "torchvision=="))]
    assert len(pins) == 2
    done = _plan(own_torch_env, pins)
    assert done.returncode != 0 and "torch" in done.stderr, done.stdout + done.stderr


def test_torch_below_the_lowest_supported_version_is_not_accepted(tmp_path):
    root = tmp_path / "old_torch_env"
    venv.create(root, with_pip=False)
    site = next(root.glob("lib/python*/site-packages"))
    _installed(site, "torch", "2.2.2")
    done = _plan(root / "bin" / "python", [r for r in DEPENDENCIES if _name(r) == "torch"])
    assert done.returncode != 0, done.stdout  # torch>=2.3 needs another torch, which no index can give here


def test_the_suite_runs_on_the_pinned_versions_and_setup_venv_applies_them():
    assert '-c "$repo/constraints.txt"' in (REPO / "scripts" / "setup_venv.sh").read_text()
    pins = dict(line.split("==") for line in (REPO / "constraints.txt").read_text().splitlines()
                if line and not line.startswith("#"))
    assert {"torch", "torchvision"} <= set(pins)
    ranges = {_name(r): r for r in DEPENDENCIES}
    for name, version in pins.items():
        assert importlib.metadata.version(name).split("+")[0] == version, name
        assert name in ranges or name in ("pycocotools",), f"{name} is pinned but not a dependency"
