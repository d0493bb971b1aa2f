"""Preflight: what the planned runs need, checked before hours are spent.

    python -m encnet.experiments.preflight --profile paper --data-root /data --gpus 8 [--pretrained-dir DIR]

``bash run_all.sh --profile paper --check`` runs it alone, every ``run_all.sh --dry-run`` ends with it, and a real
paper-profile ``run_all.sh`` runs it before the first script. Per experiment (one reproduce script, or the two CIFAR
ones): its datasets, present with the official image counts (``encnet.data.check``), and its backbone weights, found
(``encnet.models.pretrained``) and holding exactly the backbone's tensors. For the whole run: the GPUs visible
against ``--gpus`` (and why CUDA is unusable, ``encnet.engine.devices``), NCCL when more than one GPU trains, and
the free disk for the checkpoints the unfinished runs will write. A ✓/✗ table with the fix for each ✗ (exit status
1 if any, 0 with ``--dry-run``), then the totals: runs, iterations, training FLOPs, and GPU-hours where
``bench/results`` has a measured step for the run's config (``tables/paper_cost.md``; "not measured" otherwise).

The checks themselves are ``encnet.experiments.checks``, which also holds the gate every paper-profile script passes
before it trains.
"""

from __future__ import annotations

import sys
from functools import lru_cache
from pathlib import Path
from typing import Sequence

from tabulate import tabulate

from encnet.experiments.checks import (FAIL, SKIP, Check, config_of, dataset_check, device_checks, disk_check, example,
                                       network, split_size, structure, weights_check)
from encnet.experiments.cli import guarded, parse_args
from encnet.experiments.experiment import REPO
from encnet.experiments.planning import PlannedRun, ledger_summary, plan

# ------------------------------------------------------------------------------------------------ planning


def planned_by_experiment(args) -> dict[str, list[PlannedRun]]:
    """Every reproduce script's runs (the two CIFAR scripts share theirs), as the scripts plan them."""
    from encnet.experiments import cifar, discrepancies_table
    from encnet.experiments.cli import _SCRIPTS
    from encnet.experiments.segmentation import experiments

    out: dict[str, list[PlannedRun]] = {}
    follow = getattr(args, "follow", None)
    for name, experiment in experiments(args.profile).items():
        seeds = tuple(args.seeds) if args.seeds else experiment.seeds
        out[_SCRIPTS.get(name, name)] = plan(experiment, args.profile, seeds, args.runs_root, args.data_root,
                                             args.set, follow=follow)[0]
    experiment = cifar.experiment(args.profile)
    seeds = tuple(args.seeds) if args.seeds else experiment.seeds
    out["table_cifar10, figure_cifar_curves"] = plan(experiment, args.profile, seeds, args.runs_root,
                                                     args.data_root, args.set, follow=follow)[0]
    out["table_discrepancies"] = discrepancies_table.planned(args)[3]
    return out


@lru_cache(maxsize=None)
def _structure_flops(key: tuple) -> int:
    return training_flops_per_image(config_of(key))


