"""CIFAR-10 outputs (paper §4.4, PAPER.md §7): the error/parameter table and the train/test error curves.

Both are built from classification run folders only: the final test error from ``eval.json`` (``top1_error``),
the curves from ``metrics.jsonl`` (``train_top1_error``, ``val_top1_error`` per epoch), the reported errors
from ``reported.csv``. Parameter counts come from the network a row's config names (``model_parameters``
builds it; nothing is trained or loaded).

What the curves show: "train" is the running error over each epoch's augmented (crop + flip) batches with the
network in training mode, as the engine logs it; "test" is the full test split in eval mode after the epoch
(the run's ``data.val_split``; for CIFAR-10 and the demo's ``context_textures`` that is ``test``).

Unlike the segmentation tables, a CIFAR row has two reported numbers for one model (the paper's 3.45 % and
the authors' released checkpoint's 3.35 %), so the comparison is one line per model with a reported column
and a Δ per source. Lower error is better, so the direction note reads "A < B". The printed table is the
paper's whole Table 6 (eight models with depth and parameters, ``display_whole``), with our rows inserted after
the model each plays and the model zoo's checkpoint as a row of its own.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd

from . import runlogs, stats
from .reported import UNVERIFIED_FOOTNOTE, format_reported, lookup
from .figures import save_figure
from .tables import (DIRECTION_COLUMNS, NOT_RUN, check_profile, direction_note, direction_record, ours_label,
                     output_name, output_title, paper_rows, seed_values, write_table_files)

__all__ = [
    "BEST_ERROR",
    "CURVE_COLUMNS",
    "ERROR",
    "ModelRow",
    "collect_best_errors",
    "collect_curves",
    "collect_errors",
    "compare_errors",
    "curve_points",
    "display_errors",
    "display_whole",
    "error_direction_note",
    "model_parameters",
    "plot_curves",
    "write_error_table",
]

ERROR = "error"  # the metric's name in reported.csv: top-1 test error in percent
BEST_ERROR = "best_error"  # the lowest per-epoch test error of a run (the release's reporting)
CURVE_COLUMNS = ["row", "split", "epoch", "mean", "std", "n", "runs"]
_CURVE_KEYS = {"train": "train_top1_error", "test": "val_top1_error"}


@dataclass(frozen=True)
class ModelRow:
    """One model of the table: the network that ran and the paper's network it stands for."""

    label: str  # the model that ran, as its config names it (e.g. "EncNet-8k16d" in the demo)
    paper_model: str  # the paper's model this row plays (e.g. "EncNet-32k128d")
    parameters: int | None = None  # learnable scalars of ``label``'s network
    reported: tuple[tuple[str, str, str], ...] = ()  # (column, experiment, row) in reported.csv


@functools.lru_cache(maxsize=None)
def model_parameters(name: str, num_classes: int = 10, block: str = "preact") -> int:
    """Learnable scalars of the CIFAR network ``name`` (e.g. "EncNet-32k128d") with ``num_classes`` outputs."""
    import torch

    from encnet.models.cifar import build_cifar_model, count_parameters

    with torch.device("meta"):  # shapes only: nothing is allocated for the 16.8M-parameter network
        return count_parameters(build_cifar_model(name, num_classes=num_classes, block=block))


def _relative(path: Path, root: Path | None) -> str:
    if root is not None:
        rel = os.path.relpath(path.resolve(), root.resolve())
        if not rel.startswith(".."):
            return Path(rel).as_posix()
    return path.as_posix()


def _finished_logs(refs: Iterable[tuple[str, str | Path]], runs_root: str | Path | None):
    """(label, RunLog, run folder as shown) for every finished run; missing or unfinished runs are skipped."""
    root = Path(runs_root) if runs_root is not None else None
    for label, run_dir in refs:
        run_dir = Path(run_dir)
        if not (run_dir / "config.yaml").is_file():
            continue
        log = runlogs.read_run(run_dir)
        if log.finished:
            yield label, log, _relative(run_dir, root)


def collect_errors(refs: Iterable[tuple[str, str | Path]], runs_root: str | Path | None = None) -> pd.DataFrame:
    """Final test error of each finished run of ``(row label, run folder)``, in ``runlogs.RESULT_COLUMNS``."""
    records = []
    for label, log, shown in _finished_logs(refs, runs_root):
        evaluation = log.evals.get(runlogs.SINGLE_SCALE, {})
        if "top1_error" not in evaluation:
            continue
        records.append({
            "experiment": log.config.get("experiment", log.run_dir.parent.name),
            "row": label, "seed": log.seed,
            "profile": log.config.get("profile", log.run_dir.parent.parent.name),
            "eval": runlogs.SINGLE_SCALE, "metric": ERROR, "value": float(evaluation["top1_error"]),
            "run_dir": shown,
        })
    return pd.DataFrame.from_records(records, columns=runlogs.RESULT_COLUMNS)


