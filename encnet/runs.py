"""Run folders: layout, deterministic run ids, atomic writes, environment capture, ``metrics.jsonl``.

A run lives in ``<output_root>/<profile>/<experiment>/<run-id>/`` with

- ``config.yaml``   the resolved config (file + overrides + defaults) that ran;
- ``env.json``      package versions, git commit and dirty flag, world size, devices, host, start time;
- ``metrics.jsonl`` one JSON object per epoch;
- ``checkpoint_last.pt`` model/optimizer/scaler/epoch/RNG states (written atomically);
- ``eval.json``     the final single-scale evaluation (``eval_<tag>.json`` for other settings);
- ``DONE``          written last: a finished run is never rerun.

The run id is ``seed<seed>-<hash>`` where the hash covers every config value that can change the numbers,
so the same config + overrides always map to the same folder and reproduce scripts find runs by config.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from .config import Config, to_dict

__all__ = [
    "CHECKPOINT",
    "DONE",
    "append_jsonl",
    "atomic_save",
    "atomic_write_text",
    "capture_env",
    "config_hash",
    "find_runs",
    "is_finished",
    "read_json",
    "read_jsonl",
    "run_dir_for",
    "run_id",
    "truncate_jsonl",
    "write_json",
]

CHECKPOINT = "checkpoint_last.pt"
DONE = "DONE"

# Where the data lives, how many loader workers read it and how often checkpoints are written do not change
# the numbers, so they do not change the run id (a moved dataset still finds its runs).
# The evaluation protocol is applied after training and recorded in each eval_<tag>.json, so it does not
# change the run id either: a new protocol evaluates the same trained run.
_NOT_IN_HASH = {("data", "root"), ("data", "workers"), ("train", "checkpoint_every")}
_SECTIONS_NOT_IN_HASH = ("eval",)
# Switches added after runs existed: off, they leave the run id as it was; on, they change it (channels_last
# changes the rounding of convolutions, so its runs are not bitwise those without it).
_HASHED_ONLY_WHEN_ON = (("train", "channels_last"),)


def _init_identity(init_from: str) -> str:
    """A previous stage is identified by its run (``<profile>/<experiment>/<run-id>``), not by where the runs
    root happens to be, so chained stages keep their ids when the runs folder moves."""
    path = Path(init_from)
    if path.name == CHECKPOINT:
        path = path.parent
    return "/".join(path.parts[-3:])


def config_hash(config: Config, length: int = 8) -> str:
    data = to_dict(config)
    for section, key in _NOT_IN_HASH:
        data[section].pop(key, None)
    for section in _SECTIONS_NOT_IN_HASH:
        data.pop(section, None)
    for section, key in _HASHED_ONLY_WHEN_ON:
        if not data[section].get(key):
            data[section].pop(key, None)
    if data["model"].get("init_from"):
        data["model"]["init_from"] = _init_identity(data["model"]["init_from"])
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def run_id(config: Config) -> str:
    return f"seed{config.seed}-{config_hash(config)}"


def run_dir_for(config: Config, output_root: str | Path = "runs") -> Path:
    return Path(output_root) / config.profile / config.experiment / run_id(config)


def is_finished(run_dir: str | Path) -> bool:
    return (Path(run_dir) / DONE).is_file()


def find_runs(output_root: str | Path, profile: str, experiment: str) -> list[Path]:
    """Finished runs of one experiment (any config), sorted by run id."""
    base = Path(output_root) / profile / experiment
    return sorted(p for p in base.glob("*") if is_finished(p)) if base.is_dir() else []


# ------------------------------------------------------------------------------------------ atomic writes


def _atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)  # readers see the old file or the new one, never half of one
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    _atomic(Path(path), lambda fh: fh.write(text.encode()))


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` through a temporary file and ``os.replace``."""
    import torch

    _atomic(Path(path), lambda fh: torch.save(obj, fh))


def write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def append_jsonl(path: str | Path, record: dict) -> None:
    with open(path, "a") as fh:
        fh.write(json.dumps(record) + "\n")


def read_jsonl(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def truncate_jsonl(path: str | Path, keep: list[dict]) -> None:
    """Rewrite ``path`` with only ``keep`` (used on resume to drop epochs logged after the checkpoint)."""
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in keep))


# ------------------------------------------------------------------------------------------ environment


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=Path(__file__).resolve().parent, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def capture_env(world_size: int, device: str) -> dict:
    """What ran where: versions, git state, processes and devices, host and start time."""
    import numpy
    import torch
    import torchvision

    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no")
    devices = (
        [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if device.startswith("cuda")
        else [platform.processor() or platform.machine()]
    )
    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": numpy.__version__,
        "cuda": torch.version.cuda,
        "git_commit": commit,
        "git_dirty": bool(status) if status is not None else None,
        "world_size": world_size,
        "device": device,
        "device_names": devices,
        "cpu_threads": torch.get_num_threads(),
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "start_time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "argv": sys.argv,
    }
