"""Sweep figures: pixAcc and mIoU against one knob (SE-loss weight α, number of codewords K), from run logs.

The paper gives these curves only as plots (Figure 5); ``reported.csv`` holds them as ``verified=plot`` rows read
from the PDF's vector drawing. Each figure draws our runs (mean over seeds) beside the paper's curve,
labelled as read from the plot: on the same axes for the paper profile, on a second y-axis for the demo (its
numbers live on another scale). Our bars are 95 % t intervals of each point's mean over seeds; the sweep's paired
direction checks (e.g. K = 32 against K = 0, seeds paired) are printed under the title with their verdicts. A
reproduced point at a setting the paper did not run (an extra K) gets a hollow marker. ``sweep_points`` and
``paper_points`` are pure and tested; ``plot_sweep`` draws with matplotlib's Agg canvas and writes PNG + PDF,
plus the plotted points (ours and the paper's) as CSV so the figure is data too.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd

from . import stats
from .reported import PLOT_LABEL
from .tables import output_name, output_title

POINT_COLUMNS = ["x", "row", "metric", "mean", "std", "ci_half_width", "n", "runs"]
PAPER_COLUMNS = ["x", "row", "metric", "value", "verified"]
OURS, PAPER = "reproduced", "paper"


def sweep_points(results: pd.DataFrame, x_of_row: Mapping[str, float], metrics: Sequence[str],
                 profile: str) -> pd.DataFrame:
    """Mean ± std over seeds per (x, metric); a row without runs has n = 0 and NaN mean (a gap in the plot)."""
    other = sorted(set(results["profile"]) - {profile}) if len(results) else []
    if other:
        raise ValueError(f"a {profile}-profile figure was given runs of profile {other}; "
                         "demo and paper runs never share a figure")
    records = []
    for row, x in x_of_row.items():
        for metric in metrics:
            mine = results[(results["row"] == row) & (results["metric"] == metric)]
            n = len(mine)
            records.append({
                "x": float(x), "row": row, "metric": metric,
                "mean": float(mine["value"].mean()) if n else float("nan"),
                "std": float(mine["value"].std(ddof=1)) if n > 1 else float("nan"),
                "ci_half_width": stats.t_interval(list(mine["value"])).half_width if n else float("nan"),
                "n": n, "runs": ";".join(sorted(mine["run_dir"])),
            })
    return pd.DataFrame.from_records(records, columns=POINT_COLUMNS).sort_values(["metric", "x"],
                                                                                 kind="stable")


def paper_points(reported: pd.DataFrame, experiment: str, metrics: Sequence[str]) -> pd.DataFrame:
    """The paper's curve for ``experiment`` (e.g. ``codewords_curve``): x is the value after '=' in the row name
    ("alpha=0.1" → 0.1, "K=0" → 0, global average pooling)."""
    mine = reported[(reported["experiment"] == experiment) & reported["metric"].isin(list(metrics))]
    if mine.empty:
        raise ValueError(f"reported.csv has no rows of experiment {experiment!r} for metrics {list(metrics)}")
    records = []
    for _, entry in mine.iterrows():
        name, sep, x = entry["row"].partition("=")
        if not sep:
            raise ValueError(f"reported.csv row {entry['row']!r} of {experiment!r}: expected '<knob>=<value>'")
        records.append({"x": float(x), "row": entry["row"], "metric": entry["metric"], "value": entry["value"],
                        "verified": entry["verified"]})
    return pd.DataFrame.from_records(records, columns=PAPER_COLUMNS).sort_values(["metric", "x"], kind="stable")


def paper_at_rows(paper: pd.DataFrame | None, x_of_row: Mapping[str, float]) -> pd.DataFrame:
    """The paper's curve as (row, metric, reported) lines for the rows at its x values, so that a sweep's
    direction checks carry the paper's gap (``encnet.report.tables.direction_checks``)."""
    records = []
    if paper is not None:
        for row, x in x_of_row.items():
            for _, point in paper[paper["x"] == float(x)].iterrows():
                records.append({"row": row, "metric": point["metric"], "reported": float(point["value"])})
    return pd.DataFrame.from_records(records, columns=["row", "metric", "reported"])


def positions(xs: Sequence[float], log2_x: bool) -> dict[float, float]:
    """Where each x sits on the axis. On a log2 axis x = 0 (K = 0: global average pooling, no codewords) has no
    place, so it goes one step left of the smallest positive x and is labelled by name."""
    xs = sorted(set(float(x) for x in xs))
    if not log2_x:
        return {x: x for x in xs}
    positive = [x for x in xs if x > 0]
    left = math.log2(min(positive)) - 1 if positive else 0.0
    return {x: math.log2(x) if x > 0 else left for x in xs}


def _label(x: float, zero_label: str) -> str:
    return zero_label if x == 0 else format(x, "g")


