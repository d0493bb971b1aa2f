"""The experiment behind ``reproduce/table_discrepancies.py`` (paper vs released code): every ledger entry run
both ways, its effect on pixAcc/mIoU against the seed spread.

For each entry of ``configs/discrepancies.yaml`` that has a switch, trains the profile's base config with the
paper's value and with the release's value of the switch, for the same seeds, then writes
``tables/discrepancies[_demo].{md,csv}``: each side's mean ± std over seeds, Δ = release − paper, and whether |Δ|
exceeds the seed-to-seed spread, followed by the ledger itself. Sides whose configs coincide are one run folder
(the side the suite's defaults follow is the plain base config), trained once and shared with the other tables.

The command line is ``encnet.experiments.cli``'s, shared by every reproduce script.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pandas as pd
from tabulate import tabulate

from encnet.experiments.checks import gate
from encnet.experiments.cli import guarded, parse_args
from encnet.experiments.execution import execute
from encnet.experiments.experiment import Experiment, Row
from encnet.experiments.planning import PlannedRun, describe, ledger_line, ledger_summary, plan
from encnet.experiments.discrepancies import (Measurement, effects, evaluation_only, format_value, ledger_table,
                                              load_ledger, measurements)
from encnet.report.runlogs import SINGLE_SCALE, read_run
from encnet.report.tables import output_name, output_title

METRICS = ("pixAcc", "mIoU", "top1_error")  # top-1 error: the CIFAR entry (paper profile)
SEP = " | "  # row label of one side in the driver: "<row> | <side>"
TITLE = "Paper vs released code: the effect of each difference"


def experiment(sides: list[Measurement], seeds: tuple[int, ...]) -> Experiment:
    rows = tuple(Row(f"{m.row}{SEP}{m.side}", m.base.name, m.overrides) for m in sides)
    return Experiment("discrepancies", TITLE, "", rows, seeds=seeds)


def missing_weights(run: PlannedRun) -> str | None:
    """The local weights file a run needs and does not find (the authors' ResNet-50s), if any; a
    ``model.pretrained_dir`` folder holding it serves too (``encnet.models.pretrained.locate``)."""
    from encnet.models.pretrained import PretrainedWeightsError, locate

    m = run.config.model
    if m.pretrained in ("none", "imagenet", ""):
        return None
    try:
        locate(m.backbone, m.pretrained, m.pretrained_dir)
    except PretrainedWeightsError:
        return m.pretrained
    return None


def results(sides: list[Measurement], by_row, seeds) -> pd.DataFrame:
    """Tidy (row, entry, side, seed, metric, value) of the finished runs, read from their folders only.

    Read here rather than with ``runlogs.collect_results`` because the CIFAR entry's runs report top-1 error.
    """
    records = []
    for m in sides:
        for seed in seeds:
            run_dir = by_row[(f"{m.row}{SEP}{m.side}", seed)].run_dir
            if not (run_dir / "config.yaml").is_file():
                continue
            log = read_run(run_dir)
            final = log.evals.get(SINGLE_SCALE, {}) if log.finished else {}
            records += [{"row": m.row, "entry": m.entry, "side": m.side, "seed": log.seed, "metric": metric,
                         "value": float(final[metric])} for metric in METRICS if metric in final]
    return pd.DataFrame.from_records(records, columns=["row", "entry", "side", "seed", "metric", "value"])


def _mean_std(mean: float, std: float, n: int) -> str:
    if n == 0:
        return "not run"
    return f"{mean:.2f}" if n == 1 else f"{mean:.2f} ± {std:.2f}"


def _verdict(line: pd.Series) -> str:
    if line["exceeds"] is None or pd.isna(line["exceeds"]):
        return "—"
    return f"{'yes' if line['exceeds'] else 'no'} ({line['spread']:.2f})"


def display(table: pd.DataFrame, sides: list[Measurement], ledger) -> pd.DataFrame:
    """One printed line per entry: the switch, then per metric paper, release, Δ, whether Δ exceeds the spread."""
    value = {(m.row, m.side): format_value(m.value) for m in sides}
    lines = []
    for row in dict.fromkeys(m.row for m in sides):
        entry = ledger.get(next(m.entry for m in sides if m.row == row))
        line = {"entry": row, "switch: paper → release":
                f"`{entry.switch}`: {value[(row, 'paper')]} → {value[(row, 'release')]}"}
        group = table[table["row"] == row]
        shown = [m for m in METRICS if m in set(table["metric"])] or ["pixAcc", "mIoU"]
        for metric in shown:
            hit = group[group["metric"] == metric]
            if hit.empty:
                line.update({f"{metric} paper": "not run", f"{metric} release": "not run", f"{metric} Δ": "—",
                             f"{metric} Δ exceeds spread": "—"})
                continue
            m = hit.iloc[0]
            line[f"{metric} paper"] = _mean_std(m["paper_mean"], m["paper_std"], m["n_paper"])
            line[f"{metric} release"] = _mean_std(m["release_mean"], m["release_std"], m["n_release"])
            line[f"{metric} Δ"] = "—" if pd.isna(m["delta"]) else f"{m['delta']:+.2f}"
            line[f"{metric} Δ exceeds spread"] = _verdict(m)
        lines.append(line)
    return pd.DataFrame(lines)


def caption(profile: str, ledger, seeds, base: str) -> str:
    where = (f"the demo EncNet (`{base}`: resnet_tiny on the generated context_scenes data, CPU)"
             if profile == "demo" else "each entry's paper-profile config(s) under `configs/paper/`")
    text = (f"Each ledger entry with a switch, trained on {where} with the paper's and with the release's value of "
            f"the switch, seeds {', '.join(map(str, seeds))}; single-scale validation pixAcc / mIoU (%), mean ± "
            "sample std over seeds. Δ = release − paper. Spread = the seed-to-seed std pooled over both sides, "
            "√((s²_paper + s²_release) / 2); 'Δ exceeds spread' says whether |Δ| is larger than it (spread in "
            "brackets). The side the suite's defaults follow is the plain base config: one run per seed, shared by "
            "every entry and with the other tables.")
    if profile == "demo":
        reduced = list(ledger.profiles.get("demo", {}).get("overrides") or [])
        text += (f" Demo budget: {len(seeds)} seeds"
                 + (f", and every run here also sets {', '.join(f'`{o}`' for o in reduced)}" if reduced else
                    " on the demo config unchanged")
                 + "; the training-length entry keeps the paper's PASCAL-Context ratio 50/80 of the demo's epochs. "
                 "A demo Δ says whether a switch can matter on a small model and small data, not how much it "
                 "matters at full scale.")
    return text


def write(profile: str, table: pd.DataFrame, shown: pd.DataFrame, ledger, text: str, out_dir: Path,
          skipped_runs: list[str]) -> list[Path]:
    stem = output_name("discrepancies", profile)
    folder = Path(out_dir) / "tables"
    folder.mkdir(parents=True, exist_ok=True)
    parts = [f"# {output_title(TITLE, profile)}", "", text, "",
             tabulate(shown, headers="keys", tablefmt="github", showindex=False, disable_numparse=True), ""]
    if skipped_runs:
        parts += [f"- not run: {s}" for s in skipped_runs] + [""]
    if profile == "demo":
        parts += [f"- `{e.id}` not measured in the demo: {e.not_in_demo}." for e in ledger
                  if e.switch is not None and e.not_in_demo]
    parts += [f"- `{e.id}` is an evaluation setting: both sides evaluate the same trained run, so this table does "
              f"not measure it." for e in ledger if evaluation_only(e) and not (profile == "demo" and e.not_in_demo)]
    parts += [f"- `{e.id}` has no switch: {e.no_effect or e.note}." for e in ledger if e.switch is None]
    parts += ["", "## The ledger (`configs/discrepancies.yaml`)", "",
              tabulate(ledger_table(ledger), headers="keys", tablefmt="github", showindex=False,
                       disable_numparse=True), ""]
    md, csv = folder / f"{stem}.md", folder / f"{stem}.csv"
    md.write_text("\n".join(parts))
    table.to_csv(csv, index=False, float_format="%.4f")
    return [md, csv]


def main(argv: list[str] | None = None) -> int:
    args = parse_args("discrepancies", argv)
    return guarded(args, lambda: _main(args))


def planned(args) -> tuple:
    """(ledger, sides, seeds, runs, by_row, blocked): this table's runs, and those that miss local weights."""
    ledger = load_ledger()
    sides = measurements(ledger, args.profile)
    seeds = tuple(args.seeds or ledger.profiles.get(args.profile, {}).get("seeds", (0, 1, 2)))
    exp = experiment(sides, seeds)
    runs, by_row = plan(exp, args.profile, seeds, args.runs_root, args.data_root, args.set,
                                     follow=args.follow)
    blocked = {run.run_dir: missing_weights(run) for run in runs if missing_weights(run) and not run.finished}
    return ledger, sides, seeds, runs, by_row, blocked


def _main(args) -> int:
    start = time.perf_counter()
    ledger, sides, seeds, runs, by_row, blocked = planned(args)
    skipped = [f"{', '.join(run.rows)} (seed {run.seed}) needs {blocked[run.run_dir]}" for run in runs
               if run.run_dir in blocked]
    if args.dry_run:
        print(f"{TITLE} — profile {args.profile}, seeds {list(seeds)}: {len(runs)} distinct run(s), "
              f"{sum(not r.finished for r in runs)} to run")
        if args.ledger_block:
            print(ledger_summary(args.follow))
        for run in runs:
            print(describe(run))
            print(ledger_line(run))
        for entry in ledger:
            if args.profile == "paper" and entry.paper_note and any(m.entry == entry.id for m in sides):
                print(f"note on {entry.id}: {entry.paper_note}")
        return 0
    if not args.from_logs:
        for line in skipped:
            print(f"skipped: {line}")
        todo = [run for run in runs if run.run_dir not in blocked]
        gate(todo, args)
        execute(todo, args.gpus, args.runs_root,
                             progress=os.environ.get("ENCNET_NO_PROGRESS", "") in ("", "0"), jobs=args.jobs,
                             device=args.device)
    table = effects(results(sides, by_row, seeds))
    base = ledger.profiles.get("demo", {}).get("base", "")
    text = caption(args.profile, ledger, seeds, f"configs/demo/{base}.yaml")
    paths = write(args.profile, table, display(table, sides, ledger), ledger, text, args.out_dir, skipped)
    for path in paths:
        print(f"wrote {path}")
    print(f"discrepancies ({args.profile}): {len(runs)} run(s), {time.perf_counter() - start:.1f} s")
    return 0

