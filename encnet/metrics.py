"""Segmentation and classification metrics, accumulated over a whole split and summed across processes.

Segmentation (PAPER.md §5): one confusion matrix over the split; pixAcc = correct labelled pixels /
labelled pixels; IoU_c = TP/(TP+FP+FN); mIoU = mean IoU. All values are percentages (0–100).

Where this differs from the released code: the release divides by (union + ε), so a class absent from
both predictions and labels scores IoU 0 and pulls mIoU down; by default (``miou="present"``) its IoU is
NaN and mIoU is the nanmean; ``miou="all"`` is the release's mean over every class (config ``eval.miou``,
ledger entry ``miou_classes``). Over a full validation split every class occurs, and the two agree.

PASCAL-Context 59 vs 60 classes is a dataset mapping, not a metric option: for "59 classes w/o
background" the dataset maps background to the ignore label 255 and classes 1..59 to 0..58
(``num_classes=59``); for "60 classes w/ background" background stays class 0 (``num_classes=60``).
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["SegmentationMetric", "SizeBinMetric", "ClassificationMetric", "ade20k_final_score", "all_reduce_sum",
           "best_validation", "class_iou", "confusion_matrix", "iou_from_confusion"]


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """Sum ``tensor`` in place across processes; a no-op outside ``torch.distributed``."""
    if not (dist.is_available() and dist.is_initialized()):
        return tensor
    if dist.get_backend() == "nccl" and not tensor.is_cuda:
        on_device = tensor.cuda()
        dist.all_reduce(on_device)
        tensor.copy_(on_device)
    else:
        dist.all_reduce(tensor)
    return tensor


def ade20k_final_score(pix_acc: float, miou: float) -> float:
    """ADE20K's leaderboard score: the mean of pixAcc and mIoU (both in %)."""
    return (pix_acc + miou) / 2.0


def best_validation(records: list[dict]) -> dict:
    """The release's model selection over the validation records logged so far (ledger: checkpoint_selection).

    Release v0.5.0's ``train.py`` keeps ``model_best`` where (pixAcc + mIoU) / 2 on val is strictly larger
    than before, so the first of equal scores wins. Returns ``best_val_epoch``, ``best_val_pixAcc`` and
    ``best_val_mIoU`` (empty when no record has a validation result). The suite reports the last epoch; this
    is logged beside it so the release's rule can be read off every run (the release's own choice where the monitor
    scores the release's view, ``eval.monitor_view: centre_crop``; ledger: monitor_view).
    """
    best = None
    for record in records:
        if "val_mIoU" not in record:
            continue
        score = (record["val_pixAcc"] + record["val_mIoU"]) / 2
        if best is None or score > best[0]:
            best = (score, record)
    if best is None:
        return {}
    record = best[1]
    return {"best_val_epoch": record["epoch"], "best_val_pixAcc": record["val_pixAcc"],
            "best_val_mIoU": record["val_mIoU"]}


def _to_labels(pred_or_logits: Tensor, target: Tensor) -> Tensor:
    if pred_or_logits.dim() == target.dim() + 1:
        return pred_or_logits.argmax(dim=1)
    if pred_or_logits.shape != target.shape:
        raise ValueError(
            f"expected predictions shaped like the target {tuple(target.shape)} or logits "
            f"B×C×..., got {tuple(pred_or_logits.shape)}"
        )
    return pred_or_logits


def confusion_matrix(target: Tensor, pred: Tensor, num_classes: int, ignore_index: int = 255) -> Tensor:
    """``confusion[truth, prediction]`` pixel counts (int64, C×C) of label and prediction maps of one shape.

    The suite's only confusion-matrix arithmetic: the engine's :class:`SegmentationMetric` accumulates it over a
    split, the failure-case analysis per image (``encnet.analysis``). Truths equal to ``ignore_index`` or
    outside 0..C-1 are not counted. A prediction outside 0..C-1 cannot come from an argmax over C logits (a
    damaged predictions file can hold one) and is an error: counted, it would land in another class's cell.
    """
    target, pred = torch.as_tensor(target), torch.as_tensor(pred)
    if pred.shape != target.shape:
        raise ValueError(f"label and prediction differ in shape: {tuple(target.shape)} vs {tuple(pred.shape)}")
    n = num_classes
    labelled = (target != ignore_index) & (target >= 0) & (target < n)
    pred = pred.to(target.device)[labelled].long()
    if pred.numel() and (pred.min() < 0 or pred.max() >= n):
        bad = pred[(pred < 0) | (pred >= n)][0].item()
        raise ValueError(f"a prediction holds class {bad}, outside 0..{n - 1} for {n} classes")
    index = target[labelled].long() * n + pred
    return torch.bincount(index, minlength=n * n).view(n, n)


