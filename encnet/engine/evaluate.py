"""Evaluate a run: ``python -m encnet.evaluate RUN_DIR [--scales S ...] [--ms] [--flip] [--save-predictions]``.

Single-scale evaluation feeds each full image once and writes ``eval.json``. ``--ms`` applies the config's
multi-scale protocol (``eval.scales``, ``eval.flip``: the paper's {0.5 … 1.75} + flip with a sliding window of
the crop size and stride 2/3 · crop, PAPER.md §5) and writes ``eval_ms_flip.json``; ``--scales``/``--flip``
choose other settings (``eval_<tag>.json``). Under ``torchrun`` every process evaluates its share of the
images and the confusion matrices are summed (all-reduced) before the metrics are computed, so the numbers
do not depend on the number of processes.

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
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from . import distributed, runs
from .config import Config, ConfigError, load_config
from .inference import predict_logits

__all__ = ["eval_tag", "evaluate", "evaluate_model", "main", "write_eval"]


class _Shard(Dataset):
    """Every ``world_size``-th image from ``rank``, with its index. Unlike DistributedSampler nothing is
    padded with repeats, so every image is counted exactly once in the reduced confusion matrix."""

    def __init__(self, dataset, rank: int, world_size: int):
        self.dataset = dataset
        self.indices = list(range(rank, len(dataset), world_size))

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        index = self.indices[i]
        image, target = self.dataset[index]
        return image, target, index


def eval_tag(scales: Sequence[float] | None, flip: bool, split: str, config: Config) -> str:
    """'' for the default (single-scale, no flip, validation split), else e.g. 'ms_flip', 's0.75-1_flip'."""
    parts = []
    if scales is not None:
        parts.append("ms" if list(scales) == list(config.eval.scales) else "s" + "-".join(f"{s:g}" for s in scales))
    if flip:
        parts.append("flip")
    if split != config.data.val_split:
        parts.append(split)
    return "_".join(parts)


@torch.no_grad()
def evaluate_model(model: torch.nn.Module, dataset, metric, config: Config, ctx, amp: bool = False,
                   scales: Sequence[float] | None = None, flip: bool = False,
                   save_dir: Path | None = None, predict: Callable | None = None) -> dict:
    """Evaluate ``model`` on this process's shard of ``dataset``; returns the all-reduced metrics.

    ``scales`` None: one full-image pass (single-scale). Otherwise the multi-scale sliding window.
    ``predict(model, image)``: another protocol's scores instead (``encnet.engine.protocols``).
    """
    model.eval()
    loader = DataLoader(_Shard(dataset, ctx.rank, ctx.world_size), batch_size=1, shuffle=False,
                        num_workers=config.data.workers, pin_memory=ctx.device.type == "cuda")
    crop = config.eval.crop_size or config.data.crop_size
    base = config.eval.base_size or config.data.base_size
    se_probs: dict[str, list[float]] = {}
    ids = getattr(dataset, "ids", None)
    size_bins = None
    if config.task == "segmentation" and getattr(dataset, "region_codes", None):
        # Generated demo data with object-size bins (claim 3: SE-loss helps small objects): IoU near each bin.
        from encnet.metrics import SizeBinMetric

        size_bins = SizeBinMetric(metric.num_classes, dataset.region_codes,
                                  getattr(dataset, "ambiguous_classes", range(metric.num_classes)),
                                  metric.ignore_index)
    for image, target, index in loader:
        image = image.to(ctx.device, non_blocking=True)
        target = target.to(ctx.device, non_blocking=True)
        with torch.autocast(ctx.device.type, enabled=amp):
            if config.task == "classification":
                logits = model(image)
            elif predict is not None:
                logits = predict(model, image)
            else:
                logits = predict_logits(model, image, scales=scales, flip=flip, base_size=base, crop_size=crop,
                                        stride_ratio=config.eval.stride_ratio, accumulate=config.eval.accumulate,
                                        align_corners=config.eval.align_corners,
                                        max_batch=config.eval.max_batch)
        # float64 stays: the release's exp-sum scores overflow float32 (encnet.engine.inference).
        scores = logits.to(torch.promote_types(logits.dtype, torch.float32))
        metric.update(scores, target)
        if size_bins is not None:
            size_bins.update(scores, target, torch.from_numpy(dataset.size_regions(int(index))).long())
        if save_dir is not None and config.task == "segmentation":
            name = str(ids[int(index)]) if ids is not None else f"{int(index):06d}"
            _save_prediction(save_dir / f"{name}.png", logits)
            out = model(image)
            if getattr(out, "se", None) is not None:
                se_probs[name] = [round(float(p), 6) for p in torch.sigmoid(out.se[0].float())]
    metric.reduce()
    if size_bins is not None:
        size_bins.reduce()
    if save_dir is not None:
        gathered = distributed.all_gather_objects(se_probs)
        merged = {k: v for part in gathered for k, v in part.items()}
        if ctx.is_main and merged:
            runs.write_json(save_dir / "se_probabilities.json", dict(sorted(merged.items())))
    result = metric.compute()
    if size_bins is not None:
        result.update(size_bins.compute())
    return result


def _save_prediction(path: Path, logits: torch.Tensor) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    pred = logits[0].argmax(0).to(torch.uint8).cpu().numpy()
    Image.fromarray(np.ascontiguousarray(pred), mode="L").save(path)


def _jsonable(value):
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def write_eval(run_dir: Path, tag: str, result: dict, config: Config, split: str,
               scales: Sequence[float] | None, flip: bool, class_names: Sequence[str] | None = None) -> Path:
    """Write ``eval.json`` / ``eval_<tag>.json`` with the metrics and the settings that produced them."""
    record = _jsonable(dict(result))
    if class_names is not None and "IoU" in record:
        record["class_names"] = list(class_names)
    record["settings"] = {
        "split": split,
        "mode": "full_image" if scales is None else "sliding_window",
        "scales": None if scales is None else list(scales),
        "flip": flip,
        "crop_size": None if scales is None else (config.eval.crop_size or config.data.crop_size),
        "base_size": None if scales is None else (config.eval.base_size or config.data.base_size),
        "stride_ratio": None if scales is None else config.eval.stride_ratio,
        "accumulate": None if scales is None else config.eval.accumulate,
        "align_corners": None if scales is None else config.eval.align_corners,
    }
    path = Path(run_dir) / (f"eval_{tag}.json" if tag else "eval.json")
    runs.write_json(path, record)
    return path


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
    ctx = distributed.setup(device)
    split = split or config.data.val_split
    tag = eval_tag(scales, flip, split, config)
    dataset = build_dataset_for(config, split, train=False)
    num_classes = dataset_num_classes(config, dataset)
    model = build_model_for(config, num_classes)
    checkpoint = runs.load_checkpoint(ckpt_path)  # weights_only, and checked against its sidecar
    model.load_state_dict(checkpoint["model"])
    model.to(ctx.device)
    save_dir = run_dir / "predictions" / (tag or "ss") if save_predictions else None
    result = evaluate_model(model, dataset, build_metric(config, num_classes), config, ctx, scales=scales,
                            flip=flip, save_dir=save_dir)
    result = _jsonable(dict(result))
    result["epoch"] = checkpoint.get("epoch")
    if ctx.is_main:
        write_eval(run_dir, tag, result, config, split, scales, flip, getattr(dataset, "class_names", None))
    distributed.barrier()
    return runs.read_json(run_dir / (f"eval_{tag}.json" if tag else "eval.json")) if ctx.is_main else result


def _print_summary(result: dict) -> None:
    if int(os.environ.get("RANK", "0")) == 0:
        summary = {k: v for k, v in result.items() if k in ("pixAcc", "mIoU", "accuracy", "top1_error")}
        protocol = result.get("protocol", {}).get("name")
        print(" ".join(f"{k} {v:.2f}" for k, v in summary.items()) + (f"  (protocol: {protocol})" if protocol else ""),
              flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m encnet.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", nargs="?", help="a run folder written by encnet.train")
    parser.add_argument("--scales", type=float, nargs="+", help="multi-scale sliding window at these scales")
    parser.add_argument("--ms", action="store_true", help="the config's multi-scale protocol (eval.scales, eval.flip)")
    parser.add_argument("--flip", action="store_true", help="average with the horizontally flipped prediction")
    parser.add_argument("--save-predictions", action="store_true", help="write PNG predictions (and SE probabilities)")
    parser.add_argument("--split", help="dataset split (default: the config's data.val_split)")
    parser.add_argument("--device", choices=["cuda", "cpu"])
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
        _print_summary(result)
    except (FileNotFoundError, ConfigError, runs.CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        rc = 2
    from .train import exit_process

    return exit_process(rc)


def _main_published(args, parser) -> int:
    from .evaluate_published import evaluate_published, export_checkpoint
    from .published_weights import PublishedWeightsError
    from .train import exit_process

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
            _print_summary(result)
    except (FileNotFoundError, ConfigError, PublishedWeightsError) as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        rc = 2
    return exit_process(rc)


if __name__ == "__main__":
    sys.exit(main())