def training_flops_per_image(config) -> int:
    """FLOPs of one training image (forward and backward, loss included) of ``config``'s network at its crop,
    counted by ``torch.utils.flop_counter`` on fake tensors (shapes only: nothing is computed). Convolutions and
    matrix products count, 2 per multiply-add; elementwise ops and BatchNorm do not."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode  # shapes without compute: what torch.compile uses
    from torch.utils.flop_counter import FlopCounterMode

    from encnet.engine.build import build_criterion

    crop = structure(config)[-1]
    with FakeTensorMode():
        model = network(config).train()
        classes = config.data.num_classes or _classes(config)
        criterion = build_criterion(config, classes)
        # Two images: training-mode BatchNorm over a B×C input needs more than one value per channel.
        image = torch.zeros(2, 3, *crop)
        target = torch.zeros((2, *crop) if config.task == "segmentation" else (2,), dtype=torch.int64)
        with FlopCounterMode(display=False) as counter:
            output = model(image)
            loss = criterion(output, target)
            (loss[0] if isinstance(loss, tuple) else loss).backward()
    return int(counter.get_total_flops()) // 2


def _classes(config) -> int:
    from encnet.data import dataset_class

    return dataset_class(config.data.dataset).num_classes


def _train_images(run: PlannedRun, found: dict[tuple[str, str, str], int | None]) -> int | None:
    """Training images of a run: the split as found on disk, else the generated data's size or the official
    count; None when only the first run can tell (COCO's filtered set, a missing dataset without an official size)."""
    from encnet.data.check import OFFICIAL_COUNTS

    d = run.config.data
    if found.get((d.dataset, str(d.root), d.train_split)):
        return found[(d.dataset, str(d.root), d.train_split)]
    if "num_train" in d.options:
        return int(d.options["num_train"])
    counts = OFFICIAL_COUNTS.get(d.dataset, {})
    if d.train_split == "trainval" and counts.get("train") and counts.get("val"):
        return counts["train"] + counts["val"]
    return counts.get(d.train_split)


def totals(runs: Sequence[PlannedRun], found: dict[tuple[str, str, str], int | None],
           results: list[dict] | None = None) -> list[str]:
    """The totals lines: runs, iterations, training FLOPs, GPU-hours (measured steps only)."""
    from encnet.report.benchmarks import load_results, measured_step

    todo = [r for r in runs if not r.finished]
    results = load_results(REPO / "bench" / "results") if results is None else results
    iterations, flops, hours, unknown, measured = 0, 0.0, 0.0, [], 0
    for run in todo:
        t = run.config.train
        images = _train_images(run, found)
        if not images:
            unknown.append(run.config.experiment)
            continue
        iters = t.epochs * (images // t.batch_size)
        iterations += iters
        flops += iters * t.batch_size * _structure_flops(example(run.config))
        step = measured_step(results, run.config)
        if step is not None:
            measured += 1
            hours += iters * step / 3600
    unmeasured = len(todo) - measured
    unknown_text = (f" (and {len(unknown)} run(s) whose training set size is known only after the first run: "
                    f"{', '.join(sorted(set(unknown)))})" if unknown else "")
    if not todo:
        gpu_hours = "nothing to train"
    elif not measured:
        gpu_hours = ("not measured: bench/results has no measured train step for these configs (tables/paper_cost.md;"
                     " bash bench/gpu_suite.sh on a GPU measures them)")
    elif unmeasured:
        gpu_hours = f"{hours:,.0f} for the runs with a measured step; not measured for {unmeasured} run(s)"
    else:
        gpu_hours = f"{hours:,.0f} (training steps only, from tables/paper_cost.md's measured steps)"
    return [f"runs: {len(runs)} planned, {len(todo)} to train",
            f"iterations: {iterations:,}{unknown_text}",
            f"training FLOPs: {flops:.3g} (forward + backward convolutions and matrix products, "
            "torch.utils.flop_counter)",
            f"GPU-hours: {gpu_hours}"]


# ------------------------------------------------------------------------------------------------- the table


def preflight(args, by_experiment: dict[str, list[PlannedRun]] | None = None) -> tuple[list[Check], list[str]]:
    """Every check (each dataset and backbone file once, with the experiments that need it) and the totals lines
    for the runs ``args`` plans."""
    from encnet.experiments.discrepancies_table import missing_weights

    by_experiment = planned_by_experiment(args) if by_experiment is None else by_experiment
    results: dict[tuple, tuple[str, str, str]] = {}
    needed: dict[tuple, list[str]] = {}
    found: dict[tuple[str, str, str], int | None] = {}  # (dataset, root, split) → images
    every: dict[Path, PlannedRun] = {}
    skipped: set[Path] = set()
    for experiment, runs in by_experiment.items():
        todo = [r for r in runs if not r.finished]
        for run in todo:
            every.setdefault(run.run_dir, run)
            d, m = run.config.data, run.config.model
            keys = [("dataset", d.dataset, str(d.root))]
            if run.config.task == "segmentation":
                keys.append(("weights", m.backbone, m.pretrained, m.pretrained_dir))
            if (d.dataset, str(d.root), d.train_split) not in found:
                found[(d.dataset, str(d.root), d.train_split)] = split_size(d.dataset, str(d.root), d.train_split)
            for key in keys:
                if key not in results:
                    if key[0] == "dataset":
                        status, text, fix = dataset_check(*key[1:])
                    else:
                        status, text, fix = weights_check(*key[1:])
                    results[key] = (status, text, fix)
                if results[key][0] == FAIL and key[0] == "weights" and experiment == "table_discrepancies" \
                        and missing_weights(run):
                    skipped.add(run.run_dir)  # the ledger's table runs what it can and says "not run" for the rest
                    key = (*key, "skipped")
                    results[key] = (SKIP, results[key[:-1]][1] + ": the ledger table leaves these runs out "
                                          "(its rows say 'not run')", results[key[:-1]][2])
                if experiment not in needed.setdefault(key, []):
                    needed[key].append(experiment)
    checks = [Check(f"{key[0]} {key[1]}", *results[key], needed_by=tuple(needed[key])) for key in results
              if key in needed]
    runs = [r for d, r in every.items() if d not in skipped]
    checks += device_checks(args.profile, args.gpus, getattr(args, "device", None))
    checks.append(disk_check(runs, args.runs_root))
    return checks, totals(runs, found)


def render(checks: Sequence[Check]) -> str:
    rows = [[c.item, c.status, ", ".join(c.needed_by), c.found, c.fix] for c in checks]
    return tabulate(rows, headers=["check", "", "needed by", "found", "fix"], tablefmt="simple",
                    maxcolwidths=[None, None, 28, 64, 60])


def report(args) -> int:
    """Print the preflight (after the ledger block in a dry run); the number of ✗."""
    checks, lines = preflight(args)
    failed = [c for c in checks if c.status == FAIL]
    if args.dry_run:
        print(ledger_summary(getattr(args, "follow", None)))
        print()
    print(f"preflight ({args.profile} profile, --gpus {args.gpus}, data root "
          f"{args.data_root or 'each config data.root'}, runs root {args.runs_root}):")
    print(render(checks))
    print("totals: " + "\n        ".join(lines))
    if failed:
        print(f"preflight: {len(failed)} ✗; fix them before training (the fix column says how)")
    else:
        print("preflight: everything the runs need is in place")
    return len(failed)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args("preflight", argv)
    return guarded(args, lambda: 1 if report(args) and not args.dry_run else 0)


if __name__ == "__main__":
    sys.exit(main())