def class_iou(tp: Tensor, gt_pixels: Tensor, pred_pixels: Tensor) -> Tensor:
    """IoU in % = TP / (truth + predicted − TP), elementwise in float64; NaN where a class is in neither."""
    tp, gt_pixels, pred_pixels = (torch.as_tensor(a).double() for a in (tp, gt_pixels, pred_pixels))
    union = gt_pixels + pred_pixels - tp
    # (tp / union) * 100, in this order: the engine's logged IoU has always been computed so (bit for bit).
    return torch.where(union > 0, tp / union, torch.full_like(tp, math.nan)) * 100


def iou_from_confusion(confusion: Tensor) -> Tensor:
    """Per-class IoU (%) of a ``confusion[truth, prediction]`` matrix; NaN for a class in neither."""
    confusion = torch.as_tensor(confusion)
    return class_iou(confusion.diag(), confusion.sum(1), confusion.sum(0))


class SegmentationMetric:
    """Confusion matrix ``confusion[target, prediction]`` (int64, num_classes × num_classes).

    ``device``: where the matrix lives; ``None`` follows the first ``update``'s inputs. ``miou``: "present"
    averages over classes with a union, "all" over every class (absent ones count 0, as the release).
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, device=None, miou: str = "present"):
        if miou not in ("present", "all"):
            raise ValueError(f"miou must be 'present' or 'all', found {miou!r}")
        self.miou = miou
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.confusion = torch.zeros(
            num_classes, num_classes, dtype=torch.int64, device=device or "cpu"
        )
        self._follow_inputs = device is None

    @torch.no_grad()
    def update(self, pred_or_logits: Tensor, target: Tensor) -> None:
        if self._follow_inputs:
            self.confusion = self.confusion.to(target.device)
            self._follow_inputs = False
        pred = _to_labels(pred_or_logits, target).to(self.confusion.device)
        self.confusion += confusion_matrix(target.to(self.confusion.device), pred, self.num_classes,
                                           self.ignore_index)

    def reset(self) -> None:
        self.confusion.zero_()

    def reduce(self) -> None:
        """Sum the confusion matrix over all processes (call once, before ``compute``)."""
        all_reduce_sum(self.confusion)

    def compute(self) -> dict:
        conf = self.confusion.double().cpu()
        iou = iou_from_confusion(conf)
        tp = conf.diag()
        labelled = conf.sum()
        pix_acc = (tp.sum() / labelled * 100).item() if labelled > 0 else math.nan
        miou = iou.nanmean().item() if self.miou == "present" else iou.nan_to_num(0.0).mean().item()
        return {"pixAcc": pix_acc, "mIoU": miou, "IoU": iou.tolist()}


class SizeBinMetric:
    """Mean IoU of some classes near objects of each size bin (the generated demo data's ``regions`` maps).

    For bin ``b`` only the pixels whose region value is ``codes[b]`` count (an object and a margin around it, so a
    false positive beside a small object counts against the small bin); on them one confusion matrix gives each
    class's IoU, and ``mIoU_<b>`` is the mean over ``classes`` that have a union there (e.g. the scene-dependent
    classes). Summed across processes by ``reduce`` like :class:`SegmentationMetric`.
    """

    def __init__(self, num_classes: int, codes: dict[str, int], classes, ignore_index: int = 255):
        self.codes, self.classes, self.ignore_index = dict(codes), list(classes), ignore_index
        self.bins = {name: SegmentationMetric(num_classes, ignore_index) for name in self.codes}

    @torch.no_grad()
    def update(self, pred_or_logits: Tensor, target: Tensor, regions: Tensor) -> None:
        regions = regions.to(target.device).expand_as(target)
        for name, code in self.codes.items():
            self.bins[name].update(pred_or_logits, torch.where(regions == code, target,
                                                               torch.full_like(target, self.ignore_index)))

    def reduce(self) -> None:
        for metric in self.bins.values():
            metric.reduce()

    def compute(self) -> dict:
        out = {}
        for name, metric in self.bins.items():
            iou = torch.tensor(metric.compute()["IoU"], dtype=torch.float64)[self.classes]
            out[f"mIoU_{name}"] = iou.nanmean().item()
        return out


class ClassificationMetric:
    """Top-1 accuracy and error (%) over a split; ``reduce()`` sums the counts across processes."""

    def __init__(self, device=None):
        self.counts = torch.zeros(2, dtype=torch.int64, device=device or "cpu")  # correct, total
        self._follow_inputs = device is None

    @torch.no_grad()
    def update(self, pred_or_logits: Tensor, target: Tensor) -> None:
        if self._follow_inputs:
            self.counts = self.counts.to(target.device)
            self._follow_inputs = False
        pred = _to_labels(pred_or_logits, target).to(self.counts.device)
        target = target.to(self.counts.device)
        self.counts[0] += (pred == target).sum()
        self.counts[1] += target.numel()

    def reset(self) -> None:
        self.counts.zero_()

    def reduce(self) -> None:
        all_reduce_sum(self.counts)

    def compute(self) -> dict:
        correct, total = self.counts.tolist()
        accuracy = 100.0 * correct / total if total else math.nan
        return {"accuracy": accuracy, "top1_error": 100.0 - accuracy}
