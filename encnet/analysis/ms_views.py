"""Where a multi-scale + flip evaluation gains or loses on the demo's data (issue 35): each scale alone, the scaled
image predicted whole against the sliding window, flip alone, and each window alone.

The demo's only scene cue is a band at the top of a tall image. A window that holds no band pixel cannot know the
scene, and a window padded up to the crop feeds the padding to the Encoding Layer's pooling with the image; this
module measures both. Every protocol's scores come from the engine's own inference
(:func:`encnet.engine.inference.multi_scale_logits`): a scale alone is that function with one scale and a window
kind's crop (:func:`view_window`): ``slide`` the config's crop, ``whole`` the scaled image's own size (one window, no
padding: the test mode mmsegmentation calls ``whole``), ``cover`` the larger of the two per side. A multi-scale
protocol's scores are the log of the summed exponentials (``release_exp_sum``, whose per-scale scores the engine
returns in log space) or the mean (``logits``, ``softmax``) of its scales' scores, which is how the engine combines
scales.

Metrics per protocol are the engine's: one confusion matrix over the split (``encnet.metrics``), mIoU_scene over the
scene-dependent classes, mIoU_small / mIoU_large over the size-bin regions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from encnet.engine.inference import (ACCUMULATE, IMAGENET_BLACK, crop_hw, forward_logits, multi_scale_logits,
                                     scaled_size, window_starts)
from encnet.metrics import SegmentationMetric, SizeBinMetric, confusion_matrix, iou_from_confusion

__all__ = ["WINDOWS", "MSProtocol", "ViewMetrics", "WindowBreakdown", "combine_scales", "cue_window_breakdown",
           "diagnose_multi_scale", "mean_iou", "protocol_of", "scale_scores", "view_window", "window_boxes"]


@dataclass(frozen=True)
class MSProtocol:
    """The multi-scale settings of a config's ``eval`` section (crop as (height, width))."""

    scales: tuple[float, ...]
    base_size: int
    crop: tuple[int, int]
    stride_ratio: float = 2.0 / 3.0
    accumulate: str = "release_exp_sum"
    align_corners: bool = True
    pad_value: tuple[float, ...] = IMAGENET_BLACK

    @property
    def stride(self) -> tuple[int, int]:
        return tuple(max(int(side * self.stride_ratio), 1) for side in self.crop)


def protocol_of(config) -> MSProtocol:
    """The protocol ``python -m encnet.evaluate RUN --ms`` applies for this config."""
    e, d = config.eval, config.data
    return MSProtocol(tuple(e.scales), int(e.base_size or d.base_size), crop_hw(e.crop_size or d.crop_size),
                      e.stride_ratio, e.accumulate, e.align_corners)


WINDOWS = ("slide", "whole", "cover")


def view_window(height: int, width: int, scale: float, protocol: MSProtocol, window: str) -> tuple[int, int]:
    """The window of one scale: ``slide`` the config's crop (slid over a larger image), ``whole`` the scaled image's
    own size (one window, no padding), ``cover`` the larger of the two per side (one window over the whole scaled
    image, padded up to the crop where the image is smaller, as training pads)."""
    if window not in WINDOWS:
        raise ValueError(f"window must be one of {WINDOWS}, found {window!r}")
    size = scaled_size(height, width, protocol.base_size, scale)
    if window == "slide":
        return protocol.crop
    if window == "whole":
        return tuple(size)
    return max(size[0], protocol.crop[0]), max(size[1], protocol.crop[1])


def scale_scores(model: Callable, image: Tensor, scale: float, protocol: MSProtocol, flip: bool,
                 window: str = "slide") -> Tensor:
    """One scale's scores at the input's size with the engine's inference and the window of :func:`view_window`."""
    height, width = image.shape[-2:]
    crop = view_window(height, width, scale, protocol, window)
    return multi_scale_logits(model, image, [scale], protocol.base_size, list(crop), protocol.stride_ratio, flip,
                              protocol.accumulate, protocol.align_corners, protocol.pad_value, max_batch=16)