def collect_best_errors(refs: Iterable[tuple[str, str | Path]], runs_root: str | Path | None = None) -> pd.DataFrame:
    """Lowest per-epoch test error (``val_top1_error`` in ``metrics.jsonl``) of each finished run, metric
    ``best_error``: how the authors' release reports CIFAR-10 (``best_pred`` in experiments/recognition/main.py).

    Only logged epochs count: with ``train.val_every`` > 1 it is the best of those. Runs without any logged test
    error are left out (nothing to show), never read as 0.
    """
    records = []
    for label, log, shown in _finished_logs(refs, runs_root):
        logged = [float(r["val_top1_error"]) for r in log.metrics if "val_top1_error" in r]
        if not logged:
            continue
        records.append({
            "experiment": log.config.get("experiment", log.run_dir.parent.name),
            "row": label, "seed": log.seed,
            "profile": log.config.get("profile", log.run_dir.parent.parent.name),
            "eval": runlogs.SINGLE_SCALE, "metric": BEST_ERROR, "value": min(logged), "run_dir": shown,
        })
    return pd.DataFrame.from_records(records, columns=runlogs.RESULT_COLUMNS)


def _check_profiles(frame: pd.DataFrame, profile: str, what: str) -> None:
    check_profile(profile)
    other = sorted(set(frame["profile"]) - {profile}) if len(frame) else []
    if other:
        raise ValueError(f"a {profile}-profile {what} was given runs of profile {other}; "
                         "demo and paper runs never share a table or figure")


def compare_errors(rows: Sequence[ModelRow], reported: pd.DataFrame, results: pd.DataFrame,
                   profile: str) -> pd.DataFrame:
    """One line per model: parameters, reproduced error mean / sample std over seeds, n, and per reported
    source its value and Δ = reproduced − reported (paper profile only: demo runs measure other data)."""
    _check_profiles(results, profile, "table")
    sources = list(dict.fromkeys(column for row in rows for column, _, _ in row.reported))
    records = []
    for row in rows:
        mine = results[(results["row"] == row.label) & (results["metric"] == ERROR)].sort_values("seed")
        n = len(mine)
        mean = float(mine["value"].mean()) if n else float("nan")
        record = {
            "row": row.label, "paper_model": row.paper_model,
            "parameters": row.parameters if row.parameters is not None else pd.NA,
            "reproduced_mean": mean,
            "reproduced_std": float(mine["value"].std(ddof=1)) if n > 1 else float("nan"),
            "n": n, "ci_half_width": stats.t_interval(list(mine["value"])).half_width if n else float("nan"),
            "status": "ok" if n else NOT_RUN,
            "runs": ";".join(mine["run_dir"]),
        }
        where = {column: (experiment, name) for column, experiment, name in row.reported}
        for column in sources:
            entry = lookup(reported, *where[column], ERROR) if column in where else None
            value = float(entry["value"]) if entry is not None else float("nan")
            record[f"reported {column}"] = value
            record[f"reported_text {column}"] = format_reported(entry) if entry is not None else "—"
            record[f"verified {column}"] = entry["verified"] if entry is not None else ""
            comparable = n and entry is not None and profile == "paper"
            record[f"delta {column}"] = mean - value if comparable else float("nan")
            record[f"vs_reported {column}"] = (stats.reported_verdict(mean, record["ci_half_width"], value)
                                               if comparable else "")
        records.append(record)
    return pd.DataFrame.from_records(records)


def _sources(comparison: pd.DataFrame) -> list[str]:
    return [c[len("reported "):] for c in comparison.columns if c.startswith("reported ")]  # "reported paper"


