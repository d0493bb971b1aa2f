"""Named evaluation protocols, one per checkpoint source: a published number is only reproduced under its own.

- ``release`` (the authors' ``MultiEvalModule``, v0.5.0 ``encoding/models/base.py``, used for every model-zoo
  number): long side to base_size·s for s in {0.5 … 1.75}, crop×crop windows with stride 2/3·crop padded black,
  flip, per window exp(logits + flipped logits), summed over scales, bilinear with align_corners=True. These are
  ``eval.*`` keys of the suite's own multi-scale path (``encnet.engine.inference``), so the preset is a set of
  overrides.
- ``mmseg`` (mmsegmentation 0.x's ``MultiScaleFlipAug`` test pipeline for ADE20K 512×512 and
  ``EncoderDecoder.aug_test``, the code that produced and evaluated the published EncNet checkpoints, 2020): for
  each ratio r in {0.5 … 1.75} the image is rescaled, aspect kept, to fit within (2048·r)×(512·r) (mmcv's
  ``imrescale``: factor min(2048r/long side, 512r/short side), sizes rounded half up). mmsegmentation 1.x's
  ``tta_pipeline`` differs here: it resizes the original image by the factor r itself (``Resize(scale_factor=r,
  keep_ratio=True)``), with no 2048×512 bound, so its multi-scale numbers need not equal 0.x's. The model
  sees the whole image (``test_cfg.mode='whole'``; ``slide`` is also here); logits are
  resized back to the original size (align_corners=False), soft-maxed, and the probabilities averaged over the
  ratios and the horizontal flip. mmsegmentation resizes the uint8 image with OpenCV before normalising; here
  the normalised tensor is resized bilinearly (half-pixel centres, as OpenCV's INTER_LINEAR), which differs
  by the uint8 rounding only.
- ``suite``: the config's own ``eval`` section, unchanged (the suite's checkpoints).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from encnet.engine.config import PAPER_MS_SCALES, Config, apply_overrides, config_from_dict, to_dict
from encnet.engine.inference import forward_logits

__all__ = ["PROTOCOLS", "SOURCE_PROTOCOL", "Protocol", "apply_protocol", "mmseg_logits", "mmseg_rescaled_size",
           "mmseg_slide_windows"]

MMSEG_ADE_SCALE = (2048, 512)  # (long, short) bound of mmsegmentation's ADE20K 512×512 test pipeline


@dataclass(frozen=True)
class Protocol:
    name: str
    description: str
    # ``eval.*`` overrides of the suite's multi-scale path (release); empty for the others
    overrides: dict = field(default_factory=dict)
    # mmseg's own path: ratios, flip, mode ("whole" | "slide"), (long, short) bound
    mmseg: dict | None = None


PROTOCOLS: dict[str, Protocol] = {
    "release": Protocol(
        "release",
        "PyTorch-Encoding v0.5.0 MultiEvalModule: long side base_size·{0.5…1.75}, crop windows at stride 2/3, "
        "black padding, flip, exp(logits) summed over scales, align_corners=True",
        overrides={"scales": list(PAPER_MS_SCALES), "flip": True, "stride_ratio": 2.0 / 3.0,
                   "accumulate": "release_exp_sum", "align_corners": True},
    ),
    "mmseg": Protocol(
        "mmseg",
        "mmsegmentation ADE20K test: rescale to fit (2048, 512)·{0.5…1.75}, whole image, flip, softmax "
        "averaged, align_corners=False",
        mmseg={"ratios": list(PAPER_MS_SCALES), "flip": True, "mode": "whole", "scale": list(MMSEG_ADE_SCALE)},
    ),
    "suite": Protocol("suite", "the config's own eval section"),
}
SOURCE_PROTOCOL = {"pytorch-encoding": "release", "mmseg": "mmseg", "encnet": "suite"}


def apply_protocol(config: Config, name: str) -> Config:
    """``config`` with the protocol's ``eval.*`` settings (a new Config; unknown keys are errors)."""
    if name not in PROTOCOLS:
        raise ValueError(f"unknown protocol {name!r}; expected one of {', '.join(PROTOCOLS)}")
    overrides = [f"eval.{k}={v}" for k, v in PROTOCOLS[name].overrides.items()]
    data = apply_overrides(to_dict(config), overrides)
    return config_from_dict(data, f"protocol {name!r}")


# --------------------------------------------------------------------------------------------- mmseg path


def mmseg_rescaled_size(height: int, width: int, scale: Sequence[int] = MMSEG_ADE_SCALE,
                        ratio: float = 1.0) -> tuple[int, int]:
    """mmcv's keep-ratio rescale of an image into the (long, short) bound ``scale`` times ``ratio``."""
    long_bound, short_bound = int(scale[0] * ratio), int(scale[1] * ratio)
    factor = min(long_bound / max(height, width), short_bound / min(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)


def mmseg_slide_windows(height: int, width: int, crop: tuple[int, int],
                        stride: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """(y0, y1, x0, x1) of mmsegmentation's ``slide_inference`` windows: a grid of strides whose last window
    is shifted back inside the image (no padding; an image smaller than the crop is one window)."""
    (crop_h, crop_w), (stride_h, stride_w) = crop, stride
    rows = max(height - crop_h + stride_h - 1, 0) // stride_h + 1
    cols = max(width - crop_w + stride_w - 1, 0) // stride_w + 1
    windows = []
    for r in range(rows):
        for c in range(cols):
            y1, x1 = min(r * stride_h + crop_h, height), min(c * stride_w + crop_w, width)
            windows.append((max(y1 - crop_h, 0), y1, max(x1 - crop_w, 0), x1))
    return windows


def _slide(model: Callable, image: Tensor, crop: tuple[int, int], stride: tuple[int, int]) -> Tensor:
    height, width = image.shape[-2:]
    total = count = None
    for y0, y1, x0, x1 in mmseg_slide_windows(height, width, crop, stride):
        logits = forward_logits(model, image[..., y0:y1, x0:x1])
        if total is None:
            total = logits.new_zeros((*logits.shape[:2], height, width))
            count = logits.new_zeros((height, width))
        total[..., y0:y1, x0:x1] += logits
        count[y0:y1, x0:x1] += 1
    return total / count


@torch.no_grad()
def mmseg_logits(model: Callable, image: Tensor, ratios: Sequence[float] = tuple(PAPER_MS_SCALES),
                 flip: bool = True, mode: str = "whole", scale: Sequence[int] = MMSEG_ADE_SCALE,
                 crop: tuple[int, int] = (512, 512), stride: tuple[int, int] = (341, 341)) -> Tensor:
    """mmsegmentation's test-time augmentation: B×K×H×W class probabilities averaged over ratios and flips."""
    if mode not in ("whole", "slide"):
        raise ValueError(f"mode must be 'whole' or 'slide', found {mode!r}")
    height, width = image.shape[-2:]
    total, views = None, 0
    for ratio in ratios:
        resized = F.interpolate(image, size=mmseg_rescaled_size(height, width, scale, ratio), mode="bilinear",
                                align_corners=False)
        for flipped in ((False, True) if flip else (False,)):
            view = resized.flip(-1) if flipped else resized
            logits = forward_logits(model, view) if mode == "whole" else _slide(model, view, crop, stride)
            logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
            probs = logits.softmax(1)
            probs = probs.flip(-1) if flipped else probs
            total = probs if total is None else total + probs
            views += 1
    return total / views