def combine_scales(per_scale: Sequence[Tensor], accumulate: str) -> Tensor:
    """The engine's combination over scales: the release's sum of exponentials for ``release_exp_sum`` (the engine
    returns those scores as their logarithm, so they combine by logsumexp), averaged otherwise."""
    if accumulate not in ACCUMULATE:
        raise ValueError(f"accumulate must be one of {ACCUMULATE}, found {accumulate!r}")
    if accumulate == "release_exp_sum":
        return torch.logsumexp(torch.stack(list(per_scale)), dim=0)
    total = per_scale[0]
    for score in per_scale[1:]:
        total = total + score
    return total / len(per_scale)


def window_boxes(height: int, width: int, crop: tuple[int, int], stride: tuple[int, int]
                 ) -> list[tuple[int, int, int, int]]:
    """(h0, h1, w0, w1) of the sliding windows over an image padded up to the crop, row by row; the part of a box
    beyond ``height`` × ``width`` is padding."""
    (ch, cw), (sh, sw) = crop, stride
    ph, pw = max(height, ch), max(width, cw)
    return [(h0, min(h0 + ch, ph), w0, min(w0 + cw, pw))
            for h0 in window_starts(ph, ch, sh) for w0 in window_starts(pw, cw, sw)]


def _pad(image: Tensor, height: int, width: int, value: Sequence[float]) -> Tensor:
    canvas = torch.tensor(value, dtype=image.dtype).view(1, -1, 1, 1).expand(
        image.shape[0], -1, max(height, image.shape[-2]), max(width, image.shape[-1])).clone()
    canvas[..., : image.shape[-2], : image.shape[-1]] = image
    return canvas


def _nearest_index(length: int, scaled: int) -> np.ndarray:
    """For each of ``length`` input rows, the nearest row of a ``scaled``-row resize with align_corners."""
    if length == 1:
        return np.zeros(1, dtype=np.int64)
    return np.rint(np.arange(length) * (scaled - 1) / (length - 1)).astype(np.int64)


@dataclass
class WindowBreakdown:
    """One image at one scale, window by window."""

    boxes: list[tuple[int, int, int, int]]
    has_cue: list[bool]  # the window's image part holds a pixel of a cue class
    confusions: list[Tensor]  # each window's own prediction on its own image pixels, at the scaled size
    cueless_only: np.ndarray  # H×W bool at the input size: the pixels that only windows without the cue cover


@torch.no_grad()
def cue_window_breakdown(model: Callable, image: Tensor, target: Tensor, scale: float, protocol: MSProtocol,
                         cue_classes: Iterable[int], num_classes: int, flip: bool = True,
                         ignore_index: int = 255) -> WindowBreakdown:
    """Each sliding window of ``image`` (1×C×H×W) at ``scale`` predicted alone, and which pixels only windows
    without a cue-class pixel cover.

    A window's prediction is the argmax of its views' mean logits (the same argmax as the release's
    exp(l + l_flipped) of one window), scored against the label map resized to the scale by nearest neighbour,
    on the window's image pixels (not its padding).
    """
    height, width = image.shape[-2:]
    sh, sw = scaled_size(height, width, protocol.base_size, scale)
    scaled = F.interpolate(image, size=(sh, sw), mode="bilinear", align_corners=protocol.align_corners)
    label = F.interpolate(target[None, None].float(), size=(sh, sw), mode="nearest")[0, 0].long()
    padded = _pad(scaled, *protocol.crop, protocol.pad_value)
    cue = torch.isin(label, torch.tensor(sorted(set(cue_classes)), dtype=label.dtype))
    boxes = window_boxes(sh, sw, protocol.crop, protocol.stride)
    cue_cover = np.zeros((max(sh, protocol.crop[0]), max(sw, protocol.crop[1])), dtype=np.int64)
    windows = torch.cat([_pad(padded[..., h0:h1, w0:w1], *protocol.crop, protocol.pad_value)
                         for h0, h1, w0, w1 in boxes])
    all_logits = forward_logits(model, torch.cat([windows, windows.flip(-1)]) if flip else windows)
    if flip:
        all_logits = 0.5 * (all_logits[: len(boxes)] + all_logits[len(boxes):].flip(-1))
    has_cue, confusions = [], []
    for (h0, h1, w0, w1), logits in zip(boxes, all_logits.split(1)):
        ih, iw = min(h1, sh) - h0, min(w1, sw) - w0  # the window's image part
        pred = logits[0, :, :ih, :iw].argmax(0)
        truth = label[h0:h0 + ih, w0:w0 + iw]
        has_cue.append(bool(cue[h0:h0 + ih, w0:w0 + iw].any()))
        confusions.append(confusion_matrix(truth, pred, num_classes, ignore_index))
        if has_cue[-1]:
            cue_cover[h0:h1, w0:w1] += 1
    rows, cols = _nearest_index(height, sh), _nearest_index(width, sw)
    cueless_only = cue_cover[np.ix_(rows, cols)] == 0
    return WindowBreakdown(boxes, has_cue, confusions, cueless_only)


