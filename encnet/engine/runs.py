"""Run folders: layout, deterministic run ids, atomic writes, environment capture, ``metrics.jsonl``.

A run lives in ``<output_root>/<profile>/<experiment>/<run-id>/`` with

- ``config.yaml``   the resolved config (file + overrides + defaults) that ran;
- ``env.json``      package versions, git commit and dirty flag, world size, devices, host, start time;
- ``metrics.jsonl`` one JSON object per epoch;
- ``progress.jsonl`` one JSON object every ``train.log_every`` iterations (``encnet.engine.progress``), and with
  ``train.tensorboard: true`` TensorBoard's event files in ``tensorboard/``;
- ``checkpoint_last.pt`` model/optimizer/scaler/epoch/RNG states, with ``checkpoint_last.pt.sum.json`` (its size
  and sha256, written and checked before the file replaces the previous one);
- ``checkpoint_prev.pt`` the checkpoint before it (and its ``.sum.json``): the fallback when the last is corrupt;
- ``LOCK``          while a process trains the run (``encnet.engine.runlock``);
- ``eval.json``     the final single-scale evaluation (``eval_<tag>.json`` for other settings);
- ``DONE``          written last: a finished run is never rerun.

The run id is ``seed<seed>-<hash>`` where the hash covers every config value that can change the numbers,
so the same config + overrides always map to the same folder and reproduce scripts find runs by config.

A training session that fails before the run has a checkpoint leaves no folder that looks like a run: what it
wrote is removed (``discard_failed_start``), and the folder too when the session made it.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from encnet.atomic_files import usual_permissions, write_atomically, write_text_atomically

from .config import Config, to_dict

__all__ = [
    "CHECKPOINT",
    "CheckpointError",
    "CorruptCheckpointError",
    "DONE",
    "PREVIOUS_CHECKPOINT",
    "UnsafeCheckpointError",
    "append_jsonl",
    "atomic_save",
    "atomic_write_text",
    "capture_env",
    "cpu_model",
    "config_hash",
    "discard_failed_start",
    "find_runs",
    "first_missing_folder",
    "is_finished",
    "load_checkpoint",
    "load_resume_checkpoint",
    "looks_like_run_id",
    "read_json",
    "read_jsonl",
    "record_session",
    "remove_empty_folders",
    "run_dir_for",
    "run_id",
    "save_checkpoint",
    "set_aside_corrupt",
    "verify_checkpoint",
    "truncate_jsonl",
    "write_json",
]

CHECKPOINT = "checkpoint_last.pt"
PREVIOUS_CHECKPOINT = "checkpoint_prev.pt"
SUM_SUFFIX = ".sum.json"
DONE = "DONE"

# Where the data and the backbone files live, how often checkpoints are written and how a run is watched (progress
# lines, TensorBoard) do not change the numbers, so they do not change the run id (a moved dataset still finds its
# runs).
# The evaluation protocol is applied after training and recorded in each eval_<tag>.json, so it does not
# change the run id either: a new protocol evaluates the same trained run.
_NOT_IN_HASH = {("data", "root"), ("model", "pretrained_dir"), ("train", "checkpoint_every"),
                ("train", "checkpoint_every_iters"), ("train", "log_every"), ("train", "tensorboard")}
_SECTIONS_NOT_IN_HASH = ("eval",)
# Keys added to the hash after runs existed: off (false, 0), they leave the run id as it was; on, they change it.
# channels_last changes the rounding of convolutions, so its runs are not bitwise those without it. data.workers
# changes the trajectory: each loader worker draws the augmentations from its own generator (seeded per worker
# id), and with 0 workers they come from the main process's, so 0, 1 and 2 workers train on different crops; a
# resume with another count would mix two trajectories in one folder, and is refused as another config.
_HASHED_ONLY_WHEN_ON = (("train", "channels_last"), ("data", "workers"), ("train", "warmup_epochs"))
# The version of the segmentation data path, hashed into every segmentation run's id: a code change that alters
# what a run trains on without a config key of its own raises it, so that runs trained before it are neither reused
# (a finished run) nor continued (--resume) as runs of the code after it. 2 (issue 33): masks resized at pixel
# centres, release v0.5.0's size arithmetic, crops padded bottom/right, the mirror first. Before it: no such key.
SEGMENTATION_DATA_PATH = 2


def _init_identity(init_from: str) -> str:
    """A previous stage is identified by its run (``<profile>/<experiment>/<run-id>``), not by where the runs
    root happens to be, so chained stages keep their ids when the runs folder moves."""
    path = Path(init_from)
    if path.name == CHECKPOINT:
        path = path.parent
    return "/".join(path.parts[-3:])


def _hashed(config: Config) -> dict:
    """The part of the resolved config that identifies a run: what ``config_hash`` hashes."""
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
    if config.task == "segmentation":
        data["data_path"] = SEGMENTATION_DATA_PATH
    return data


def config_hash(config: Config, length: int = 8) -> str:
    blob = json.dumps(_hashed(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def _flat(data: dict) -> dict:
    return {f"{name}.{key}" if isinstance(values, dict) else name: value for name, values in data.items()
            for key, value in (values.items() if isinstance(values, dict) else [(None, values)])}


def hash_differences(a: Config, b: Config) -> list[tuple[str, object, object]]:
    """``(section.key, value in a, value in b)`` for every key whose difference changes the run id (the values as
    configured: a switch left out of the hash when off shows as its off value)."""
    ha, hb = _flat(_hashed(a)), _flat(_hashed(b))
    va, vb = _flat(to_dict(a)), _flat(to_dict(b))
    return [(k, va.get(k), vb.get(k)) for k in sorted(ha.keys() | hb.keys()) if ha.get(k) != hb.get(k)]


def run_id(config: Config) -> str:
    return f"seed{config.seed}-{config_hash(config)}"


def looks_like_run_id(name: str) -> bool:
    """Whether a folder name has the form ``run_id`` gives (``seed<seed>-<8 hex digits>``)."""
    return re.fullmatch(r"seed-?\d+-[0-9a-f]{8}", name) is not None


def run_dir_for(config: Config, output_root: str | Path = "runs") -> Path:
    return Path(output_root) / config.profile / config.experiment / run_id(config)


def is_finished(run_dir: str | Path) -> bool:
    return (Path(run_dir) / DONE).is_file()


def find_runs(output_root: str | Path, profile: str, experiment: str) -> list[Path]:
    """Finished runs of one experiment (any config), sorted by run id."""
    base = Path(output_root) / profile / experiment
    return sorted(p for p in base.glob("*") if is_finished(p)) if base.is_dir() else []


# ------------------------------------------------------------------------------------------ atomic writes


def atomic_write_text(path: str | Path, text: str) -> None:
    write_text_atomically(path, text)


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` through a temporary file and ``os.replace``."""
    import torch

    write_atomically(path, lambda fh: torch.save(obj, fh))


