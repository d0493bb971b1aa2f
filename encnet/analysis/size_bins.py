"""What a size bin's mIoU is made of on the demo's scene-dependent classes (issue 35, the SE-loss's small − large
direction): how well the objects' shapes are segmented, and how often a pixel of the right shape gets the right
scene.

The scene classes are ``<scene>_<shape>``: the shape is local (any network sees it), the scene is global (only a
module that reads the band knows it). A bin's mIoU mixes both. Splitting them:

- **shape IoU**: the scene classes merged into their shapes (every ``*_disc`` one class, every ``*_square``
  another), IoU of each merged class, their mean: segmentation quality blind to the scene, the ceiling on what
  reading the scene can add to the bin's mIoU;
- **scene accuracy**: of the pixels whose truth is a scene class and whose prediction has the right shape (any
  scene), the share with the right scene (25 % for a uniform guess among four scenes);
- **composition**: every scene-class truth pixel is predicted as its class, as its shape in another scene, as the
  other shape (any scene), or as something else (background, a control, a backdrop).

All are functions of a ``confusion[truth, prediction]`` matrix (:mod:`encnet.metrics`), such as the per-bin matrices
of :class:`encnet.metrics.SizeBinMetric`.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch
from torch import Tensor

from encnet.metrics import SegmentationMetric, SizeBinMetric, class_iou, iou_from_confusion

__all__ = ["SHARES", "scene_shape_groups", "size_bin_breakdown", "size_bin_confusions"]

SHARES = ("right_class", "right_shape_wrong_scene", "other_shape", "other")


def scene_shape_groups(class_names: Sequence[str], scene_classes: Sequence[int]) -> dict[int, str]:
    """Scene class index → its shape (the name's part after the scene: ``field_disc`` → ``disc``)."""
    return {c: class_names[c].split("_", 1)[1] for c in scene_classes}


def size_bin_breakdown(confusion: Tensor, shape_of: Mapping[int, str]) -> dict[str, float]:
    """mIoU of the scene classes, shape IoU, scene accuracy and the composition (%) of one ``confusion`` matrix.

    ``shape_of`` maps each scene class to its shape. NaN where a quantity has no pixels.
    """
    c = torch.as_tensor(confusion).double()
    scene = sorted(shape_of)
    iou = iou_from_confusion(c)[scene]
    shapes = sorted(set(shape_of.values()))
    members = {g: [k for k in scene if shape_of[k] == g] for g in shapes}
    shape_iou = []
    for g in shapes:
        idx = members[g]
        tp = c[idx][:, idx].sum()
        shape_iou.append(class_iou(tp, c[idx].sum(), c[:, idx].sum()).item())
    right = sum(c[k, k] for k in scene)
    same_shape = sum(c[k, members[shape_of[k]]].sum() for k in scene)
    any_scene = sum(c[k, scene].sum() for k in scene)
    truth = sum(c[k].sum() for k in scene)

    def pct(num, den):
        return (num / den * 100).item() if den > 0 else math.nan

    shape_values = torch.tensor(shape_iou, dtype=torch.float64)
    return {
        "mIoU": iou.nanmean().item() if not torch.isnan(iou).all() else math.nan,
        "shape_IoU": shape_values.nanmean().item() if not torch.isnan(shape_values).all() else math.nan,
        **{f"shape_IoU_{g}": v for g, v in zip(shapes, shape_iou)},
        "scene_accuracy": pct(right, same_shape),
        "right_class": pct(right, truth),
        "right_shape_wrong_scene": pct(same_shape - right, truth),
        "other_shape": pct(any_scene - same_shape, truth),
        "other": pct(truth - any_scene, truth),
        "scene_pixels": float(truth),
    }


@torch.no_grad()
def size_bin_confusions(run) -> dict[str, Tensor]:
    """Single-scale (whole image, no flip: the ablation's protocol) confusion matrices of ``run`` (a
    :class:`~encnet.analysis.trained_model.TrainedRun` on data with size bins): ``all`` over every pixel and one
    per size bin, as :class:`~encnet.metrics.SizeBinMetric` counts them."""
    from encnet.engine.inference import forward_logits

    dataset = run.dataset
    num_classes = len(dataset.class_names)
    if not dataset.region_codes:
        raise ValueError(f"{run.run_dir}: its data has no size bins (context_scenes sizes 'small_large')")
    metric = SegmentationMetric(num_classes)
    bins = SizeBinMetric(num_classes, dataset.region_codes, dataset.ambiguous_classes)
    for index in range(len(dataset)):
        image, target = dataset[index]
        logits = forward_logits(run.model, image[None])
        target = torch.as_tensor(target).long()[None]
        metric.update(logits, target)
        bins.update(logits, target, torch.from_numpy(dataset.size_regions(index)).long()[None])
    return {"all": metric.confusion.clone(), **{name: m.confusion.clone() for name, m in bins.bins.items()}}
