"""Evaluate a run: ``python -m encnet.evaluate RUN_DIR [--scales S ...] [--ms] [--flip] [--save-predictions]``.

Single-scale evaluation feeds each full image once and writes ``eval.json``. ``--ms`` applies the config's
multi-scale protocol (``eval.scales``, ``eval.flip``: the paper's {0.5 … 1.75} + flip with a sliding window of
the crop size and stride 2/3 · crop, PAPER.md §5) and writes ``eval_ms_flip.json``; ``--scales``/``--flip``
choose other settings (``eval_<tag>.json``). Under ``torchrun`` every process evaluates its share of the
images (``eval_loop``), so the numbers do not depend on the number of processes.

``--weights FILE --config CONFIG [--source S]`` evaluates a published checkpoint (the authors' model zoo,
mmsegmentation, or ours) without a run folder, under its source's protocol (``encnet.engine.evaluate_published``);
``--export mmseg`` writes one of our checkpoints in mmsegmentation's layout.

``--save-predictions`` writes one PNG of class indices per image into ``RUN_DIR/predictions/<tag>/`` and, for
models with an SE-loss head, ``se_probabilities.json`` (per image: sigmoid of the class-presence logits).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

from . import distributed, runs
from .config import ConfigError, load_config
from .eval_loop import eval_tag, evaluate_model, jsonable, print_summary, write_eval

__all__ = ["eval_tag", "evaluate", "evaluate_model", "main", "write_eval"]


def evaluate(run_dir: str | Path, scales: Sequence[float] | None = None, flip: bool = False,
             save_predictions: bool = False, split: str | None = None, device: str | None = None,
             eval_overrides: Sequence[str] = ()) -> dict:
    """Evaluate the last checkpoint of ``run_dir``; writes and returns the ``eval[_<tag>].json`` record.

    ``eval_overrides`` (``eval.crop_size=...``) replace the run's recorded evaluation protocol: the protocol is
    not part of the run id, so a run trained once can be evaluated under a protocol decided later.
    """
    if any(not o.startswith("eval.") for o in eval_overrides):
        raise ConfigError(f"eval_overrides may only change the eval section, found {list(eval_overrides)}")
    from .build import build_dataset_for, build_metric, build_model_for, dataset_num_classes

    run_dir = Path(run_dir)
    ckpt_path = run_dir / runs.CHECKPOINT
    if not ckpt_path.is_file():
        raise FileNotFoundError(f"{run_dir} has no {runs.CHECKPOINT}; train it first: python -m encnet.train "
                                f"{run_dir / 'config.yaml'} --run-dir {run_dir}")
    config = load_config(run_dir / "config.yaml", list(eval_overrides))
    ctx = distributed.setup(device, gpu_only=config.profile == "paper")
    split = split or config.data.val_split
    tag = eval_tag(scales, flip, split, config)
    dataset = build_dataset_for(config, split, train=False)
    num_classes = dataset_num_classes(config, dataset)
    model = build_model_for(config, num_classes, backbone_weights=False)  # the checkpoint replaces them
    checkpoint = runs.load_checkpoint(ckpt_path)  # weights_only, and checked against its sidecar
    model.load_state_dict(checkpoint["model"])
    model.to(ctx.device)
    save_dir = run_dir / "predictions" / (tag or "ss") if save_predictions else None
    result = evaluate_model(model, dataset, build_metric(config, num_classes), config, ctx, scales=scales,
                            flip=flip, save_dir=save_dir)
    result = jsonable(dict(result))
    result["epoch"] = checkpoint.get("epoch")
    if ctx.is_main:
        write_eval(run_dir, tag, result, config, split, scales, flip, getattr(dataset, "class_names", None))
    distributed.barrier()
    return runs.read_json(run_dir / (f"eval_{tag}.json" if tag else "eval.json")) if ctx.is_main else result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m encnet.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", nargs="?", help="a run folder written by encnet.train")
    parser.add_argument("--scales", type=float, nargs="+", help="multi-scale sliding window at these scales")
    parser.add_argument("--ms", action="store_true", help="the config's multi-scale protocol (eval.scales, eval.flip)")
    parser.add_argument("--flip", action="store_true", help="average with the horizontally flipped prediction")
    parser.add_argument("--save-predictions", action="store_true", help="write PNG predictions (and SE probabilities)")
    parser.add_argument("--split", help="dataset split (default: the config's data.val_split)")
    parser.add_argument("--device", choices=["cuda", "cpu"],
                        help="default: cuda when usable; a paper-profile run refuses the CPU unless asked for")
    published = parser.add_argument_group("published weights (no run folder; see encnet.engine.evaluate_published)")
    published.add_argument("--weights", help="a checkpoint file: the authors' model zoo, mmsegmentation, or ours")
    published.add_argument("--source", choices=["pytorch-encoding", "mmseg", "encnet"],
                           help="the file's layout (default: detected from its key names)")
    published.add_argument("--config", help="the experiment config giving the dataset (e.g. configs/paper/...)")
    published.add_argument("--protocol", help="evaluation protocol preset (default: the source's own: release, "
                           "mmseg, suite)")
    published.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                           help="config overrides, e.g. data.root=/data")
    published.add_argument("--out-dir", help="where eval.json goes (default runs/published/<experiment>/<file>)")
    published.add_argument("--export", choices=["mmseg"], help="write the run's (or --weights') checkpoint in this "
                           "layout instead of evaluating")
    published.add_argument("--export-to", help="output file of --export (default: next to the checkpoint)")
    args = parser.parse_args(argv)
    if args.weights or args.export:
        return _main_published(args, parser)
    if not args.run_dir:
        parser.error("give a run folder, or --weights FILE --config CONFIG")
    scales, flip = args.scales, args.flip
    if args.ms:
        config = load_config(Path(args.run_dir) / "config.yaml")
        scales, flip = scales or config.eval.scales, flip or config.eval.flip
    rc = 0
    try:
        result = evaluate(args.run_dir, scales=scales, flip=flip, save_predictions=args.save_predictions,
                          split=args.split, device=args.device)
        print_summary(result)
    except (FileNotFoundError, ConfigError, runs.CheckpointError, distributed.DeviceError) as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        rc = 2
    return distributed.exit_process(rc)


def _main_published(args, parser) -> int:
    from .evaluate_published import evaluate_published, export_checkpoint
    from .published_weights import PublishedWeightsError

    weights, config = args.weights, args.config
    if args.run_dir:
        weights = weights or str(Path(args.run_dir) / runs.CHECKPOINT)
        config = config or str(Path(args.run_dir) / "config.yaml")
    if not weights or not config:
        parser.error("--weights and --config are both needed (or a run folder with --export)")
    rc = 0
    try:
        if args.export:
            out = args.export_to or str(Path(weights).with_name(Path(weights).stem + f"_{args.export}.pth"))
            print(f"wrote {export_checkpoint(weights, config, args.export, out)} ({args.export} layout)", flush=True)
        else:
            result = evaluate_published(weights, config, source=args.source, protocol=args.protocol,
                                        out_dir=args.out_dir, overrides=args.set, split=args.split,
                                        device=args.device)
            if int(os.environ.get("RANK", "0")) == 0:
                print(result["weights"]["load_report"]["file"], "loaded;", result["protocol"]["description"])
            print_summary(result)
    except (FileNotFoundError, ConfigError, PublishedWeightsError, distributed.DeviceError) as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        rc = 2
    return distributed.exit_process(rc)


if __name__ == "__main__":
    sys.exit(main())
