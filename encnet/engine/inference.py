"""Segmentation inference: the full image, or the paper's multi-scale + flip sliding window (PAPER.md §5).

Multi-scale protocol (the release's ``MultiEvalModule``, ``encoding/models/base.py`` at v0.5.0 = f891919): for
each scale s the image's long side is resized to ceil(base_size · s) (aspect kept). An image that fits in one
crop is padded to crop×crop and predicted once; a larger one (its short side padded up to the crop if needed) is
covered by crop×crop windows with stride ⌊stride_ratio · crop⌋ (2/3 in the paper); the last window of a
row/column is the remainder, padded to the crop. With ``flip`` every window is also predicted mirrored.

Padding is black, −mean/std per channel in the normalised image, as in training (which pads the uint8 image
with 0) and in the release's ``pad_image``. It matters: at scales 0.5 and 0.75 most of a 480² window is
padding, and EncNet's Encoding Layer (and the SE head) pool over every position, so the padding colour moves
the global context γ and with it every pixel's prediction.

How window predictions combine (``accumulate``), per scale then over scales:
- ``release_exp_sum`` (the release, ``module_inference``): per window exp(l + flip(l_flipped)), the exponential
  of the *summed* logits (exp(l) without flip); averaged where windows overlap, resized to the image and
  *summed* over scales. Not an average of logits: the exponential lets the most confident scale dominate,
  so the argmax can differ from ``logits`` with two or more scales or overlapping windows.
- ``logits``: logits averaged over flips, windows and scales.
- ``softmax`` (mmsegmentation's test-time augmentation): logits averaged over windows, resized, softmax; the
  probabilities are averaged over scales and flips. mmsegmentation flips the whole scaled image; here each
  window is flipped, which is the same wherever one window spans the width.
Resizing (the image to each scale, the scores back) is bilinear with ``align_corners`` (the release: True).

Every window has the crop's size, so windows of all scales and their mirrors are batched, ``max_batch`` images
per forward pass (the release runs one window, then its mirror); with the model in eval mode the scores equal
the one-window path's up to floating-point rounding.
The full-image path (``scales=None``, single-scale monitoring) is one forward pass, logits averaged over flips.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from encnet.data.transforms import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["ACCUMULATE", "IMAGENET_BLACK", "black_pixel", "forward_logits", "full_image_logits",
           "multi_scale_logits", "predict_logits", "scaled_size", "sliding_window_logits", "window_starts"]

ACCUMULATE = ("release_exp_sum", "logits", "softmax")


def black_pixel(mean: Sequence[float], std: Sequence[float]) -> tuple[float, ...]:
    """The normalised value of a black pixel, −mean/std per channel: what training pads with."""
    return tuple(-m / s for m, s in zip(mean, std))


IMAGENET_BLACK = black_pixel(IMAGENET_MEAN, IMAGENET_STD)


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


def _pad_to(image: Tensor, height: int, width: int, value: Sequence[float]) -> Tensor:
    """Pad bottom/right up to height×width with ``value`` per channel (the release's ``pad_image``)."""
    pad_h, pad_w = max(height - image.shape[-2], 0), max(width - image.shape[-1], 0)
    if not (pad_h or pad_w):
        return image
    if len(value) != image.shape[1]:
        raise ValueError(f"pad value has {len(value)} channels, the image {image.shape[1]}; pass pad_value "
                         f"(black_pixel(mean, std) of the normalisation) with one value per channel")
    fill = torch.tensor(value, dtype=image.dtype, device=image.device).view(1, -1, 1, 1)
    canvas = fill.expand(image.shape[0], -1, image.shape[-2] + pad_h, image.shape[-1] + pad_w).clone()
    canvas[..., : image.shape[-2], : image.shape[-1]] = image
    return canvas


def window_starts(length: int, crop: int, stride: int) -> list[int]:
    """Start offsets of the windows along one padded axis (``length >= crop``)."""
    count = int(math.ceil((length - crop) / stride)) + 1
    return [i * stride for i in range(count)]


def full_image_logits(model: Callable, image: Tensor, flip: bool = False) -> Tensor:
    """B×C×H×W → B×K×H×W from one forward pass over the whole image (single-scale evaluation)."""
    return _with_flip(model, image, flip)


def _combine_views(views: Tensor, accumulate: str) -> Tensor:
    """A window's V views → the maps averaged over windows: one map, or one per view for ``softmax``."""
    if accumulate == "release_exp_sum":
        # A deliberate difference from the release, which sums in the image's dtype (float32) and so returns inf
        # once a logit sum passes 88.7 (an untrained or very confident net reaches it; an inf ties every class
        # it reaches). Here the sums are float64 (finite up to 709): equal to the release's wherever the
        # release's are finite, and still comparable where they are not.
        return views.double().sum(0, keepdim=True).exp()
    views = views.to(torch.promote_types(views.dtype, torch.float32))  # never accumulate in half precision
    if accumulate == "logits":
        return views.mean(0, keepdim=True)
    return views


def _check_accumulate(accumulate: str) -> None:
    if accumulate not in ACCUMULATE:
        raise ValueError(f"accumulate must be one of {ACCUMULATE}, found {accumulate!r} (config key eval.accumulate)")


def crop_hw(crop_size: int | Sequence[int]) -> tuple[int, int]:
    """A window's (height, width): a square's side, or [height, width] (the demo's tall images)."""
    if isinstance(crop_size, int):
        return crop_size, crop_size
    height, width = crop_size
    return int(height), int(width)


def _windows(height: int, width: int, crop: tuple[int, int], stride: tuple[int, int]
             ) -> list[tuple[int, int, int, int]]:
    """(h0, h1, w0, w1) of every window over an image padded up to the crop, row by row."""
    (ch, cw), (sh, sw) = crop, stride
    ph, pw = max(height, ch), max(width, cw)
    return [(h0, min(h0 + ch, ph), w0, min(w0 + cw, pw))
            for h0 in window_starts(ph, ch, sh) for w0 in window_starts(pw, cw, sw)]


class _ScaleMaps:
    """The overlap-averaged window maps of one scaled image, filled window by window."""

    def __init__(self, image: Tensor, crop: tuple[int, int], stride: tuple[int, int], pad_value: Sequence[float]):
        self.height, self.width = image.shape[-2:]
        self.padded = _pad_to(image, *crop, pad_value)
        self.windows = _windows(self.height, self.width, crop, stride)
        self.crop_size, self.pad_value = crop, pad_value
        self.total = self.count = None
        self.remaining = len(self.windows)

    def crop(self, index: int) -> Tensor:
        h0, h1, w0, w1 = self.windows[index]
        return _pad_to(self.padded[..., h0:h1, w0:w1], *self.crop_size, self.pad_value)

    def add(self, index: int, maps: Tensor) -> None:
        h0, h1, w0, w1 = self.windows[index]
        if self.total is None:
            self.total = maps.new_zeros((*maps.shape[:3], *self.padded.shape[-2:]))
            self.count = maps.new_zeros(self.padded.shape[-2:])
        self.total[..., h0:h1, w0:w1] += maps[..., : h1 - h0, : w1 - w0]
        self.count[h0:h1, w0:w1] += 1
        self.remaining -= 1

    def result(self) -> Tensor:
        """The averaged maps at the scaled size; the accumulators are released (a scale is read once)."""
        maps = (self.total / self.count)[..., : self.height, : self.width]
        self.total = self.count = self.padded = None
        return maps


def _forward_batched(model: Callable, inputs: Tensor, max_batch: int) -> Tensor:
    return torch.cat([forward_logits(model, part) for part in inputs.split(max_batch)])


def _fill(model: Callable, scaled: Sequence[_ScaleMaps], flip: bool, accumulate: str, max_batch: int):
    """Predict every window of every scale, ``max_batch`` images per forward; yield each scale when complete.

    Windows of all scales have the crop's size, so one forward may mix scales. A window's views (the window
    and its mirror) go into the same forward; with ``max_batch`` = 1 every view is its own forward, the
    one-window path. A scale's maps are yielded, and its accumulators freed, as soon as its last window is in.
    """
    jobs = [(s, i) for s, maps in enumerate(scaled) for i in range(len(maps.windows))]
    n_views = 2 if flip else 1
    batch = scaled[0].padded.shape[0] if scaled else 1
    per_chunk = max(1, max_batch // (n_views * batch))
    done = 0
    for first in range(0, len(jobs), per_chunk):
        chunk = jobs[first: first + per_chunk]
        windows = torch.cat([scaled[s].crop(i) for s, i in chunk])
        inputs = torch.cat([windows, windows.flip(-1)]) if flip else windows
        logits = _forward_batched(model, inputs, max_batch)
        views = logits.unflatten(0, (n_views, len(chunk), batch))
        if flip:
            views = torch.stack([views[0], views[1].flip(-1)])
        for j, (s, i) in enumerate(chunk):
            scaled[s].add(i, _combine_views(views[:, j], accumulate))
        while done < len(scaled) and scaled[done].remaining == 0:
            done += 1
            yield scaled[done - 1].result()


def sliding_window_logits(model: Callable, image: Tensor, crop_size: int, stride: int, flip: bool = False,
                          pad_value: Sequence[float] = IMAGENET_BLACK, max_batch: int = 8) -> Tensor:
    """B×C×H×W → B×K×H×W, logits (averaged over flips) averaged over crop×crop windows with the given stride."""
    (maps,) = _fill(model, [_ScaleMaps(image, crop_hw(crop_size), (stride, stride), pad_value)], flip, "logits",
                    max_batch)
    return maps[0]


def scaled_size(height: int, width: int, base_size: int, scale: float) -> tuple[int, int]:
    """Image size with the long side resized to ceil(base_size · scale), aspect ratio kept."""
    long_size = int(math.ceil(base_size * scale))
    if height > width:
        return long_size, int(width * long_size / height + 0.5)
    return int(height * long_size / width + 0.5), long_size


def multi_scale_logits(model: Callable, image: Tensor, scales: Sequence[float], base_size: int,
                       crop_size: int | Sequence[int], stride_ratio: float = 2.0 / 3.0, flip: bool = True,
                       accumulate: str = "release_exp_sum", align_corners: bool = True,
                       pad_value: Sequence[float] = IMAGENET_BLACK, max_batch: int = 8) -> Tensor:
    """The paper's multi-scale (+ flip) sliding-window scores, B×K×H×W at the input's size.

    The scores are logits only for ``accumulate='logits'``; their argmax is the prediction in every mode.
    ``release_exp_sum`` scores are float64 (sums of exponentials overflow float32).
    ``max_batch`` bounds the images (windows and their mirrors, of any scale) in one forward pass; the result
    does not depend on it beyond floating-point rounding.
    """
    _check_accumulate(accumulate)
    if max_batch < 1:
        raise ValueError(f"max_batch must be at least 1, found {max_batch} (config key eval.max_batch)")
    height, width = image.shape[-2:]
    crop = crop_hw(crop_size)
    stride = tuple(max(int(side * stride_ratio), 1) for side in crop)
    scaled = [_ScaleMaps(F.interpolate(image, size=scaled_size(height, width, base_size, scale), mode="bilinear",
                                       align_corners=align_corners), crop, stride, pad_value)
              for scale in scales]
    total = None
    for maps in _fill(model, scaled, flip, accumulate, max_batch):
        maps = F.interpolate(maps.flatten(0, 1), size=(height, width), mode="bilinear",
                             align_corners=align_corners).unflatten(0, maps.shape[:2])
        score = maps.softmax(2).mean(0) if accumulate == "softmax" else maps[0]
        total = score if total is None else total + score
    return total if accumulate == "release_exp_sum" else total / len(scales)


@torch.no_grad()
def predict_logits(model: Callable, image: Tensor, scales: Sequence[float] | None = None, flip: bool = False,
                   base_size: int = 520, crop_size: int | Sequence[int] = 480, stride_ratio: float = 2.0 / 3.0,
                   accumulate: str = "release_exp_sum", align_corners: bool = True,
                   pad_value: Sequence[float] = IMAGENET_BLACK, max_batch: int = 8) -> Tensor:
    """Full-image logits when ``scales`` is None, else the multi-scale sliding-window scores (see the module)."""
    if scales is None:
        return full_image_logits(model, image, flip)
    return multi_scale_logits(model, image, scales, base_size, crop_size, stride_ratio, flip, accumulate,
                              align_corners, pad_value, max_batch)