# ------------------------------------------------------------------------------------------ checkpoints


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names the file and why."""


class CorruptCheckpointError(CheckpointError):
    """Truncated or altered on disk: its size or sha256 differs from its sidecar, or it does not unpack."""


class UnsafeCheckpointError(CheckpointError):
    """The pickle holds more than tensors, numbers, strings, lists and dicts: loading it could run code."""


def _digest(path: Path) -> tuple[int, str]:
    sha = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            sha.update(block)
            size += len(block)
    return size, sha.hexdigest()


def _sum_path(path: Path) -> Path:
    return path.with_name(path.name + SUM_SUFFIX)


def save_checkpoint(obj: Any, run_dir: str | Path) -> Path:
    """Write ``checkpoint_last.pt`` so that a good checkpoint is on disk at every moment.

    The new file is written to a temporary name, read back and hashed; only then does the current
    ``checkpoint_last.pt`` become ``checkpoint_prev.pt``, the sidecar of the new file is written and the new file
    takes its name. A crash at any point leaves either the new or the previous checkpoint with a matching sidecar.
    """
    import torch

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    last, prev = run_dir / CHECKPOINT, run_dir / PREVIOUS_CHECKPOINT
    fd, tmp_name = tempfile.mkstemp(dir=run_dir, prefix=f".{CHECKPOINT}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        usual_permissions(fd)
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
            written = fh.tell()
        size, sha = _digest(tmp)  # what is on disk, not what was meant to be written
        if size != written:
            raise CorruptCheckpointError(f"{tmp}: {size} bytes on disk after writing {written}; the disk may be full")
        if last.is_file():
            os.replace(last, prev)
            if _sum_path(last).is_file():
                os.replace(_sum_path(last), _sum_path(prev))
            else:
                _sum_path(prev).unlink(missing_ok=True)
        write_json(_sum_path(last), {"bytes": size, "sha256": sha})
        os.replace(tmp, last)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return last


def verify_checkpoint(path: str | Path) -> str | None:
    """Why ``path`` does not match its sidecar (None when it matches or has no sidecar)."""
    path = Path(path)
    sums = _sum_path(path)
    if not sums.is_file():
        return None
    try:
        expected = read_json(sums)
        want_size, want_sha = int(expected["bytes"]), str(expected["sha256"])
    except (ValueError, KeyError, TypeError) as err:
        return f"its sidecar {sums.name} is unreadable ({err})"
    size = path.stat().st_size
    if size != want_size:
        return f"{size} bytes on disk, {want_size} when written (truncated or overwritten)"
    if _digest(path)[1] != want_sha:
        return "sha256 differs from the one recorded when it was written (the file changed on disk)"
    return None


def _numpy_array_globals() -> list:
    """Plain numpy arrays (data, no code): checkpoints written before the RNG states became tensors hold one."""
    import numpy as np

    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    return [_reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint with ``torch.load(weights_only=True)``: tensors, numbers, strings, lists and dicts only.

    Raises :class:`UnsafeCheckpointError` for a pickle that carries anything else (it could run code) and
    :class:`CorruptCheckpointError` for a file that fails its sidecar check or does not unpack.
    """
    import pickle

    import torch

    path = Path(path)
    problem = verify_checkpoint(path)
    if problem:
        raise CorruptCheckpointError(f"{path} is corrupt: {problem}")
    try:
        with torch.serialization.safe_globals(_numpy_array_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        detail = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        raise UnsafeCheckpointError(
            f"{path} holds Python objects other than tensors, numbers, strings, lists and dicts, and loading it "
            f"could run code; refusing to load it ({detail[:200]}). Checkpoints written by this suite never do; "
            f"if you trust the file, re-save its state_dict with plain tensors."
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise CorruptCheckpointError(f"{path} is corrupt: it does not unpack ({str(err).splitlines()[0]})") from None


def load_resume_checkpoint(run_dir: str | Path, say=print) -> tuple[dict | None, Path | None]:
    """The checkpoint to resume ``run_dir`` from and its file: ``checkpoint_last.pt``, or ``checkpoint_prev.pt``
    with a message when the last one is corrupt or missing. (None, None) when the run has no checkpoint."""
    run_dir = Path(run_dir)
    last, prev = run_dir / CHECKPOINT, run_dir / PREVIOUS_CHECKPOINT
    if last.is_file():
        try:
            return load_checkpoint(last), last
        except CorruptCheckpointError as err:
            if not prev.is_file():
                raise CorruptCheckpointError(f"{err}; there is no {PREVIOUS_CHECKPOINT} to fall back to: delete "
                                             f"{run_dir} to train the run again") from None
            checkpoint = load_checkpoint(prev)
            say(f"warning: {err}\nfalling back to {prev} (epoch {checkpoint.get('epoch')}, iteration "
                f"{checkpoint.get('iteration')}); what was trained after it is trained again")
            return checkpoint, prev
    if prev.is_file():  # a crash between rotating the previous checkpoint and renaming the new one
        say(f"warning: {last} is missing; resuming from {prev}")
        return load_checkpoint(prev), prev
    return None, None


def set_aside_corrupt(run_dir: str | Path) -> None:
    """Rename a ``checkpoint_last.pt`` that could not be used to ``checkpoint_last.pt.corrupt`` (kept to inspect),
    so that the next save does not rotate it over the good previous checkpoint."""
    last = Path(run_dir) / CHECKPOINT
    if last.is_file():
        os.replace(last, last.with_name(last.name + ".corrupt"))
        _sum_path(last).unlink(missing_ok=True)


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


# ------------------------------------------------------------------------------------------ a training session


def record_session(run_dir: str | Path, config_yaml: str, env: dict, resumed_at: tuple[int, int] | None) -> list[str]:
    """Write a training session's ``config.yaml`` and ``env.json``: a fresh start replaces both and empties
    ``metrics.jsonl``; a resume after ``resumed_at`` = (epochs done, iterations done of the next epoch) appends
    ``env`` to ``env.json``'s ``resumes`` and drops the epochs logged after the checkpoint, which are trained again.
    Returns the notes to log (a resume on another CPU set-up)."""
    run_dir = Path(run_dir)
    metrics_path = run_dir / "metrics.jsonl"
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.yaml", config_yaml)
    if resumed_at is None:
        write_json(run_dir / "env.json", env)
        metrics_path.unlink(missing_ok=True)
        return []
    epoch, batches = resumed_at
    first = read_json(run_dir / "env.json") if (run_dir / "env.json").is_file() else {}
    before = (first.get("resumes") or [first])[-1]
    # Another thread count or kernel set sums in another order: the run goes on, on another trajectory.
    changed = [f"{key} {before[key]} → {env[key]}" for key in ("cpu_threads", "cpu_capability", "cpu_model")
               if key in before and before[key] != env[key]]
    first.setdefault("resumes", []).append({"epoch": epoch, "batches_done": batches, **env})
    write_json(run_dir / "env.json", first)
    truncate_jsonl(metrics_path, [r for r in read_jsonl(metrics_path) if r["epoch"] <= epoch])
    return [f"note: resuming with {', '.join(changed)}; the run continues but is no longer bitwise reproducible"
            ] if changed else []


def first_missing_folder(folder: str | Path) -> Path | None:
    """The outermost of ``folder`` and its parents that does not exist yet (None when ``folder`` exists): what a
    session that fails before its first checkpoint removes again, when empty."""
    folder = Path(folder)
    missing = None
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            break
        missing = candidate
    return missing


def discard_failed_start(run_dir: str | Path, kept: set[str]) -> list[str] | None:
    """After a training session failed: when ``run_dir`` holds no checkpoint and is not finished, nothing in it can
    be resumed, so remove what the session wrote (every entry but the names in ``kept``, those present when it
    took the run's lock: a log file the caller opened there, a previous session's files) and return their names.
    Returns None and removes nothing when there is a checkpoint (the run resumes from it)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir() or any((run_dir / name).exists() for name in (CHECKPOINT, PREVIOUS_CHECKPOINT, DONE)):
        return None
    removed = []
    for path in sorted(run_dir.iterdir()):
        if path.name in kept:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path.name)
    return removed


def remove_empty_folders(folder: str | Path, up_to: str | Path) -> None:
    """Remove ``folder`` and its parents up to and including ``up_to`` while they are empty."""
    folder, up_to = Path(folder), Path(up_to)
    chain = [folder, *folder.parents]
    if up_to not in chain:
        return
    for candidate in chain[:chain.index(up_to) + 1]:
        try:
            candidate.rmdir()
        except FileNotFoundError:
            continue
        except OSError:  # not empty: another process's lock or files
            return


# ------------------------------------------------------------------------------------------ environment


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=Path(__file__).resolve().parent, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def cpu_model() -> str:
    """The CPU's marketing name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


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
        # Two CPUs, or two kernel sets (ATen's vector dispatch), take other summation orders, so the same run id
        # may log other numbers (docs/demo.md, Reproducibility): these say which case a rerun is.
        "cpu_model": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "start_time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "argv": sys.argv,
    }