def plot_sweep(points: pd.DataFrame, name: str, title: str, xlabel: str, chosen: float, chosen_label: str,
               profile: str, out_dir: str | Path, log2_x: bool = False, paper: pd.DataFrame | None = None,
               zero_label: str = "0", checks: pd.DataFrame | None = None) -> list[Path]:
    """One panel per metric; the paper's chosen setting as a dashed line and, when ``paper`` is given, the
    paper's curve (same axes for the paper profile, a second y-axis for the demo). Writes
    ``figures/<name>[_demo].*``."""
    import matplotlib

    matplotlib.use("Agg")  # only here, at draw time: importing the library never touches the backend
    import matplotlib.pyplot as plt

    paper_x = set(paper["x"]) if paper is not None else None
    all_x = list(points["x"]) + (list(paper["x"]) if paper is not None else []) + [chosen]
    at = positions(all_x, log2_x)
    metrics = list(dict.fromkeys(points["metric"]))
    fig, axes = plt.subplots(1, len(metrics), figsize=(max(4.6 * len(metrics), 7.0), 3.6), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        mine = points[(points["metric"] == metric) & (points["n"] > 0)]
        is_extra = ~mine["x"].isin(paper_x) if paper_x is not None else pd.Series(False, index=mine.index)
        ax.errorbar([at[x] for x in mine["x"]], mine["mean"], yerr=mine["ci_half_width"].fillna(0.0), capsize=3,
                    color="tab:blue")
        core, extra = mine[~is_extra], mine[is_extra]
        ax.plot([at[x] for x in core["x"]], core["mean"], linestyle="none", marker="o", color="tab:blue",
                label=f"reproduced ({profile})")
        if len(extra):
            ax.plot([at[x] for x in extra["x"]], extra["mean"], linestyle="none", marker="o", markersize=7,
                    markerfacecolor="white", markeredgecolor="tab:blue", zorder=3,
                    label="reproduced, extra point (not in the paper)")
        ax.axvline(at[float(chosen)], color="tab:red", linestyle="--", linewidth=1, label=chosen_label)
        theirs = paper[paper["metric"] == metric] if paper is not None else None
        if theirs is not None and not theirs.empty:  # (the demo's mIoU_scene has no paper curve)
            target = ax if profile == "paper" else ax.twinx()
            target.plot([at[x] for x in theirs["x"]], theirs["value"], color="tab:gray", linestyle=":",
                        marker="s", markersize=4, label=PLOT_LABEL)
            if target is not ax:
                target.set_ylabel(f"paper {metric} (%), PASCAL-Context", color="tab:gray", fontsize=8)
                target.tick_params(axis="y", colors="tab:gray", labelsize=8)
        ticks = sorted(at)
        ax.set_xticks([at[x] for x in ticks])
        ax.set_xticklabels([_label(x, zero_label) for x in ticks])
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"{metric} (%)" if profile == "paper" else f"reproduced {metric} (%)")
        ax.grid(alpha=0.3)
        missing = points[(points["metric"] == metric) & (points["n"] == 0)]["x"].tolist()
        if missing:
            ax.set_title("not run: " + ", ".join(_label(x, zero_label) for x in missing), fontsize=8)
    handles, labels = [], []
    for ax in fig.axes[: len(fig.axes)]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    axes[0][0].legend(handles, labels, fontsize=7)
    n_max = int(points["n"].max()) if len(points) else 0
    spread = (f"mean and 95 % t interval over {n_max} seeds" if n_max > 1
              else "one seed per point: no error bars")
    if paper is not None and profile != "paper":
        spread += "; the paper's curve on the right axis"
    verdicts = ""
    if checks is not None and len(checks):
        parts = []
        for _, c in checks.iterrows():
            interval = stats.Interval(c["reproduced_gap"], c["ci_low"], c["ci_high"], int(c["n_pairs"]))
            parts.append(f"{c['claim']}: {stats.format_interval(interval)} → {c['verdict']}")
        verdicts = "\n" + "; ".join(parts)
    fig.suptitle(f"{output_title(title, profile)}\n({spread}){verdicts}", fontsize=9 if verdicts else 10)
    data = points.assign(source=OURS)
    if paper is not None:
        data["extra"] = ~data["x"].isin(paper_x)
        theirs = paper.rename(columns={"value": "mean"}).assign(std=float("nan"), ci_half_width=float("nan"), n=pd.NA,
                                                                 runs="",
                                                                 source=PAPER, extra=False)
        data = pd.concat([data, theirs[data.columns]], ignore_index=True)
    return save_figure(fig, data, name, profile, out_dir)


def save_figure(fig, points: pd.DataFrame, name: str, profile: str, out_dir: str | Path) -> list[Path]:
    """Write ``figures/<name>[_demo].{png,pdf,csv}`` (the CSV: the plotted points) and close the figure.

    Dates and producer strings are left out of the files so that the same logs give byte-identical figures.
    """
    import matplotlib.pyplot as plt

    fig.tight_layout()
    folder = Path(out_dir) / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    stem = output_name(name, profile)
    paths = [folder / f"{stem}.png", folder / f"{stem}.pdf", folder / f"{stem}.csv"]
    fig.savefig(paths[0], dpi=120, metadata={"Software": None})
    fig.savefig(paths[1], metadata={"CreationDate": None, "Producer": None, "Creator": None})
    plt.close(fig)
    points.to_csv(paths[2], index=False, float_format="%.4f")
    return paths
