"""Run folders as the analysis sees them: which finished runs exist, a model label for each, and the
FCN / EncNet pair a failure-case comparison should use."""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from encnet.analysis.predictions import SINGLE_SCALE


def project_root(start: str | Path | None = None) -> Path:
    """The repository root above ``start`` (default: the working directory; notebooks run in ``notebooks/``)."""
    start = Path(start or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if (folder / "pyproject.toml").is_file() and (folder / "encnet").is_dir():
            return folder
    return start


@dataclass
class RunSummary:
    """One run folder as the analysis sees it."""

    run_dir: Path
    label: str  # "FCN", "EncNet", "EncNet (no SE-loss)"
    config: dict
    evaluation: dict  # the eval*.json of the chosen tag ({} when it has not been evaluated)
    finished: bool

    @property
    def has_se_head(self) -> bool:
        return self.config.get("model", {}).get("name") == "encnet" and bool(self.config["model"].get("se_loss"))


def _model_label(config: dict) -> str:
    model = config.get("model", {})
    if model.get("name") == "fcn":
        return "FCN"
    if model.get("name") == "encnet":
        return "EncNet" if model.get("se_loss", True) else "EncNet (no SE-loss)"
    return str(model.get("name", "?"))


def load_run(run_dir: str | Path, tag: str = SINGLE_SCALE) -> RunSummary:
    """Config, evaluation ``tag`` and a model label of one run folder."""
    from encnet.report.runlogs import read_run

    log = read_run(run_dir)
    return RunSummary(Path(run_dir), _model_label(log.config), log.config, log.evals.get(tag, {}), log.finished)


def _started(run_dir: Path) -> str:
    env = run_dir / "env.json"
    if env.is_file():
        stamp = json.loads(env.read_text()).get("start_time")
        if stamp:
            return str(stamp)
    done = run_dir / "DONE"
    marker = done if done.is_file() else run_dir
    return _dt.datetime.fromtimestamp(marker.stat().st_mtime, _dt.timezone.utc).isoformat(timespec="seconds")


def list_runs(runs_root: str | Path, profile: str = "demo") -> pd.DataFrame:
    """Finished segmentation runs (FCN and EncNet) of ``profile`` under ``runs_root``, newest first."""
    from encnet.report.runlogs import read_run

    records = []
    for config_path in sorted(Path(runs_root).glob(f"{profile}/*/*/config.yaml")):
        run_dir = config_path.parent
        log = read_run(run_dir)
        model, data = log.config.get("model", {}), log.config.get("data", {})
        is_segmentation = log.config.get("task", "segmentation") == "segmentation"
        if not (log.finished and is_segmentation and model.get("name") in ("fcn", "encnet")):
            continue
        records.append({
            "run_dir": run_dir, "experiment": log.config.get("experiment", run_dir.parent.name),
            "model": model.get("name"), "backbone": model.get("backbone"),
            "se_loss": model.get("name") == "encnet" and bool(model.get("se_loss")),
            "num_codes": model.get("num_codes"), "seed": log.seed, "dataset": data.get("dataset"),
            "started": _started(run_dir),
            "predictions": ",".join(sorted(p.name for p in (run_dir / "predictions").glob("*") if p.is_dir())),
            "_data": json.dumps({k: data.get(k) for k in ("dataset", "options", "val_split", "num_classes")},
                                sort_keys=True),
            # The recipe is the optimisation and the augmentation: an EncNet trained with, say, rotation (a
            # ledger switch) is not the FCN's counterpart even on the same data.
            "_train": json.dumps({"train": log.config.get("train", {}),
                                  "data": {k: v for k, v in data.items() if k not in ("root", "workers")}},
                                 sort_keys=True),
            # The suite's default heads, no ledger switch flipped: EncNet with the released attention, no lateral
            # path and the FCN aux head; FCN without an aux head (ledger fcn_aux).
            "_default_head": (not model.get("aux", True)) if model.get("name") == "fcn" else (
                model.get("attention", "release") == "release" and not model.get("lateral", False)
                and model.get("aux_head", "fcn") == "fcn"),
        })
    columns = ["run_dir", "experiment", "model", "backbone", "se_loss", "num_codes", "seed", "dataset", "started",
               "predictions", "_data", "_train", "_default_head"]
    frame = pd.DataFrame.from_records(records, columns=columns)
    return frame.sort_values(["started", "run_dir"], ascending=False, kind="stable").reset_index(drop=True)


def find_latest_pair(runs_root: str | Path, profile: str = "demo") -> tuple[Path, Path]:
    """(FCN run, EncNet run) to compare: the latest finished FCN baseline run (without an aux head, the suite's
    default, when there is one), and the EncNet run that best matches it.

    Among finished EncNet runs on the same data (dataset, generator options, split), the match prefers, in
    order: the sibling experiment (``pcontext_fcn_r50`` → ``pcontext_encnet_r50``), the SE-loss head switched
    on (the presence analysis needs it), the same seed, the same training recipe (optimisation and
    augmentation), the paper's K=32 codewords, the released head (no ledger switch flipped), the same backbone;
    then the latest. Sweeps and ablations of the same data therefore never win over the
    plain EncNet run of the same recipe.
    """
    runs = list_runs(runs_root, profile)
    fix = (f"train both first, e.g. `python -m encnet.train configs/{profile}/pcontext_fcn_r50.yaml` and "
           f"`python -m encnet.train configs/{profile}/pcontext_encnet_r50.yaml` (run folders go to runs/)")
    fcns = runs[runs["model"] == "fcn"]
    if fcns.empty:
        raise FileNotFoundError(f"no finished {profile}-profile FCN run under {Path(runs_root)}/{profile}/; {fix}")
    fcn = fcns.sort_values("_default_head", ascending=False, kind="stable").iloc[0]  # then the latest
    encnets = runs[(runs["model"] == "encnet") & (runs["_data"] == fcn["_data"])]
    if encnets.empty:
        raise FileNotFoundError(f"no finished {profile}-profile EncNet run on the data of {fcn['run_dir']} under "
                                f"{Path(runs_root)}/{profile}/; {fix}")
    sibling = str(fcn["experiment"]).replace("fcn", "encnet")
    score = pd.DataFrame({
        "sibling": encnets["experiment"] == sibling,
        "se_loss": encnets["se_loss"],
        "seed": encnets["seed"] == fcn["seed"],
        "recipe": encnets["_train"] == fcn["_train"],
        "k32": encnets["num_codes"] == 32,
        "default_head": encnets["_default_head"],
        "backbone": encnets["backbone"] == fcn["backbone"],
        "started": encnets["started"],
    })
    best = score.sort_values(list(score.columns), ascending=False, kind="stable").index[0]
    return Path(fcn["run_dir"]), Path(encnets.loc[best, "run_dir"])
