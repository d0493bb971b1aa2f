"""The closing summary of ``run_all.sh``: what was written, how long it took, which of the paper's
directions the runs reproduce, how to open the notebooks, and where their HTML reports are (the last line).

Reads only what the reproduce scripts and ``encnet.analysis.notebooks`` wrote (``tables/*_directions.csv``,
``reports/*.html`` and the output files' times), so it can be rerun at any time:
``python -m encnet.experiments.summary --profile demo``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from encnet.analysis.notebooks import FAILURE_CASES, REPORT, report_profile, shown
from encnet.report import stats
from encnet.report.tables import output_name

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
    """One line per direction claim (e.g. EncNet > FCN) across every table of the profile, with its paired 95 %
    interval and verdict (``encnet.report.stats``)."""
    lines = []
    for path in sorted((out_dir / "tables").glob("*_directions.csv")):
        table = path.name.removesuffix("_directions.csv")
        if output_name(table.removesuffix("_demo"), profile) != table:
            continue
        for _, check in pd.read_csv(path, keep_default_na=False, na_values=[""]).iterrows():
            paper = "—" if pd.isna(check["reported_gap"]) else f"{check['reported_gap']:+.2f}"
            if check["verdict"] == "not run":
                gap = "—"
            else:
                gap = stats.format_interval(stats.Interval(check["reproduced_gap"], check["ci_low"], check["ci_high"],
                                                           int(check["n_pairs"])))
            note = f"  ({check['note']})" if isinstance(check.get("note"), str) and check["note"] else ""
            lines.append(f"{check['verdict']:>12}  {check['claim']}: paper {paper}, this run {gap}{note}   [{table}]")
    return lines


def reported_lines(out_dir: Path, profile: str) -> list[str]:
    """Paper profile: each reproduced number against the reported one (``vs_reported``: within max(0.5, the 95 %
    half-width), above or below), from the tidy table CSVs."""
    lines = []
    for path in sorted((out_dir / "tables").glob("*.csv")):
        if path.stem.endswith("_directions") or output_name(path.stem.removesuffix("_demo"), profile) != path.stem:
            continue
        frame = pd.read_csv(path, keep_default_na=False, na_values=[""])
        # Segmentation tables: one "vs_reported" per (row, metric); CIFAR: one "vs_reported <source>" per source.
        for column in [c for c in frame.columns if c == "vs_reported" or c.startswith("vs_reported ")]:
            source = column[len("vs_reported"):]
            judged = frame[frame[column].astype(str).isin([stats.WITHIN, stats.ABOVE, stats.BELOW])]
            for _, line in judged.iterrows():
                tolerance = stats.reported_tolerance(float(line["ci_half_width"]))
                metric = line["metric"] if "metric" in line else "error"
                lines.append(f"{line[column]:>7}  {line['row']} {metric}{source}: reported "
                             f"{line['reported' + source]:.2f}, this run {line['reproduced_mean']:.2f} "
                             f"(Δ {line['delta' + source]:+.2f}, tolerance ±{tolerance:.2f}, n = {int(line['n'])})"
                             f"   [{path.stem}]")
    return lines


def report_lines(out_dir: Path, profile: str, since: float = 0.0) -> list[str]:
    """Where the notebooks' HTML reports of ``profile`` are (written since ``since``): the failure cases, then
    the reproduction report, which ends the summary so that run_all.sh's last line says where to look."""
    folder = out_dir / "reports"

    def built(name: str) -> Path | None:
        path = folder / f"{name}.html"
        # Both profiles write the same file names: the title says which one a report shows.
        if path.is_file() and path.stat().st_mtime >= since and report_profile(path) == profile:
            return path
        return None

    lines = []
    if (failure_cases := built(FAILURE_CASES)) is not None:
        lines.append(f"failure cases: {shown(failure_cases)} (FCN against EncNet; open it in a browser)")
    report = folder / f"{REPORT}.html"
    if built(REPORT) is not None:
        lines.append(f"report: {shown(report)} (open it in a browser)")
    else:
        lines.append(f"report: {shown(report)} not built{' by this run' if since else ''} for the {profile} profile; "
                     f"`python -m encnet.analysis.notebooks --profile {profile}` builds it")
    return lines


def matmul_gflops(size: int = 512, repeats: int = 5) -> float:
    """This machine's float32 matrix-product speed (GFLOP/s, best of ``repeats``) with the current thread setting:
    a reader compares their elapsed time with ours through it."""
    import time

    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def summary(out_dir: Path, profile: str, since: float, elapsed: float | None, gflops: float | None = None) -> str:
    outputs = profile_outputs(out_dir, profile, since)
    parts = [f"== run_all.sh summary ({profile} profile) =="]
    if elapsed is not None:
        speed = "" if gflops is None else (f"; this machine's matrix products: {gflops:.1f} GFLOP/s "
                                           f"(float32 512², one process, the run's thread setting)")
        parts.append(f"time: {elapsed / 60:.1f} min ({elapsed:.0f} s){speed}")
    parts.append(f"wrote {len(outputs)} files:")
    parts += [f"  {p.relative_to(out_dir)}" for p in outputs]
    directions = direction_lines(out_dir, profile)
    parts.append(f"the paper's directions (better − worse, in points; mean [{stats.INTERVAL_METHOD} interval] over "
                 "seeds paired across the arms):")
    parts += [f"  {line}" for line in directions] or ["  (no direction checks found)"]
    if profile == "paper":
        parts.append("reproduced against reported (within: |Δ| ≤ max(0.5, the 95 % half-width)):")
        parts += [f"  {line}" for line in reported_lines(out_dir, profile)] or ["  (no reproduced paper numbers)"]
    if profile == "demo":
        parts.append("  (demo numbers come from generated data and a tiny backbone: they test the pipeline and the "
                     "direction of each claim, not the paper's values)")
    parts.append("notebooks (failure cases, and every table in one place):")
    parts.append("  .venv/bin/pip install -e '.[notebooks]' && .venv/bin/jupyter lab " + " ".join(NOTEBOOKS))
    parts.append(f"  as HTML, executed (below): .venv/bin/python -m encnet.analysis.notebooks --profile {profile}")
    parts += report_lines(out_dir, profile, since)
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m encnet.experiments.summary", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=("demo", "paper"), default="demo")
    parser.add_argument("--out-dir", type=Path, default=REPO)
    parser.add_argument("--since", type=float, default=0.0, help="only files written after this UNIX time")
    parser.add_argument("--elapsed", type=float, help="seconds the whole run took")
    args = parser.parse_args(argv)
    gflops = matmul_gflops() if args.elapsed is not None else None
    print(summary(args.out_dir, args.profile, args.since, args.elapsed, gflops))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
