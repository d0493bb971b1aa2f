"""Finished runs, read back from their folders into one tidy DataFrame.

Only run-folder files are read (``config.yaml``, ``eval*.json``, ``metrics.jsonl``, ``DONE``; layout in
``encnet.engine.runs``): tables and figures never import training code, so any run folder — copied from a cluster,
or a committed fixture — rebuilds the same outputs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import pandas as pd
import yaml

from encnet.engine.config import SafeLoader

RESULT_COLUMNS = ["experiment", "row", "seed", "profile", "eval", "metric", "value", "run_dir"]
SCALAR_METRICS = ("pixAcc", "mIoU")
# Generated demo data with object-size bins: mean IoU of the scene-dependent classes near small / large objects.
SIZE_BIN_METRICS = ("mIoU_small", "mIoU_large")
# Generated demo data: mean IoU of the scene-dependent classes over the whole split (did the network read the scene).
SCENE_METRIC = "mIoU_scene"
# ADE20K's challenge score (PAPER.md §5), derived so that a val run can be set beside the test-server number.
DERIVED_METRICS = {"final_score": lambda e: (e["pixAcc"] + e["mIoU"]) / 2}
SINGLE_SCALE = "ss"  # the tag of the default evaluation, stored as eval.json
CLASS_IOU_PREFIX = "IoU_"  # per-class IoU as reported.csv names it (IoU_aeroplane); from eval*.json's IoU list


def class_ious(evaluation: dict) -> dict[str, float]:
    """``{"IoU_<class name>": IoU}`` from an eval record's ``IoU`` list and ``class_names`` (both written by
    ``encnet.evaluate``; one confusion matrix over the split). A class with no union (IoU null or NaN) is left out;
    a record without class names gives nothing, since positions alone cannot be matched to the paper's columns."""
    names, ious = evaluation.get("class_names"), evaluation.get("IoU")
    if not names or ious is None:
        return {}
    if len(names) != len(ious):
        raise ValueError(f"eval record has {len(ious)} IoU values for {len(names)} class names")
    return {f"{CLASS_IOU_PREFIX}{name}": float(iou) for name, iou in zip(names, ious)
            if iou is not None and iou == iou}  # null or NaN: no union


def eval_file(tag: str) -> str:
    """``eval.json`` for the single-scale evaluation, ``eval_<tag>.json`` for any other (``encnet.evaluate``'s
    tags, e.g. ``ms_flip``)."""
    return "eval.json" if tag == SINGLE_SCALE else f"eval_{tag}.json"


@dataclass
class RunLog:
    """Everything a table needs from one run folder."""

    run_dir: Path
    config: dict
    finished: bool
    evals: dict[str, dict] = field(default_factory=dict)  # tag -> eval*.json contents
    metrics: list[dict] = field(default_factory=list)  # metrics.jsonl, one dict per epoch

    @property
    def seed(self) -> int:
        return int(self.config.get("seed", 0))