def mean_iou(confusion: Tensor, classes: Sequence[int]) -> float:
    """Mean IoU (%) over ``classes`` that have a union in ``confusion``; NaN when none has."""
    iou = iou_from_confusion(confusion)[list(classes)]
    return iou.nanmean().item() if not torch.isnan(iou).all() else math.nan


class ViewMetrics:
    """The engine's metrics for several named protocols over one split, fed image by image."""

    def __init__(self, num_classes: int, scene_classes: Sequence[int], region_codes: dict[str, int] | None,
                 controls: dict[str, int], ignore_index: int = 255):
        self.num_classes, self.scene_classes, self.ignore_index = num_classes, list(scene_classes), ignore_index
        self.region_codes, self.controls = dict(region_codes or {}), dict(controls)
        self.metrics: dict[str, tuple[SegmentationMetric, SizeBinMetric | None]] = {}

    def update(self, name: str, scores: Tensor, target: Tensor, regions: Tensor | None = None) -> None:
        if name not in self.metrics:
            bins = (SizeBinMetric(self.num_classes, self.region_codes, self.scene_classes, self.ignore_index)
                    if self.region_codes else None)
            self.metrics[name] = (SegmentationMetric(self.num_classes, self.ignore_index), bins)
        metric, bins = self.metrics[name]
        scores = scores.to(torch.promote_types(scores.dtype, torch.float32))
        metric.update(scores, target)
        if bins is not None and regions is not None:
            bins.update(scores, target, regions)

    def compute(self) -> dict[str, dict[str, float]]:
        out = {}
        for name, (metric, bins) in self.metrics.items():
            result = metric.compute()
            row = {"pixAcc": result["pixAcc"], "mIoU": result["mIoU"],
                   "mIoU_scene": mean_iou(metric.confusion, self.scene_classes)}
            if bins is not None:
                row.update(bins.compute())
            row.update({f"IoU_{label}": result["IoU"][index] for label, index in self.controls.items()})
            out[name] = row
        return out


def _name(kind: str, scale: float | None, flip: bool) -> str:
    return kind + ("" if scale is None else f"_{scale:g}") + ("_flip" if flip else "")


