"""Train every run that any reproduce script needs, in one pool, before the scripts build their outputs.

``run_all.sh`` calls the reproduce scripts one after another, and each trains its own missing runs ``--jobs`` at a
time: at the end of every script one core waits for the last run, and an experiment with fewer runs than cores
(the VOC chain, one seed) leaves a core idle throughout. Planning the runs of every experiment first (the same
``plan`` the scripts use, so the same run folders) and training them in one pool keeps every core busy until the
last run; the scripts then find their runs finished and only evaluate and write. Runs two experiments share
(the ablation's EncNet is also the α = 0.2 point) are trained once.

    python reproduce/train_all.py --profile demo --jobs 2
"""

from __future__ import annotations

import os
import time
from typing import Sequence

from encnet.experiments.checks import gate
from encnet.experiments.cli import guarded, parse_args

from encnet.experiments.execution import execute

from encnet.experiments.planning import PlannedRun, plan

from encnet.experiments.segmentation import experiments


def planned_runs(args) -> list[PlannedRun]:
    """Every run of every experiment (segmentation, CIFAR-10, the ledger's paper-vs-release table), once each,
    chain heads first. Ledger runs that need weights this machine lacks are left to their script, which says so."""
    from encnet.experiments import cifar, discrepancies_table

    every = [*experiments(args.profile).values(), cifar.experiment(args.profile)]
    by_dir: dict = {}
    for experiment in every:
        seeds = tuple(args.seeds) if args.seeds else experiment.seeds
        runs, _ = plan(experiment, args.profile, seeds, args.runs_root, args.data_root, args.set,
                       follow=getattr(args, "follow", None))
        for run in runs:
            by_dir.setdefault(run.run_dir, run)
    *_, ledger_runs, _, blocked = discrepancies_table.planned(args)
    for run in ledger_runs:
        if run.run_dir not in blocked:
            by_dir.setdefault(run.run_dir, run)
    runs = list(by_dir.values())
    # A run that others start from (model.init_from) goes first, so that its chain does not become the tail;
    # then the classification runs, the longest ones of the demo (longest first leaves the shortest tail).
    sources = {str(r.config.model.init_from) for r in runs if getattr(r.config.model, "init_from", None)}
    return sorted(runs, key=lambda r: (str(r.run_dir) not in sources, r.config.task != "classification"))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args("train_all", argv)

    def body() -> int:
        runs = planned_runs(args)
        todo = [r for r in runs if not r.finished]
        if args.dry_run or args.from_logs:
            print(f"train_all ({args.profile}): {len(runs)} planned run(s), {len(todo)} unfinished; "
                  f"{'--dry-run' if args.dry_run else '--from-logs'}: nothing trained")
            return 0
        start = time.perf_counter()
        print(f"train_all ({args.profile}): {len(runs)} planned run(s) of every experiment, {len(todo)} to train, "
              f"{args.jobs} at a time")
        # Training only: multi-scale evaluations and outputs are each script's own step.
        gate(todo, args)
        execute(todo, args.gpus, args.runs_root, jobs=args.jobs, evaluate_ms=False,
                progress=os.environ.get("ENCNET_NO_PROGRESS", "") in ("", "0"), device=args.device)
        print(f"train_all ({args.profile}): {len(todo)} run(s) trained in {time.perf_counter() - start:.1f} s")
        return 0

    return guarded(args, body)
