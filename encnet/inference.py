"""Segmentation inference: the full image, or the paper's multi-scale + flip sliding window (PAPER.md §5).

Multi-scale protocol (released ``MultiEvalModule``): for each scale s the image's long side is resized to
ceil(base_size · s) (aspect kept). An image that fits in one crop is padded to crop×crop and predicted once;
a larger one (its short side padded up to the crop if needed) is covered by crop×crop windows with stride
⌊stride_ratio · crop⌋ (2/3 in the paper); the last window of a row/column is the remainder, padded to the crop.
Window logits are averaged where windows overlap, resized back to the original size and averaged over the
scales; with ``flip`` every window is also predicted mirrored and the two logits averaged.

Differences from the released code, none of which changes the argmax of a single-scale prediction:
- logits are averaged over flips and scales (the release sums them; the argmax is the same);
- padding uses 0 in the normalised image (the mean colour); the release pads with −mean/std (black);
- resizing uses ``align_corners=False`` (the release used ``align_corners=True``).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["forward_logits", "full_image_logits", "multi_scale_logits", "predict_logits", "scaled_size",
           "sliding_window_logits", "window_starts"]


def forward_logits(model: Callable, image: Tensor) -> Tensor:
    """Main-head logits of ``model`` (a ``SegmentationOutput`` or a plain tensor)."""
    out = model(image)
    if hasattr(out, "out"):
        return out.out
    if isinstance(out, (tuple, list)):
        return out[0]
    return out


def _with_flip(model: Callable, image: Tensor, flip: bool) -> Tensor:
    logits = forward_logits(model, image)
    if flip:
        logits = 0.5 * (logits + forward_logits(model, image.flip(-1)).flip(-1))
    return logits


def _pad_to(image: Tensor, height: int, width: int) -> Tensor:
    pad_h, pad_w = max(height - image.shape[-2], 0), max(width - image.shape[-1], 0)
    return F.pad(image, (0, pad_w, 0, pad_h)) if pad_h or pad_w else image


def window_starts(length: int, crop: int, stride: int) -> list[int]:
    """Start offsets of the windows along one padded axis (``length >= crop``)."""
    count = int(math.ceil((length - crop) / stride)) + 1
    return [i * stride for i in range(count)]


def full_image_logits(model: Callable, image: Tensor, flip: bool = False) -> Tensor:
    """B×C×H×W → B×K×H×W from one forward pass over the whole image (single-scale evaluation)."""
    return _with_flip(model, image, flip)


def sliding_window_logits(model: Callable, image: Tensor, crop_size: int, stride: int,
                          flip: bool = False) -> Tensor:
    """B×C×H×W → B×K×H×W, averaging crop×crop windows with the given stride."""
    height, width = image.shape[-2:]
    if max(height, width) <= crop_size:
        logits = _with_flip(model, _pad_to(image, crop_size, crop_size), flip)
        return logits[..., :height, :width]
    padded = _pad_to(image, crop_size, crop_size)
    ph, pw = padded.shape[-2:]
    total = count = None
    for h0 in window_starts(ph, crop_size, stride):
        for w0 in window_starts(pw, crop_size, stride):
            h1, w1 = min(h0 + crop_size, ph), min(w0 + crop_size, pw)
            window = _pad_to(padded[..., h0:h1, w0:w1], crop_size, crop_size)
            logits = _with_flip(model, window, flip)[..., : h1 - h0, : w1 - w0]
            if total is None:
                total = logits.new_zeros((*logits.shape[:2], ph, pw))
                count = logits.new_zeros((1, 1, ph, pw))
            total[..., h0:h1, w0:w1] += logits
            count[..., h0:h1, w0:w1] += 1
    return (total / count)[..., :height, :width]


def scaled_size(height: int, width: int, base_size: int, scale: float) -> tuple[int, int]:
    """Image size with the long side resized to ceil(base_size · scale), aspect ratio kept."""
    long_size = int(math.ceil(base_size * scale))
    if height > width:
        return long_size, int(width * long_size / height + 0.5)
    return int(height * long_size / width + 0.5), long_size


def multi_scale_logits(model: Callable, image: Tensor, scales: Sequence[float], base_size: int,
                       crop_size: int, stride_ratio: float = 2.0 / 3.0, flip: bool = True) -> Tensor:
    """The paper's multi-scale (+ flip) sliding-window logits, B×K×H×W at the input's size."""
    height, width = image.shape[-2:]
    stride = max(int(crop_size * stride_ratio), 1)
    total = None
    for scale in scales:
        size = scaled_size(height, width, base_size, scale)
        resized = F.interpolate(image, size=size, mode="bilinear", align_corners=False)
        logits = sliding_window_logits(model, resized, crop_size, stride, flip)
        logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
        total = logits if total is None else total + logits
    return total / len(scales)


@torch.no_grad()
def predict_logits(model: Callable, image: Tensor, scales: Sequence[float] | None = None, flip: bool = False,
                   base_size: int = 520, crop_size: int = 480, stride_ratio: float = 2.0 / 3.0) -> Tensor:
    """Full-image logits when ``scales`` is None, else the multi-scale sliding-window protocol."""
    if scales is None:
        return full_image_logits(model, image, flip)
    return multi_scale_logits(model, image, scales, base_size, crop_size, stride_ratio, flip)