def display_errors(comparison: pd.DataFrame, profile: str) -> pd.DataFrame:
    """The printed layout. The demo adds the paper model each narrowed network stands for."""
    lines = []
    for _, line in comparison.iterrows():
        shown = {"model": line["row"]}
        if profile != "paper":
            shown["stands for"] = line["paper_model"]
        shown["parameters"] = "—" if pd.isna(line["parameters"]) else f"{int(line['parameters']):,}"
        for source in _sources(comparison):
            shown[f"error (%) reported, {source}"] = line[f"reported_text {source}"]
        if line["status"] != "ok":
            shown["error (%) reproduced"] = line["status"]
        elif line["n"] > 1:
            shown["error (%) reproduced"] = f"{line['reproduced_mean']:.2f} ± {line['reproduced_std']:.2f}"
        else:
            shown["error (%) reproduced"] = f"{line['reproduced_mean']:.2f}"
        for source in _sources(comparison):
            delta = line[f"delta {source}"]
            shown[f"Δ {source}"] = "—" if pd.isna(delta) else f"{delta:+.2f}"
        shown["n"] = str(int(line["n"]))
        lines.append(shown)
    return pd.DataFrame(lines)


PAPER_TABLE = "cifar10"  # reported.csv experiment of Table 6


def _error_cells(line: pd.Series) -> str:
    if line["status"] != "ok":
        return line["status"]
    if line["n"] > 1:
        return f"{line['reproduced_mean']:.2f} ± {line['reproduced_std']:.2f}"
    return f"{line['reproduced_mean']:.2f}"


def display_whole(comparison: pd.DataFrame, reported: pd.DataFrame, profile: str) -> pd.DataFrame:
    """The paper's whole Table 6: its eight models (depth, parameters in millions, error), each followed by the
    authors' model zoo checkpoint where there is one and by our rows that play it ("ours" / "ours (demo)")."""
    sources = _sources(comparison)
    ours = ours_label(profile)
    lines = []

    def add(model: str, stands_for: str, source: str, depth: str, params: str, error: str, deltas: dict, n: str):
        line = {"model": model}
        if profile != "paper":
            line["stands for"] = stands_for
        line.update({"source": source, "depth": depth, "params (M)": params, "error (%)": error})
        line.update({f"Δ {s}": deltas.get(s, "—") for s in sources})
        line["n"] = n
        lines.append(line)

    def add_ours(line: pd.Series):
        params = "—" if pd.isna(line["parameters"]) else f"{int(line['parameters']) / 1e6:.2f}"
        deltas = {s: "—" if pd.isna(line[f"delta {s}"]) else f"{line[f'delta {s}']:+.2f}" for s in sources}
        add(line["row"], line["paper_model"], ours, "—", params, _error_cells(line), deltas, str(int(line["n"])))

    entries = reported[reported["experiment"] == PAPER_TABLE]
    shown = set()
    for name in paper_rows(reported, PAPER_TABLE):
        mine = entries[entries["row"] == name].set_index("metric")
        cell = {m: format_reported(mine.loc[m]) if m in mine.index else "—" for m in ("depth", "params_M", ERROR)}
        add(name, name, "paper", cell["depth"], cell["params_M"], cell[ERROR], {}, "")
        played = comparison[comparison["paper_model"] == name]
        for source in sources:
            if source == "paper" or played.empty:
                continue
            text = played[f"reported_text {source}"].iloc[0]
            if text != "—":
                add(name, name, f"authors' {source}", "—", "—", text, {}, "")
        for _, line in played.iterrows():
            add_ours(line)
            shown.add(line["row"])
    for _, line in comparison[~comparison["row"].isin(shown)].iterrows():
        add_ours(line)
    return pd.DataFrame(lines)


def error_direction_check(comparison: pd.DataFrame, lower: str, higher: str, results: pd.DataFrame) -> dict:
    """The paper's claim that ``lower`` has the lower test error than ``higher``: the paired 95 % interval of
    ``error(higher) − error(lower)`` over shared seeds and its verdict.

    Gaps are "better − worse" in the sense of the segmentation tables' direction checks (here: the higher
    error minus the lower), so ``encnet.experiments.summary`` reads both alike.
    """
    reported = comparison.set_index("row").get("reported paper", pd.Series(dtype=float))
    paper_gap = (float(reported[higher]) - float(reported[lower])
                 if lower in reported and higher in reported else float("nan"))
    return direction_record(f"{lower} < {higher} (test error)", ERROR, seed_values(results, higher, ERROR),
                            seed_values(results, lower, ERROR), paper_gap)


def error_direction_note(comparison: pd.DataFrame, lower: str, higher: str, results: pd.DataFrame) -> str:
    """The footnote, with the gap shown as lower − higher (negative when the claim holds)."""
    return direction_note(error_direction_check(comparison, lower, higher, results), gap_sign=-1.0)


