"""The evaluation loop shared by ``train`` (validation), ``evaluate`` (a run folder) and ``evaluate_published``
(a checkpoint made elsewhere): a model over a dataset, sharded across processes, into one metric; and the
``eval[_<tag>].json`` record it writes.

Under ``torchrun`` every process evaluates its share of the images and the metric's counts are summed
(all-reduced) before the scores are computed, so the numbers do not depend on the number of processes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from . import distributed, runs
from .config import Config
from .inference import predict_logits

__all__ = ["eval_tag", "evaluate_model", "jsonable", "print_summary", "write_eval"]


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


CLASSIFICATION_EVAL_BATCH = 100


@torch.no_grad()
def evaluate_model(model: torch.nn.Module, dataset, metric, config: Config, ctx, amp: bool = False,
                   scales: Sequence[float] | None = None, flip: bool = False,
                   save_dir: Path | None = None, predict: Callable | None = None) -> dict:
    """Evaluate ``model`` on this process's shard of ``dataset``; returns the all-reduced metrics.

    ``scales`` None: one full-image pass (single-scale). Otherwise the multi-scale sliding window.
    ``predict(model, image)``: another protocol's scores instead (``encnet.engine.protocols``).
    """
    model.eval()
    # Classification images share one size, and in eval mode an image's logits do not depend on its batch
    # neighbours, so they go 100 at a time (at batch 1 the CIFAR stand-in's 2,000 test images cost more than its
    # training epoch); segmentation images keep their own sizes, one at a time.
    batch = CLASSIFICATION_EVAL_BATCH if config.task == "classification" else 1
    loader = DataLoader(_Shard(dataset, ctx.rank, ctx.world_size), batch_size=batch, shuffle=False,
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
            out = model(image, all_heads=True)  # eval forwards compute the main head alone unless asked
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
    scene_classes = getattr(dataset, "ambiguous_classes", None)
    if config.task == "segmentation" and scene_classes and "IoU" in result:
        # Generated demo data: the mean IoU of the classes only the scene tells apart, which says whether a
        # network read the scene (the demo's learning criterion) apart from the classes every network learns.
        ious = torch.tensor([float("nan") if v is None else v for v in result["IoU"]], dtype=torch.float64)
        result["mIoU_scene"] = ious[list(scene_classes)].nanmean().item()
    return result


def _save_prediction(path: Path, logits: torch.Tensor) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    pred = logits[0].argmax(0).to(torch.uint8).cpu().numpy()
    Image.fromarray(np.ascontiguousarray(pred), mode="L").save(path)


def jsonable(value):
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def write_eval(run_dir: Path, tag: str, result: dict, config: Config, split: str,
               scales: Sequence[float] | None, flip: bool, class_names: Sequence[str] | None = None) -> Path:
    """Write ``eval.json`` / ``eval_<tag>.json`` with the metrics and the settings that produced them."""
    record = jsonable(dict(result))
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


def print_summary(result: dict) -> None:
    if int(os.environ.get("RANK", "0")) == 0:
        summary = {k: v for k, v in result.items() if k in ("pixAcc", "mIoU", "accuracy", "top1_error")}
        protocol = result.get("protocol", {}).get("name")
        print(" ".join(f"{k} {v:.2f}" for k, v in summary.items()) + (f"  (protocol: {protocol})" if protocol else ""),
              flush=True)
