"""No silent CPU (issue 36, item 2): a paper-profile run on a machine without usable CUDA refuses in one line that
says why, unless the CPU is asked for; more processes than visible GPUs refuse likewise.

Each way CUDA can be unusable is simulated by setting what torch and the driver report (``torch.version.cuda``,
``torch.cuda.is_available``, ``torch.cuda.device_count``, the driver's CUDA version, ``CUDA_VISIBLE_DEVICES``); the
refusal of the real command is checked on this machine, which has no GPU driver.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from encnet.engine import devices, distributed

REPO = Path(__file__).resolve().parents[1]
PAPER_CONFIG = REPO / "configs" / "paper" / "pcontext_encnet_r50.yaml"


@pytest.fixture
def machine(monkeypatch):
    """Set what this process sees: ``machine(cuda="12.1", available=False, driver=12020, count=0, visible=None)``."""
    def set_up(cuda="12.1", available=False, driver=None, count=0, visible=None):
        monkeypatch.setattr(torch.version, "cuda", cuda)
        monkeypatch.setattr(torch.version, "hip", None, raising=False)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
        monkeypatch.setattr(devices, "driver_cuda_version", lambda: driver)
        if visible is None:
            monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
        else:
            monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
        for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
            monkeypatch.delenv(name, raising=False)
    return set_up


@pytest.mark.parametrize("case,expected", [
    (dict(cuda=None), "CPU-only build"),
    (dict(driver=None), "no NVIDIA driver on this node"),
    (dict(cuda="12.4", driver=12020), "supports CUDA up to 12.2, older than the CUDA 12.4"),
    (dict(cuda="12.1", driver=12040, visible=""), "no CUDA device is visible to this process (CUDA_VISIBLE_DEVICES=''"),
    (dict(cuda="12.1", driver=12040), "no CUDA device is visible to this process (CUDA_VISIBLE_DEVICES is not set"),
])
def test_each_reason_for_unusable_cuda_is_told_apart(machine, case, expected):
    machine(**case)
    why, fix = devices.cuda_problem()
    assert expected in why and fix
    with pytest.raises(devices.DeviceError) as refused:
        distributed.setup(None, gpu_only=True)
    message = str(refused.value)
    assert "\n" not in message and expected in message and "--device cpu" in message, message


def test_usable_cuda_is_no_problem(machine):
    machine(available=True, driver=12040, count=2)
    assert devices.cuda_problem() is None and devices.gpu_refusal("x") is None


def test_the_cpu_asked_for_is_used_and_a_profile_other_than_paper_keeps_its_fallback(machine):
    machine(cuda=None)
    assert distributed.setup("cpu", gpu_only=True).device.type == "cpu"
    assert distributed.setup(None, gpu_only=False).device.type == "cpu"  # the demo's CPU runs
    with pytest.raises(devices.DeviceError, match="--device cuda asks for a GPU, but CUDA is not usable"):
        distributed.setup("cuda")


def test_more_processes_than_visible_gpus_refuse_on_every_rank(machine, monkeypatch):
    machine(available=True, driver=12040, count=2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: None)
    for local_rank in (0, 3):  # rank 0 has a GPU of its own, and still refuses: its node is over-subscribed
        monkeypatch.setenv("LOCAL_RANK", str(local_rank))
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
        with pytest.raises(devices.DeviceError, match="asks for 4 processes, one per GPU, but this node has 2"):
            distributed.setup(None, gpu_only=True)


def test_the_reproduce_gate_refuses_gpus_it_cannot_have_before_training(machine, tmp_path):
    from encnet.experiments.checks import PreflightError, gate
    from encnet.experiments.cli import parse_args
    from encnet.experiments.planning import PlannedRun

    machine(driver=None)
    # A generated dataset passes the gate's dataset check, so only the GPU request can refuse.
    data = type("D", (), {"dataset": "context_textures", "root": str(tmp_path / "data")})()
    config = type("C", (), {"task": "classification", "data": data})()
    run = PlannedRun(config, tmp_path / "run", PAPER_CONFIG, [], 0)
    with pytest.raises(PreflightError, match="GPUs: --gpus 8, but CUDA is not usable: no NVIDIA driver"):
        gate([run], parse_args("ablation", ["--profile", "paper", "--gpus", "8"]))
    gate([run], parse_args("ablation", ["--profile", "paper", "--gpus", "2", "--device", "cpu"]))  # asked for


@pytest.mark.skipif(devices.cuda_problem() is None, reason="this machine has usable CUDA")
def test_the_train_command_refuses_a_paper_config_in_one_line_and_leaves_no_run_folder(tmp_path):
    run_dir = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "encnet.train", str(PAPER_CONFIG), "model.pretrained=none",
                           "--run-dir", str(run_dir)], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: the paper profile trains on GPUs, but CUDA is not usable: ")
    assert devices.cuda_problem()[0] in lines[0] and "--device cpu" in lines[0]
    assert not run_dir.exists()
