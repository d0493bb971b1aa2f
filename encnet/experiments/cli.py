"""The command line every ``reproduce/*.py`` shares: plan, train what is missing, write the outputs."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

from encnet.experiments.checks import gate
from encnet.experiments.execution import execute
from encnet.experiments.experiment import PROFILES, REPO, Experiment
from encnet.experiments.outputs import result_refs, write_outputs
from encnet.experiments.planning import PlannedRun, describe, ledger_line, ledger_summary, plan
from encnet.experiments.segmentation import experiments


def parse_args(name: str, argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=f"python reproduce/{_SCRIPTS.get(name, name)}.py",
        description=f"Reproduce '{name}': train the missing runs, then rebuild its outputs from the run logs.")
    parser.add_argument("--profile", choices=PROFILES, default="demo",
                        help="demo: CPU-sized runs on generated data (default); paper: the paper's protocol")
    parser.add_argument("--data-root", help="dataset root (paper profile; the demo generates its data into a cache)")
    parser.add_argument("--gpus", type=int, default=1,
                        help="processes per run: 1 trains in this process, N>1 launches torchrun --nproc_per_node N")
    parser.add_argument("--device", choices=("cuda", "cpu"),
                        help="default: CUDA when usable; the paper profile refuses to train on the CPU unless "
                             "--device cpu asks for it")
    parser.add_argument("--pretrained-dir", metavar="DIR",
                        help="folder of backbone weights for every run: DIR/resnet50.pth, resnet101.pth (torchvision's "
                             "ImageNet files), resnet50s.pth, resnet101s.pth (the release's); not part of the run id. "
                             "Default: torchvision's cache under $TORCH_HOME")
    parser.add_argument("--seeds", type=int, nargs="+", help="seeds to run (default: the experiment's own)")
    parser.add_argument("--dry-run", action="store_true", help="print every run with its key settings; run nothing")
    parser.add_argument("--from-logs", action="store_true", help="rebuild the outputs from existing runs only")
    parser.add_argument("--runs-root", default="runs", help="root of the run folders (default: runs)")
    parser.add_argument("--out-dir", default=str(REPO), help="where tables/ and figures/ go (default: repo root)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="train this many single-process runs side by side (CPU demo: one per core)")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                        help="extra config overrides for every run (those that change what trains change the run "
                             "ids), e.g. train.epochs=1 train.warmup_epochs=0, or train.tensorboard=true")
    parser.add_argument("--follow", choices=("paper", "release"), default=None,
                        help="put every run on this side of every ledger entry (configs/discrepancies.yaml) that "
                             "applies to it; release = v0.5.0, the recipe behind the model-zoo weights. Default: "
                             "each entry's own side (suite_follows). --dry-run lists each entry's side")
    # run_all.sh prints the ledger block once for all its scripts' dry runs.
    parser.add_argument("--no-ledger-block", dest="ledger_block", action="store_false", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.pretrained_dir:  # like --data-root: where files are read from, not what trains (not in the run id)
        args.set = [*args.set, f"model.pretrained_dir={args.pretrained_dir}"]
    if args.gpus < 1:
        parser.error(f"--gpus must be at least 1, found {args.gpus}")
    if args.dry_run and args.from_logs:
        parser.error("--dry-run and --from-logs exclude each other")
    return args


_SCRIPTS = {"ablation": "table_ablation", "se_weight": "figure_se_weight", "codewords": "figure_codewords",
            "pcontext": "table_pcontext", "voc": "table_voc", "ade20k": "table_ade20k",
            "discrepancies": "table_discrepancies", "train_all": "train_all"}


def report_user_error(err: BaseException, args: argparse.Namespace) -> int:
    """Print a fixable error (missing dataset, bad config, failed run) without a traceback; exit status 2."""
    print(f"error: {err}", file=sys.stderr)
    if args.profile == "paper" and not args.data_root and isinstance(err, FileNotFoundError):
        print("hint: the paper profile reads the real datasets: pass --data-root DIR (docs/paper_profile.md, "
              "'Preparing the real datasets')", file=sys.stderr)
    return 2


def guarded(args: argparse.Namespace, body: Callable[[], int]) -> int:
    """Run a script's body; fixable errors (and a failed training run) print in one block, exit status 2."""
    from encnet.engine.train import user_errors

    try:
        return body()
    except (*user_errors(), RuntimeError) as err:  # RuntimeError: a training subprocess failed (log tail inside)
        return report_user_error(err, args)


def run_experiment(experiment: Experiment, args: argparse.Namespace, label: str,
                   write: Callable[[dict, tuple[int, ...]], list[Path]],
                   describe_run: Callable[[PlannedRun], str] = describe) -> int:
    """Plan the runs, then either list them (``--dry-run``) or train what is missing and write the outputs.

    ``write(by_row, seeds)`` builds the outputs from the run logs; every reproduce script shares the rest.
    """
    seeds = tuple(args.seeds) if args.seeds else experiment.seeds
    follow = getattr(args, "follow", None)
    runs, by_row = plan(experiment, args.profile, seeds, args.runs_root, args.data_root, args.set, follow=follow)
    if args.dry_run:
        print(f"{experiment.title} — profile {args.profile}, seeds {list(seeds)}: {len(runs)} run(s), "
              f"{sum(not r.finished for r in runs)} to run")
        if args.ledger_block:
            print(ledger_summary(follow))
        for run in runs:
            print(describe_run(run))
            print(ledger_line(run))
        return 0
    start = time.perf_counter()
    if not args.from_logs:
        gate(runs, args)
        execute(runs, args.gpus, args.runs_root, progress=os.environ.get("ENCNET_NO_PROGRESS", "") in ("", "0"),
                jobs=args.jobs, device=args.device)
    for path in write(by_row, seeds):
        print(f"wrote {path}")
    print(f"{label} ({args.profile}): {len(runs)} run(s), {time.perf_counter() - start:.1f} s")
    return 0


def main(name: str, argv: Sequence[str] | None = None) -> int:
    """The whole command of one ``reproduce/<script>.py``."""
    args = parse_args(name, argv)
    experiment = experiments(args.profile)[name]

    def write(by_row, seeds):
        return write_outputs(experiment, args.profile, result_refs(experiment, by_row, seeds), args.runs_root,
                             args.out_dir)

    return guarded(args, lambda: run_experiment(experiment, args, name, write))
