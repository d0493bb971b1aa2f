"""How many paired seeds each claim needs for a target precision, from a pilot's directions table.

``python -m encnet.report.power_plan tables/ablation_demo_directions.csv [...] [--segmentation 2.0] [--error 1.0]``

A directions table (``tables/*_directions.csv``, written by the reproduce scripts) holds each claim's paired 95 %
t interval over ``n_pairs`` seeds. Its half-width h gives the pilot's standard deviation of the per-seed
differences, ``sd = h · √n / t(0.975, n − 1)``, and :func:`encnet.report.stats.seeds_needed` the fewest seeds
whose interval would be no wider than the target: 2.0 points of mIoU / pixAcc for segmentation, 1.0 point of
test error for the CIFAR stand-in (issue 24's targets). The plan is only as good as the pilot's sd, itself
uncertain with few seeds, so it is written down with the pilot it came from, before the final runs.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import pandas as pd
from tabulate import tabulate

from encnet.report.stats import CONFIDENCE, planned_half_width, seeds_needed, t_quantile

SEGMENTATION_TARGET = 2.0  # points of mIoU / pixAcc: the half-width asked of every segmentation direction
ERROR_TARGET = 1.0  # points of CIFAR test error


def pilot_sd(half_width: float, n: int) -> float:
    """The per-seed differences' sd behind a paired t interval of ``half_width`` over ``n`` seeds."""
    if n < 2:
        raise ValueError(f"a pilot needs at least 2 paired seeds, found {n}")
    return half_width * math.sqrt(n) / t_quantile((1 + CONFIDENCE) / 2, n - 1)


def plan(directions: pd.DataFrame, segmentation: float = SEGMENTATION_TARGET,
         error: float = ERROR_TARGET) -> pd.DataFrame:
    """One row per claim: the pilot (seeds, half-width, sd), the target and the seeds it needs."""
    rows = []
    for _, line in directions.iterrows():
        n = int(line["n_pairs"])
        target = error if line["metric"] == "error" else segmentation
        row = {"claim": line["claim"], "pilot seeds": n, "target half-width": target}
        if n < 2 or pd.isna(line["ci_low"]) or pd.isna(line["ci_high"]):
            rows.append({**row, "note": "no pilot interval (fewer than 2 paired seeds)"})
            continue
        half = (float(line["ci_high"]) - float(line["ci_low"])) / 2
        sd = pilot_sd(half, n)
        try:
            needed = seeds_needed(sd, target)
            note = ""
        except ValueError as err:
            needed, note = None, str(err)
        rows.append({**row, "pilot half-width": half, "pilot sd": sd, "seeds needed": needed,
                     "planned half-width": planned_half_width(sd, needed) if needed else None, "note": note})
    table = pd.DataFrame(rows)
    if "seeds needed" in table:
        table["seeds needed"] = table["seeds needed"].astype("Int64")
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m encnet.report.power_plan", description=__doc__.split("\n")[0])
    parser.add_argument("tables", nargs="+", help="directions tables (tables/*_directions.csv) of a pilot run")
    parser.add_argument("--segmentation", type=float, default=SEGMENTATION_TARGET,
                        help="target half-width for mIoU / pixAcc directions (points)")
    parser.add_argument("--error", type=float, default=ERROR_TARGET, help="target half-width for test error")
    args = parser.parse_args(argv)
    missing = [t for t in args.tables if not Path(t).is_file()]
    if missing:
        print(f"error: no directions table at {', '.join(missing)} (run the reproduce scripts first)",
              file=sys.stderr)
        return 2
    table = pd.concat([plan(pd.read_csv(t), args.segmentation, args.error) for t in args.tables],
                      ignore_index=True)
    print(tabulate(table, headers="keys", tablefmt="github", showindex=False, floatfmt=".2f", missingval=""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
