"""The closing summary of ``run_all.sh``: what was written, how long it took, which of the paper's
directions the runs reproduce, and how to open the notebooks.

Reads only what the reproduce scripts wrote (``tables/*_directions.csv`` and the output files' times), so it
can be rerun at any time: ``python -m encnet.report.summary --profile demo``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from .tables import output_name

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = ("notebooks/failure_cases.ipynb", "notebooks/reproduction_report.ipynb")


def profile_outputs(out_dir: Path, profile: str, since: float = 0.0) -> list[Path]:
    """Files under tables/ and figures/ that belong to ``profile`` (demo files carry ``_demo`` in their stem)."""
    found = []
    for folder in ("tables", "figures"):
        for path in sorted((out_dir / folder).glob("*")):
            if not path.is_file() or path.stat().st_mtime < since:
                continue
            is_demo = "_demo" in path.stem
            if (profile == "demo") == is_demo or path.stem == "benchmarks":
                found.append(path)
    return found


def direction_lines(out_dir: Path, profile: str) -> list[str]:
    """One line per direction claim (e.g. EncNet > FCN) across every table of the profile."""
    lines = []
    for path in sorted((out_dir / "tables").glob("*_directions.csv")):
        table = path.name.removesuffix("_directions.csv")
        if output_name(table.removesuffix("_demo"), profile) != table:
            continue
        for _, check in pd.read_csv(path).iterrows():
            paper = "—" if pd.isna(check["reported_gap"]) else f"{check['reported_gap']:+.2f}"
            if pd.isna(check["reproduced_gap"]):
                verdict, gap = "not run", "—"
            else:
                gap = f"{check['reproduced_gap']:+.2f}"
                verdict = "reproduced" if check["reproduced_gap"] > 0 else "NOT reproduced"
                spread = check.get("spread", float("nan"))
                if not pd.isna(spread) and abs(check["reproduced_gap"]) <= spread:
                    gap += f" (within one seed std {spread:.2f}: inconclusive)"
            lines.append(f"{verdict:>15}  {check['claim']}: paper {paper}, this run {gap}   [{table}]")
    return lines


def summary(out_dir: Path, profile: str, since: float, elapsed: float | None) -> str:
    outputs = profile_outputs(out_dir, profile, since)
    parts = [f"== run_all.sh summary ({profile} profile) =="]
    if elapsed is not None:
        parts.append(f"time: {elapsed / 60:.1f} min ({elapsed:.0f} s)")
    parts.append(f"wrote {len(outputs)} files:")
    parts += [f"  {p.relative_to(out_dir)}" for p in outputs]
    directions = direction_lines(out_dir, profile)
    parts.append("the paper's directions (better − worse, in points):")
    parts += [f"  {line}" for line in directions] or ["  (no direction checks found)"]
    if profile == "demo":
        parts.append("  (demo numbers come from generated data and a tiny backbone: they test the pipeline and the "
                     "direction of each claim, not the paper's values)")
    parts.append("notebooks (failure cases, and every table in one place):")
    parts.append("  .venv/bin/pip install -e '.[notebooks]' && .venv/bin/jupyter lab " + " ".join(NOTEBOOKS))
    parts.append("  headless: .venv/bin/jupyter execute " + " ".join(NOTEBOOKS))
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m encnet.report.summary", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=("demo", "paper"), default="demo")
    parser.add_argument("--out-dir", type=Path, default=REPO)
    parser.add_argument("--since", type=float, default=0.0, help="only files written after this UNIX time")
    parser.add_argument("--elapsed", type=float, help="seconds the whole run took")
    args = parser.parse_args(argv)
    print(summary(args.out_dir, args.profile, args.since, args.elapsed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
