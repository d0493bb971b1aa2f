"""Train the planned runs that are unfinished (resuming from a checkpoint), side by side on a CPU or under
torchrun on GPUs, and add their multi-scale evaluations."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

from encnet.experiments.experiment import Row
from encnet.experiments.planning import PlannedRun


def _ms_settings(config) -> tuple[list[float], bool, str]:
    from encnet.engine.evaluate import eval_tag

    scales, flip = list(config.eval.scales), bool(config.eval.flip)
    return scales, flip, eval_tag(scales, flip, config.data.val_split, config) or "ss"


def eval_tag_for(row: Row, run: PlannedRun) -> str:
    return "ss" if row.eval == "ss" else _ms_settings(run.config)[2]


def _torchrun(gpus: int, module: str, args: Sequence[str]) -> None:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}",
               "-m", module, *args]
    print("$ " + shlex.join(command), flush=True)
    done = subprocess.run(command)
    if done.returncode != 0:
        raise RuntimeError(f"`{shlex.join(command)}` exited with {done.returncode}; see its output above. "
                           f"Rerunning the same reproduce command resumes from the last checkpoint.")


def _ms_overrides(config) -> list[str]:
    """The planned multi-scale protocol as eval overrides (the protocol is not part of the run id)."""
    e = config.eval
    return [f"eval.scales={list(e.scales)}", f"eval.flip={str(bool(e.flip)).lower()}",
            f"eval.crop_size={'null' if e.crop_size is None else e.crop_size}",
            f"eval.base_size={'null' if e.base_size is None else e.base_size}", f"eval.stride_ratio={e.stride_ratio}",
            f"eval.accumulate={e.accumulate}", f"eval.align_corners={str(bool(e.align_corners)).lower()}"]


def _has_ms_eval(run: PlannedRun) -> bool:
    """The run has a multi-scale evaluation made with exactly the planned protocol."""
    from encnet.engine.runs import read_json

    scales, flip, tag = _ms_settings(run.config)
    path = run.run_dir / f"eval_{tag}.json"
    if not path.is_file():
        return False
    done = read_json(path).get("settings", {})
    e, d = run.config.eval, run.config.data
    want = {"scales": list(scales), "flip": flip, "crop_size": e.crop_size or d.crop_size,
            "base_size": e.base_size or d.base_size, "stride_ratio": e.stride_ratio,
            "accumulate": e.accumulate, "align_corners": e.align_corners}
    return all(done.get(k) == v for k, v in want.items())


def _train_in_subprocesses(runs: Sequence[PlannedRun], jobs: int, runs_root: str | Path, bar,
                           device: str | None = None) -> None:
    """Train independent runs ``jobs`` at a time, one single-process ``encnet.train`` each.

    On a CPU machine a tiny demo run cannot use more than one core well, so training two runs side by side
    nearly halves the wall time. A run that starts from another (``model.init_from``) waits for it. Each run's
    output goes to ``<run_dir>/train.log``.
    """
    from encnet.engine.runlock import describe_holder, live_holder

    pending = [r for r in runs if not r.finished]
    sources = {r.run_dir: Path(r.config.model.init_from) if r.config.model.init_from else None for r in pending}
    waiting_on = {r.run_dir for r in pending}
    running: list[tuple[PlannedRun, subprocess.Popen, object]] = []
    env = dict(os.environ, OMP_NUM_THREADS=str(max(1, (os.cpu_count() or 1) // jobs)), ENCNET_NO_PROGRESS="1")
    failed: list[str] = []
    announced: set[Path] = set()
    while pending or running:
        for run, proc, log in list(running):
            if proc.poll() is None:
                continue
            log.close()
            running.remove((run, proc, log))
            waiting_on.discard(run.run_dir)
            bar.update()
            if proc.returncode != 0:
                tail = (run.run_dir / "train.log").read_text().splitlines()[-15:]
                failed.append(f"{run.run_dir} (exit {proc.returncode}):\n    " + "\n    ".join(tail))
        ready = [r for r in pending if sources[r.run_dir] not in waiting_on]
        for run in [r for r in ready if r.finished]:  # trained by another process meanwhile
            print(f"{run.run_dir} was finished by another process; reusing its result", flush=True)
            ready.remove(run)
            pending.remove(run)
            waiting_on.discard(run.run_dir)
            bar.update()
        for run in [r for r in ready if live_holder(r.run_dir)]:
            # Another script or job is training this run: skip it for now, reuse its result when it finishes.
            ready.remove(run)
            if run.run_dir not in announced:
                announced.add(run.run_dir)
                print(f"{run.run_dir} is being trained by {describe_holder(live_holder(run.run_dir) or {})}; "
                      f"skipping it for now and reusing its result when it finishes", flush=True)
        while ready and len(running) < jobs and not failed:
            run = ready.pop(0)
            pending.remove(run)
            run.run_dir.mkdir(parents=True, exist_ok=True)
            log = open(run.run_dir / "train.log", "a")
            command = [sys.executable, "-m", "encnet.train", str(run.config_file), *run.overrides, "--resume",
                       "--run-dir", str(run.run_dir), *_device_option(device)]
            running.append((run, subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env), log))
        if failed and not running:
            raise RuntimeError("training failed; rerunning the same command resumes what stopped:\n  "
                               + "\n  ".join(failed))
        if not ready and pending and not running and not announced & {r.run_dir for r in pending}:
            raise RuntimeError(f"runs wait for a stage that is not planned: {[str(r.run_dir) for r in pending]}")
        time.sleep(0.5)


def _device_option(device: str | None) -> list[str]:
    return ["--device", device] if device else []


def execute(runs: Sequence[PlannedRun], gpus: int, runs_root: str | Path, progress: bool = True,
            jobs: int = 1, evaluate_ms: bool = True, device: str | None = None) -> None:
    """Train what is unfinished (resuming from a checkpoint), then add the missing multi-scale evaluations
    (unless ``evaluate_ms`` is False).

    ``jobs`` > 1 (single-process runs only) trains that many runs side by side in subprocesses. ``device``
    ("cuda", "cpu"; None: CUDA when usable, and the paper profile refuses the CPU) goes to every training and
    evaluation.
    """
    from tqdm import tqdm

    todo = [r for r in runs if not r.finished]
    if jobs > 1 and gpus == 1 and len(todo) > 1:
        with tqdm(total=len(todo), desc=f"runs ({jobs} at a time)", unit="run", disable=not progress) as bar:
            _train_in_subprocesses(todo, jobs, runs_root, bar, device)
    for run in tqdm(runs, desc="runs", unit="run", disable=not progress):
        if not run.finished:
            if gpus > 1:
                _torchrun(gpus, "encnet.train", [str(run.config_file), *run.overrides, "--resume",
                                                 "--run-dir", str(run.run_dir), *_device_option(device)])
            else:
                from encnet.engine.train import train

                train(run.config, run_dir=run.run_dir, resume=True, device=device)
        if evaluate_ms and "ms" in run.evals and not _has_ms_eval(run):
            scales, flip, _ = _ms_settings(run.config)
            if gpus > 1:
                _torchrun(gpus, "encnet.evaluate", [str(run.run_dir), "--ms", *_device_option(device)])
            else:
                from encnet.engine.evaluate import evaluate

                evaluate(run.run_dir, scales=scales, flip=flip, eval_overrides=_ms_overrides(run.config),
                         device=device)
