"""Sweep figures: pixAcc and mIoU against one knob (SE-loss weight α, number of codewords K), from run logs.

The paper gives these curves only as plots, so there is no reported series: the figure shows our runs (mean ±
std over seeds) with the paper's chosen setting marked. ``sweep_points`` is pure and tested; ``plot_sweep``
draws with matplotlib's Agg canvas (no display needed) and writes PNG + PDF, plus the plotted points as CSV so
the figure is data too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd

from .tables import output_name, output_title

POINT_COLUMNS = ["x", "row", "metric", "mean", "std", "n", "runs"]


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
                "n": n, "runs": ";".join(sorted(mine["run_dir"])),
            })
    return pd.DataFrame.from_records(records, columns=POINT_COLUMNS).sort_values(["metric", "x"],
                                                                                 kind="stable")


def plot_sweep(points: pd.DataFrame, name: str, title: str, xlabel: str, chosen: float, chosen_label: str,
               profile: str, out_dir: str | Path, log2_x: bool = False) -> list[Path]:
    """One panel per metric; the paper's chosen setting as a dashed line. Writes ``figures/<name>[_demo].*``."""
    import matplotlib

    matplotlib.use("Agg")  # only here, at draw time: importing the library never touches the backend
    import matplotlib.pyplot as plt

    metrics = list(dict.fromkeys(points["metric"]))
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.4), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        mine = points[(points["metric"] == metric) & (points["n"] > 0)]
        ax.errorbar(mine["x"], mine["mean"], yerr=mine["std"].fillna(0.0), marker="o", capsize=3, label="reproduced")
        ax.axvline(chosen, color="tab:red", linestyle="--", linewidth=1, label=chosen_label)
        if log2_x:
            ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(points["x"].unique()))
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"{metric} (%)")
        ax.grid(alpha=0.3)
        missing = points[(points["metric"] == metric) & (points["n"] == 0)]["x"].tolist()
        if missing:
            ax.set_title("not run: " + ", ".join(format(x, "g") for x in missing), fontsize=8)
    axes[0][0].legend(fontsize=8)
    n_max = int(points["n"].max()) if len(points) else 0
    spread = f"mean ± std over {n_max} seeds" if n_max > 1 else "one seed per point: no error bars"
    fig.suptitle(f"{output_title(title, profile)}\n({spread})", fontsize=10)
    return save_figure(fig, points, name, profile, out_dir)


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
