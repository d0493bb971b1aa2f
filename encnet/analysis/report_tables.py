"""The reproduction report's inputs: the tables under ``tables/`` (Markdown, tidy CSV, direction checks) and
the figures under ``figures/`` of one profile."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pandas as pd


@dataclass(frozen=True)
class TableFiles:
    """One table under ``tables/``: its Markdown, its CSV (tidy numbers) and its direction checks, where present."""

    name: str
    markdown: Path | None
    csv: Path | None
    directions: Path | None


# Tables that belong to no profile (device measurements): shown in every profile's report.
PROFILE_FREE_TABLES = ("benchmarks",)
_DIRECTIONS_SUFFIX = "_directions"


def table_profile(stem: str) -> str | None:
    """The profile a table file belongs to: ``<name>_<profile>`` for non-paper profiles, else ``paper``."""
    from encnet.report.tables import PROFILES

    if stem in PROFILE_FREE_TABLES:
        return None
    for profile in PROFILES:
        if profile != "paper" and stem.endswith(f"_{profile}"):
            return profile
    return "paper"


def find_tables(tables_dir: str | Path, profile: str) -> list[TableFiles]:
    """The tables of ``profile`` (and the profile-free ones) in ``tables_dir``, sorted by name."""
    folder = Path(tables_dir)
    stems = sorted({p.stem for p in folder.glob("*.md")} | {p.stem for p in folder.glob("*.csv")
                                                             if not p.stem.endswith(_DIRECTIONS_SUFFIX)})
    found = []
    for stem in stems:
        if table_profile(stem) not in (profile, None):
            continue

        def existing(path: Path) -> Path | None:
            return path if path.is_file() else None

        found.append(TableFiles(stem, existing(folder / f"{stem}.md"), existing(folder / f"{stem}.csv"),
                                existing(folder / f"{stem}{_DIRECTIONS_SUFFIX}.csv")))
    return found


def table_title(table: TableFiles) -> str:
    """The Markdown's ``# title`` line, or the file name."""
    if table.markdown is not None:
        for line in table.markdown.read_text().splitlines():
            if line.startswith("# "):
                return line[2:].strip()
    return table.name


_TIDY = ("row", "metric", "reported", "reproduced_mean", "delta", "status")


def reported_vs_reproduced(tables: Sequence[TableFiles]) -> pd.DataFrame:
    """Every comparison table's tidy numbers in one frame (a ``table`` column first).

    Reads the CSVs that ``encnet.report.tables.write_table`` writes; CSVs of another shape (a table that is
    not reported-vs-reproduced) are skipped — their Markdown is still shown by the report.
    """
    frames = []
    for table in tables:
        if table.csv is None:
            continue
        frame = pd.read_csv(table.csv, keep_default_na=True)
        if not set(_TIDY) <= set(frame.columns):
            continue
        frame.insert(0, "table", table.name)
        frames.append(frame)
    if not frames:
        from encnet.report.tables import COMPARE_COLUMNS

        return pd.DataFrame(columns=["table", *COMPARE_COLUMNS])
    return pd.concat(frames, ignore_index=True)


def direction_summary(tables: Sequence[TableFiles]) -> pd.DataFrame:
    """Every table's direction checks (claim, paper gap, paired reproduced gap, 95 % interval, verdict) in one
    frame."""
    frames = []
    for table in tables:
        if table.directions is not None:
            frame = pd.read_csv(table.directions)
            frame.insert(0, "table", table.name)
            frames.append(frame)
    if not frames:
        from encnet.report.tables import DIRECTION_COLUMNS

        return pd.DataFrame(columns=["table", *DIRECTION_COLUMNS])
    return pd.concat(frames, ignore_index=True)


def find_figures(figures_dir: str | Path, profile: str) -> list[Path]:
    """The PNG figures of ``profile`` in ``figures_dir``, sorted by name."""
    return sorted(p for p in Path(figures_dir).glob("*.png") if table_profile(p.stem) in (profile, None))
