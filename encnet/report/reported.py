"""The numbers the paper (and the authors' model zoo, and peer reproductions) report.

`reported.csv` next to this file is the one place they live: one row per (experiment, row, metric), each with its
source. It is a byte-for-byte copy of ``shared/paper/reported.csv`` (checked against the paper's PDF; a test keeps
the two equal). ``verified`` says how each value was checked: ``yes`` (read from the PDF's text), ``plot`` (a
value the paper only plots, Figure 5, read from its vector drawing: figures draw it as the paper's curve, marked
as read from the plot), ``no`` (not checked: tables show it with a dagger and a footnote; the shipped file has
none, the mark stays for anyone who adds a number before checking it).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

REPORTED_CSV = Path(__file__).with_name("reported.csv")
UNVERIFIED_MARK = "†"
UNVERIFIED_FOOTNOTE = (
    f"{UNVERIFIED_MARK} Reported value not yet checked against its source (`verified=no` in "
    "`encnet/report/reported.csv`); check it before citing it."
)
VERIFIED_VALUES = ("yes", "plot", "no")
PLOT_LABEL = "paper, read from Fig. 5"  # how figures name a verified=plot series
COLUMNS = ["experiment", "table", "row", "model", "backbone", "dataset", "split", "eval", "metric", "value",
           "source", "verified"]


def load_reported(path: str | Path = REPORTED_CSV) -> pd.DataFrame:
    """Read reported.csv; ``value`` is a float, ``value_text`` keeps the precision the source printed."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"reported numbers not found: expected {path} (it ships with the package; "
                                "reinstall with `pip install -e .`)")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path} lacks the column(s) {missing}; expected the header {','.join(COLUMNS)}")
    bad = sorted(set(frame["verified"]) - set(VERIFIED_VALUES))
    if bad:
        raise ValueError(f"{path}: column 'verified' must be one of {VERIFIED_VALUES}, found {bad}")
    frame["value_text"] = frame["value"].str.strip()
    frame["value"] = pd.to_numeric(frame["value_text"], errors="raise")
    return frame


def lookup(reported: pd.DataFrame, experiment: str, row: str, metric: str) -> pd.Series | None:
    """The one reported row for (experiment, row, metric), or None when the paper gives no such number."""
    hits = reported[(reported["experiment"] == experiment) & (reported["row"] == row)
                    & (reported["metric"] == metric)]
    if len(hits) > 1:
        raise ValueError(f"reported.csv has {len(hits)} rows for ({experiment}, {row}, {metric}); expected one")
    return None if hits.empty else hits.iloc[0]


def format_reported(entry: pd.Series | None) -> str:
    """The reported cell: the value as the source printed it, with the dagger when unverified."""
    if entry is None:
        return "—"
    mark = UNVERIFIED_MARK if entry["verified"] == "no" else ""
    return f"{entry['value_text']}{mark}"