def write_error_table(comparison: pd.DataFrame, name: str, title: str, caption: str, profile: str,
                      out_dir: str | Path, notes: Sequence[str] = (), checks: Sequence[dict] = (),
                      reported: pd.DataFrame | None = None) -> list[Path]:
    """Write ``<out_dir>/tables/<name>[_demo].{md,csv,tex}``; the CSV holds the numbers behind the table.

    With ``reported`` the printed table is the paper's whole Table 6 (``display_whole``); without, our rows only.
    """
    stem = output_name(name, profile)
    title = output_title(title, profile)
    notes = list(notes)
    if any((comparison[f"verified {s}"] == "no").any() for s in _sources(comparison)):
        notes.append(UNVERIFIED_FOOTNOTE)
    if (comparison["runs"].astype(str) != "").any():
        notes.append("The runs behind each row (under the runs root) are in the CSV's runs column.")
    table = display_errors(comparison, profile) if reported is None else display_whole(comparison, reported, profile)
    return write_table_files(table, comparison, stem, title, caption, notes, out_dir,
                             pd.DataFrame(list(checks), columns=DIRECTION_COLUMNS) if checks else None)


# ----------------------------------------------------------------------------------------------------- curves


def collect_curves(refs: Iterable[tuple[str, str | Path]], runs_root: str | Path | None = None) -> pd.DataFrame:
    """Per-epoch errors of each finished run: columns row, seed, profile, epoch, split (train/test), error,
    run_dir. Epochs without a test evaluation (``train.val_every`` > 1) have only their train point."""
    records = []
    for label, log, shown in _finished_logs(refs, runs_root):
        profile = log.config.get("profile", log.run_dir.parent.parent.name)
        for record in log.metrics:
            for split, key in _CURVE_KEYS.items():
                if key in record:
                    records.append({"row": label, "seed": log.seed, "profile": profile,
                                    "epoch": int(record["epoch"]), "split": split, "error": float(record[key]),
                                    "run_dir": shown})
    return pd.DataFrame.from_records(records, columns=["row", "seed", "profile", "epoch", "split", "error",
                                                       "run_dir"])


def curve_points(curves: pd.DataFrame, rows: Sequence[str], profile: str) -> pd.DataFrame:
    """Mean and sample std over seeds per (row, split, epoch), rows in the given order; a row without runs
    contributes nothing (the figure names it as not run)."""
    _check_profiles(curves, profile, "figure")
    records = []
    for row in rows:
        mine = curves[curves["row"] == row]
        for (split, epoch), group in mine.groupby(["split", "epoch"], sort=True):
            n = len(group)
            records.append({"row": row, "split": split, "epoch": int(epoch),
                            "mean": float(group["error"].mean()),
                            "std": float(group["error"].std(ddof=1)) if n > 1 else float("nan"),
                            "n": n, "runs": ";".join(sorted(group["run_dir"]))})
    return pd.DataFrame.from_records(records, columns=CURVE_COLUMNS)


def plot_curves(points: pd.DataFrame, rows: Sequence[str], name: str, title: str, profile: str,
                out_dir: str | Path, subtitle: str = "") -> list[Path]:
    """Two panels (train, test error against epoch), one line per model with a ±std band over seeds.

    Writes ``figures/<name>[_demo].{png,pdf,csv}``; the CSV holds the plotted points.
    """
    import matplotlib

    matplotlib.use("Agg")  # only here, at draw time: importing the library never touches the backend
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9.0, 3.6), sharey=True)
    missing = [row for row in rows if not (points["row"] == row).any()]
    for ax, split in zip(axes, ("train", "test")):
        for i, row in enumerate(rows):
            mine = points[(points["row"] == row) & (points["split"] == split)]
            if mine.empty:
                continue
            colour = f"C{i}"
            seeds = int(mine["n"].max())
            ax.plot(mine["epoch"], mine["mean"], color=colour, marker="o", markersize=3,
                    label=f"{row} ({seeds} seed{'s' if seeds > 1 else ''})")
            if seeds > 1:
                low, high = mine["mean"] - mine["std"].fillna(0.0), mine["mean"] + mine["std"].fillna(0.0)
                ax.fill_between(mine["epoch"], low, high, color=colour, alpha=0.2, linewidth=0)
        ax.set_xlabel("epoch")
        ax.set_title(f"{split} error", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("top-1 error (%)")
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(fontsize=8)
    suptitle = output_title(title, profile) + " (mean ± std over seeds)"
    if subtitle:
        suptitle += "\n" + subtitle
    if missing:
        suptitle += "\nnot run: " + ", ".join(missing)
    fig.suptitle(suptitle, fontsize=10)
    return save_figure(fig, points, name, profile, out_dir)
