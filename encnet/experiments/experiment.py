"""What a reproduce script runs: an experiment is a list of rows; a row is (label, config file, overrides,
evaluation, reported-row keys).

Each (row, seed) resolves to a config and so to its run folder (``encnet.experiments.planning.plan``): two rows
with the same resolved config are the same run, trained once. The experiments themselves are defined in
``segmentation`` (Tables 1–4, Figure 5), ``cifar`` (Table 6) and ``discrepancies_table`` (the ledger).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

REPO = Path(__file__).resolve().parents[2]
CONFIG_ROOT = REPO / "configs"
PROFILES = ("demo", "paper")


@dataclass(frozen=True)
class Row:
    """One line of a table or one point of a figure, and the run behind it."""

    label: str
    config: str | None  # file name under configs/<profile>/; None: nothing can run (e.g. a test-server score)
    overrides: tuple[str, ...] = ()
    eval: str = "ss"  # "ss": the single-scale eval.json every run writes; "ms": the config's multi-scale + flip
    reported: tuple[str, str] | None = None  # (experiment, row) in reported.csv
    not_run_reason: str | None = None  # shown instead of a result; the run still trains when config is set
    init_from: str | None = None  # label of the row whose run (same seed) initialises this one (VOC stages)
    x: float | None = None  # position on a sweep figure
    extra: bool = False  # a sweep point the paper did not run (labelled so; the figure marks it from the paper curve)
    comparable: bool = True  # False when the reproduced split differs from the reported one
    # How many of the experiment's seeds (the first ones) this row runs; None: all. The demo gives each arm the
    # seeds its claims' power plan asks for, and a direction pairs the seeds both of its arms ran.
    num_seeds: int | None = None

    def seeds(self, seeds: Sequence[int]) -> tuple[int, ...]:
        return tuple(seeds if self.num_seeds is None else seeds[: self.num_seeds])


@dataclass(frozen=True)
class Experiment:
    name: str  # output stem: tables/<name>.md or figures/<name>.png (with _demo for the demo profile)
    title: str
    caption: str
    rows: tuple[Row, ...]
    seeds: tuple[int, ...] = (0,)
    metrics: tuple[str, ...] = ("pixAcc", "mIoU")
    directions: tuple = ()  # encnet.report.tables.Direction
    figure: dict | None = None  # xlabel, chosen, chosen_label, log2_x, paper_curve: the experiment is a figure
    sections: tuple = ()  # encnet.report.tables.Section: the paper's whole table, printed around our rows
    learned: object = None  # encnet.report.tables.Learned: the demo's learning criterion, shown under the table