def read_run(run_dir: str | Path) -> RunLog:
    """Read one run folder; a folder without ``config.yaml`` is an error that names it."""
    run_dir = Path(run_dir)
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run folder: expected {config_path} "
                                "(written by `python -m encnet.train CONFIG`)")
    config = yaml.load(config_path.read_text(), Loader=SafeLoader) or {}
    evals = {}
    for path in sorted(run_dir.glob("eval*.json")):
        tag = SINGLE_SCALE if path.name == "eval.json" else path.stem[len("eval_"):]
        evals[tag] = json.loads(path.read_text())
    metrics_path = run_dir / "metrics.jsonl"
    metrics = ([json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
               if metrics_path.is_file() else [])
    return RunLog(run_dir, config, (run_dir / "DONE").is_file(), evals, metrics)


def _relative(path: Path, root: Path | None) -> str:
    if root is not None:
        try:
            return path.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            pass
    return path.as_posix()


def collect_results(refs: Iterable[tuple[str, str | Path, str]], runs_root: str | Path | None = None) -> pd.DataFrame:
    """Tidy results for ``(row label, run folder, eval tag)`` references.

    A reference whose run is missing, unfinished or lacks that evaluation contributes nothing, so the table
    shows "not run" for it. ``run_dir`` is written relative to ``runs_root`` so outputs do not depend on
    where the runs folder sits.
    """
    root = Path(runs_root) if runs_root is not None else None
    records = []
    for row, run_dir, tag, log in shown_runs(refs):
        values = {m: float(log.evals[tag][m]) for m in SCALAR_METRICS if m in log.evals[tag]}
        values.update({m: f(values) for m, f in DERIVED_METRICS.items() if set(SCALAR_METRICS) <= set(values)})
        values.update({m: float(log.evals[tag][m]) for m in SIZE_BIN_METRICS
                       if log.evals[tag].get(m) is not None and log.evals[tag][m] == log.evals[tag][m]})
        scene = log.evals[tag].get(SCENE_METRIC)
        if scene is not None and scene == scene:  # not NaN
            values[SCENE_METRIC] = float(scene)
        if set(SIZE_BIN_METRICS) <= set(values):
            # Paired across arms, its difference is "gain on small objects − gain on large ones" (claim 3).
            values["mIoU_small_minus_large"] = values["mIoU_small"] - values["mIoU_large"]
        values.update(class_ious(log.evals[tag]))
        for metric, value in values.items():
            records.append({
                "experiment": log.config.get("experiment", run_dir.parent.name),
                "row": row,
                "seed": log.seed,
                "profile": log.config.get("profile", run_dir.parent.parent.name),
                "eval": tag,
                "metric": metric,
                "value": value,
                "run_dir": _relative(run_dir, root),
            })
    return pd.DataFrame.from_records(records, columns=RESULT_COLUMNS)


def shown_runs(refs: Iterable[tuple[str, str | Path, str]]):
    """(row, run_dir, tag, log) for each reference whose number a table shows: a finished run with that evaluation."""
    for row, run_dir, tag in refs:
        run_dir = Path(run_dir)
        if not (run_dir / "config.yaml").is_file():
            continue
        log = read_run(run_dir)
        if log.finished and tag in log.evals:
            yield row, run_dir, tag, log


BEST_VAL_COLUMNS = ["row", "seed", "profile", "best_val_epoch", "epochs", "best_val_pixAcc", "best_val_mIoU",
                    "run_dir"]


def collect_best_validation(refs: Iterable[tuple[str, str | Path, str]],
                            runs_root: str | Path | None = None) -> pd.DataFrame:
    """The release's checkpoint choice for each run behind a table row (ledger entry checkpoint_selection).

    Training logs ``best_val_epoch``, ``best_val_pixAcc`` and ``best_val_mIoU`` (the best so far by
    (pixAcc + mIoU) / 2, ``encnet.metrics.best_validation``) on every validation line of ``metrics.jsonl``; the
    last such line is the run's choice. ``epochs`` is the last logged epoch. Only runs whose number the table
    shows count (finished, with the row's evaluation, as in ``collect_results``); a run that logged no
    validation contributes nothing.
    """
    root = Path(runs_root) if runs_root is not None else None
    records = []
    for row, run_dir, tag, log in shown_runs(refs):
        logged = [r for r in log.metrics if "best_val_epoch" in r]
        if not logged:
            continue
        best = logged[-1]
        records.append({
            "row": row, "seed": log.seed, "profile": log.config.get("profile", run_dir.parent.parent.name),
            "best_val_epoch": int(best["best_val_epoch"]), "epochs": int(log.metrics[-1]["epoch"]),
            "best_val_pixAcc": float(best["best_val_pixAcc"]), "best_val_mIoU": float(best["best_val_mIoU"]),
            "run_dir": _relative(run_dir, root),
        })
    return pd.DataFrame.from_records(records, columns=BEST_VAL_COLUMNS)


def flatten(config: dict, prefix: str = "") -> dict:
    """``{"model": {"num_codes": 32}}`` → ``{"model.num_codes": 32}`` (dotted keys, as overrides spell them)."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def scan_runs(runs_root: str | Path, profile: str | None = None) -> pd.DataFrame:
    """One row per run folder under ``runs_root`` (``<profile>/<experiment>/<run-id>``), config flattened."""
    root = Path(runs_root)
    pattern = f"{profile}/*/*/config.yaml" if profile else "*/*/*/config.yaml"
    records = []
    for config_path in sorted(root.glob(pattern)):
        log = read_run(config_path.parent)
        records.append({"run_dir": _relative(log.run_dir, root), "finished": log.finished,
                        "evals": ",".join(sorted(log.evals)), "epochs_logged": len(log.metrics),
                        **flatten(log.config)})
    return pd.DataFrame.from_records(records)