@torch.no_grad()
def diagnose_multi_scale(run, limit: int | None = None, window_scale: float | None = None,
                         progress: Callable[[int, int], None] | None = None) -> dict[str, dict[str, float]]:
    """Every protocol's metrics on ``run``'s validation split (a :class:`~encnet.analysis.trained_model.TrainedRun`
    of the generated ``context_scenes`` data, whose ``*_backdrop`` classes are the scene cue).

    Protocols (all but ``ss`` with flip): ``ss`` / ``ss_flip`` (the whole image at scale 1, as the single-scale
    row); per scale s and window kind (:func:`view_window`) ``slide_s_flip`` (the config's sliding window),
    ``whole_s_flip`` and ``cover_s_flip``; ``ms_<kind>_flip`` the scales combined (``ms_slide_flip`` is the config's
    MS protocol: what ``encnet.evaluate --ms`` logs). At ``window_scale`` (default: the largest scale):
    ``windows_cue`` / ``windows_cueless`` score every window's own prediction (windows holding a cue pixel / none),
    and ``<protocol>@cueless_only`` / ``@cue_covered`` score each window kind's prediction at that scale and the
    config's MS one on the pixels that only cueless windows cover / that a cue window covers.
    ``counts`` gives the windows of each kind and the share of scene-class pixels that only cueless windows cover.
    """
    model, dataset, protocol = run.model, run.dataset, protocol_of(run.config)
    names = list(dataset.class_names)
    num_classes = len(names)
    scene = list(dataset.ambiguous_classes)
    cue = [i for i, n in enumerate(names) if n.endswith("_backdrop")]
    if not cue:
        raise ValueError(f"{run.run_dir}: its data has no *_backdrop classes (context_scenes layout 'far'); the "
                         f"window analysis needs the scene cue labelled")
    controls = {n: names.index(n) for n in ("ring", "cross") if n in names}
    views = ViewMetrics(num_classes, scene, getattr(dataset, "region_codes", None), controls)
    window_scale = max(protocol.scales) if window_scale is None else window_scale
    window_confusions = {True: torch.zeros(num_classes, num_classes, dtype=torch.int64),
                         False: torch.zeros(num_classes, num_classes, dtype=torch.int64)}
    counts = {"windows_cue": 0, "windows_cueless": 0, "scene_pixels": 0, "scene_pixels_cueless_only": 0}
    total = len(dataset) if limit is None else min(limit, len(dataset))
    for index in range(total):
        image, target = dataset[index]
        image, target = image[None], torch.as_tensor(target).long()
        regions = dataset.size_regions(index) if hasattr(dataset, "size_regions") else None
        regions = None if regions is None else torch.from_numpy(np.asarray(regions)).long()

        def update(name, scores, mask=None):
            truth = target if mask is None else torch.where(mask, target, torch.full_like(target, 255))
            views.update(name, scores, truth[None], None if regions is None else regions[None])

        both = forward_logits(model, torch.cat([image, image.flip(-1)]))
        update("ss", both[:1])
        update("ss_flip", 0.5 * (both[:1] + both[1:].flip(-1)))
        height, width = image.shape[-2:]
        per_scale: dict[str, list[Tensor]] = {kind: [] for kind in WINDOWS}
        at_scale: dict[str, Tensor] = {}
        for scale in protocol.scales:
            done: dict[tuple[int, int], Tensor] = {}  # windows that coincide are one computation
            for kind in WINDOWS:
                crop = tuple(view_window(height, width, scale, protocol, kind))
                if crop not in done:
                    done[crop] = scale_scores(model, image, scale, protocol, flip=True, window=kind)
                scores = done[crop]
                update(_name(kind, scale, True), scores)
                per_scale[kind].append(scores)
                if scale == window_scale:
                    at_scale[_name(kind, scale, True)] = scores
        for kind, scores in per_scale.items():
            combined = combine_scales(scores, protocol.accumulate)
            update(_name(f"ms_{kind}", None, True), combined)
            if kind == "slide":
                at_scale["ms_slide_flip"] = combined
        breakdown = cue_window_breakdown(model, image, target, window_scale, protocol, cue, num_classes, flip=True)
        for has_cue, confusion in zip(breakdown.has_cue, breakdown.confusions):
            window_confusions[has_cue] += confusion
            counts["windows_cue" if has_cue else "windows_cueless"] += 1
        only = torch.from_numpy(breakdown.cueless_only)
        is_scene = torch.isin(target, torch.tensor(scene))
        counts["scene_pixels"] += int(is_scene.sum())
        counts["scene_pixels_cueless_only"] += int((is_scene & only).sum())
        for label, scores in at_scale.items():
            update(f"{label}@cueless_only", scores, only)
            update(f"{label}@cue_covered", scores, ~only)
        if progress is not None:
            progress(index + 1, total)
    out = views.compute()
    for has_cue, confusion in window_confusions.items():
        out["windows_cue" if has_cue else "windows_cueless"] = {"mIoU_scene": mean_iou(confusion, scene),
                                                                "mIoU": mean_iou(confusion, range(num_classes))}
    share = counts["scene_pixels_cueless_only"] / max(counts["scene_pixels"], 1) * 100
    out["counts"] = {**{k: float(v) for k, v in counts.items()}, "scene_pixels_cueless_only_pct": share}
    return out
