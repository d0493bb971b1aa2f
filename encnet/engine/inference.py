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
  so the argmax can differ from ``logits`` with two or more scales or overlapping windows. The scores returned
  are the *logarithm* of the release's (see below).
- ``logits``: logits averaged over flips, windows and scales.
- ``softmax`` (mmsegmentation's test-time augmentation): logits averaged over windows, resized, softmax; the
  probabilities are averaged over scales and flips. mmsegmentation flips the whole scaled image; here each
  window is flipped, which is the same wherever one window spans the width.
Resizing (the image to each scale, the scores back) is bilinear with ``align_corners`` (the release: True).

The release exponentiates in float32, which returns inf once a logit sum passes 88.7 (an untrained or very
confident net reaches it; an inf ties every class it reaches). Here no sum is exponentiated without a reference
subtracted first, logsumexp-style, and nothing is float64: where windows overlap, each pixel keeps the running
maximum of its logit sums and its exponentials relative to it; a scale is resized relative to its own largest
sum, which is exact to float32 rounding while every pixel's best class lies within ``SAFE_RANGE`` nats of it
(the pixels' smallest terms stay far above float32's underflow), and otherwise each bilinear tap is taken
relative to the larger of its two sources (exact at any range, about three times the work); scales are summed
under a running maximum. The result is log Σ exp(...) of the release: its scores' logarithm, with the same argmax,
finite where the release's overflow; a class some 87 nats or more below its pixel's best may come back as −inf
(its exponential underflows, as the release's does below a logit sum of −103), which no argmax can notice.

Every window has the crop's size, so windows of all scales and their mirrors can share a forward pass,
``max_batch`` images per forward (the release runs one window, then its mirror). Whether that pays depends on
the device: on a CPU a batched forward of a dilated ResNet costs more than its windows one by one, so the
default (``DEFAULT_MAX_BATCH``, chosen by ``bench/ms_eval.py``) is one image per forward there. With the model in
eval mode the scores do not depend on ``max_batch`` beyond floating-point rounding.
The full-image path (``scales=None``, single-scale monitoring) is one forward pass, logits averaged over flips.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from encnet.data.transforms import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["ACCUMULATE", "DEFAULT_MAX_BATCH", "IMAGENET_BLACK", "SAFE_RANGE", "black_pixel", "default_max_batch",
           "forward_logits", "full_image_logits", "multi_scale_logits", "predict_logits", "scaled_size",
           "sliding_window_logits", "window_starts"]

ACCUMULATE = ("release_exp_sum", "logits", "softmax")
# Images per forward pass by device type, measured by bench/ms_eval.py (bench/results/ms_eval-<device>.json):
# on a CPU a dilated ResNet-50 forward of a batch costs more than its images one by one; the CUDA value is the
# issue-16 design (one 480² window leaves a GPU mostly idle), to be confirmed by bench/gpu_suite.sh's ms_eval part.
DEFAULT_MAX_BATCH = {"cpu": 1, "cuda": 8}
# nats: a scale whose pixels' largest logit sums all lie within this of its maximum is resized relative to that
# maximum in float32; each pixel's best class is then at least e^-60 / num_classes of it, some 10^10 times above
# the float32 underflow at which the smallest terms are lost (terms below it cannot change an argmax)
SAFE_RANGE = 60.0


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


def _float(tensor: Tensor) -> Tensor:
    """At least float32: never accumulate in half precision (autocast gives bf16/fp16 logits)."""
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))


def _combine_views(views: Sequence[Tensor], accumulate: str) -> Tensor:
    """A window's views (its logits, and its mirror's when flipping) → what is summed over windows: the logit
    sum l + flip(l_flipped) (``release_exp_sum``, in log space), the mean logits, or both views (``softmax``)."""
    first = _float(views[0])
    if len(views) == 1:
        return first[None] if accumulate == "softmax" else first
    back = _float(views[1]).flip(-1)
    if accumulate == "softmax":
        return torch.stack([first, back])
    both = first.add_(back)  # in place: the forward's output is read once, here
    return both if accumulate == "release_exp_sum" else both.mul_(0.5)


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
    """The overlap-averaged window maps of one scaled image, filled window by window.

    ``release_exp_sum`` keeps, per pixel, the running maximum ``peak`` of the logit sums of the windows covering
    it and Σ exp(sum − peak) over them (rescaled whenever a later window raises the peak): exp(peak) · total is
    the release's Σ exp(sum), with nothing exponentiated above 0.
    """

    def __init__(self, image: Tensor, crop: tuple[int, int], stride: tuple[int, int], pad_value: Sequence[float],
                 accumulate: str = "logits"):
        self.height, self.width = image.shape[-2:]
        self.padded = _pad_to(image, *crop, pad_value)
        self.windows = _windows(self.height, self.width, crop, stride)
        self.crop_size, self.pad_value, self.accumulate = crop, pad_value, accumulate
        self.total = self.peak = None
        self.remaining = len(self.windows)

    def crop(self, index: int) -> Tensor:
        h0, h1, w0, w1 = self.windows[index]
        return _pad_to(self.padded[..., h0:h1, w0:w1], *self.crop_size, self.pad_value)

    def add(self, index: int, maps: Tensor) -> None:
        h0, h1, w0, w1 = self.windows[index]
        maps = maps[..., : h1 - h0, : w1 - w0]
        if self.accumulate == "release_exp_sum":
            self._add_exponentials(maps, (..., slice(h0, h1), slice(w0, w1)))
        else:
            if self.total is None:
                self.total = maps.new_zeros((*maps.shape[:-2], *self.padded.shape[-2:]))
            self.total[..., h0:h1, w0:w1] += maps
        self.remaining -= 1

    def _add_exponentials(self, sums: Tensor, region: tuple) -> None:
        # ``sums`` is this window's own tensor (_combine_views): exponentiated in place
        peak = sums.amax(1, keepdim=True)
        if self.total is None:
            if sums.shape[-2:] == self.padded.shape[-2:]:  # one window covers the scale: nothing to rescale
                self.total, self.peak = sums.sub_(peak).exp_(), peak
                return
            self.total = sums.new_zeros((*sums.shape[:2], *self.padded.shape[-2:]))
            self.peak = sums.new_full((sums.shape[0], 1, *self.padded.shape[-2:]), -math.inf)
        total, old = self.total[region], self.peak[region]
        new = torch.maximum(old, peak)
        total.mul_((old - new).exp_())  # exp(−inf) = 0 where no window has been yet
        total.add_(sums.sub_(new).exp_())
        self.peak[region] = new

    def _count(self) -> Tensor:
        count = self.padded.new_zeros(self.padded.shape[-2:])
        for h0, h1, w0, w1 in self.windows:
            count[h0:h1, w0:w1] += 1
        return count

    def result(self) -> Tensor | tuple[Tensor, Tensor]:
        """The averaged maps at the scaled size (``release_exp_sum``: ``(peak, total)``, the average being
        exp(peak) · total); the accumulators are released (a scale is read once)."""
        count = self._count()
        if self.accumulate == "release_exp_sum":
            # the overlap average's 1/count goes into the peak: a one-channel map instead of every class's
            maps = ((self.peak - count.log())[..., : self.height, : self.width],
                    self.total[..., : self.height, : self.width])
        else:
            maps = (self.total / count)[..., : self.height, : self.width]
        self.total = self.peak = self.padded = None
        return maps


def _linear_taps(length: int, size: int, align_corners: bool, like: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """F.interpolate's bilinear taps along one axis, ``length`` → ``size``: source indices (lower, upper) and the
    upper one's weight (``area_pixel_compute_source_index`` in ATen's UpSample.h)."""
    target = torch.arange(size, dtype=torch.float64)
    if align_corners:
        source = target * ((length - 1) / (size - 1) if size > 1 else 0.0)
    else:
        source = ((target + 0.5) * (length / size) - 0.5).clamp_min(0.0)
    lower = source.floor().long().clamp_max(length - 1)
    upper = (lower + 1).clamp_max(length - 1)
    weight = (source - lower).to(device=like.device, dtype=like.dtype)
    return lower.to(like.device), upper.to(like.device), weight


def _resize_per_pixel(peak: Tensor, total: Tensor, size: tuple[int, int], align_corners: bool
                      ) -> tuple[Tensor, Tensor]:
    """exp(peak) · total resized bilinearly, as a new (peak, total) whose peak is each output pixel's larger tap
    source, one axis at a time: exact at any range of peak (the fallback beyond ``SAFE_RANGE``)."""
    for dim, length in ((-2, size[0]), (-1, size[1])):
        lower, upper, weight = _linear_taps(peak.shape[dim], length, align_corners, total)
        if dim == -2:
            weight = weight[:, None]
        low, high = peak.index_select(dim, lower), peak.index_select(dim, upper)
        new = torch.maximum(low, high)
        # gathering columns with index_select on the last axis is slow on a CPU; advanced indexing is not
        take = (lambda t, i: t.index_select(-2, i)) if dim == -2 else (lambda t, i: t[..., i])
        total = (take(total, lower).mul_((1 - weight) * (low - new).exp_())
                 .add_(take(total, upper).mul_(weight * (high - new).exp_())))
        peak = new
    return peak, total


class _ExpSum:
    """Σ over scales of the resized exp(peak) · total, carried as exp(ref) · total with ``ref`` one value per image
    (or per pixel once a scale needed the per-pixel resize): the release's sum, never exponentiated above 0."""

    def __init__(self, size: tuple[int, int], align_corners: bool):
        self.size, self.align_corners = size, align_corners
        self.total = self.ref = None

    def add(self, peak: Tensor, total: Tensor) -> None:
        top = peak.amax(dim=(1, 2, 3), keepdim=True)
        if bool(((top - peak.amin(dim=(1, 2, 3), keepdim=True)) <= SAFE_RANGE).all()):
            ref = top
            maps = F.interpolate(total.mul_((peak - top).exp_()), size=self.size, mode="bilinear",
                                 align_corners=self.align_corners)
        else:
            ref, maps = _resize_per_pixel(peak, total, self.size, self.align_corners)
        if self.total is None:
            self.total, self.ref = maps, ref
            return
        new = torch.maximum(self.ref, ref)
        if bool((self.ref != new).any()):
            self.total.mul_((self.ref - new).exp_())
        if bool((ref != new).any()):
            maps.mul_((ref - new).exp_())
        self.total.add_(maps)
        self.ref = new

    def log_scores(self) -> Tensor:
        return self.total.log_().add_(self.ref)


def _own_logits(model: Callable, images: Tensor) -> Tensor:
    """The forward's logits as a tensor of their own, which the combination may overwrite: copied only where a
    model returned a view of its input or an expanded tensor."""
    logits = forward_logits(model, images)
    shared = logits.untyped_storage().data_ptr() == images.untyped_storage().data_ptr()
    expanded = any(stride == 0 and size > 1 for stride, size in zip(logits.stride(), logits.shape))
    return logits.clone() if shared or expanded else logits


def _forward_views(model: Callable, views: Sequence[Tensor], max_batch: int) -> list[Tensor]:
    """The logits of each view (a batch of windows, or of their mirrors), at most ``max_batch`` images per
    forward; one forward (split back into views, no copy) when they all fit."""
    sizes = [len(v) for v in views]
    if sum(sizes) <= max_batch:
        return list(_own_logits(model, torch.cat(views) if len(views) > 1 else views[0]).split(sizes))
    return [_own_logits(model, v) if len(v) <= max_batch else
            torch.cat([_own_logits(model, part) for part in v.split(max_batch)]) for v in views]


def _fill(model: Callable, scaled: Sequence[_ScaleMaps], flip: bool, accumulate: str, max_batch: int):
    """Predict every window of every scale, ``max_batch`` images per forward; yield each scale when complete.

    Windows of all scales have the crop's size, so one forward may mix scales. A window's views (the window
    and its mirror) go into the same forward when they fit; with ``max_batch`` = 1 every view is its own
    forward, the one-window path. A scale's maps are yielded, and its accumulators freed, as soon as its last
    window is in.
    """
    jobs = [(s, i) for s, maps in enumerate(scaled) for i in range(len(maps.windows))]
    n_views = 2 if flip else 1
    batch = scaled[0].padded.shape[0] if scaled else 1
    per_chunk = max(1, max_batch // (n_views * batch))
    done = 0
    for first in range(0, len(jobs), per_chunk):
        chunk = jobs[first: first + per_chunk]
        crops = [scaled[s].crop(i) for s, i in chunk]
        windows = crops[0] if len(crops) == 1 else torch.cat(crops)
        logits = _forward_views(model, [windows, windows.flip(-1)] if flip else [windows], max_batch)
        for j, (s, i) in enumerate(chunk):
            part = slice(j * batch, (j + 1) * batch)
            scaled[s].add(i, _combine_views([view[part] for view in logits], accumulate))
        while done < len(scaled) and scaled[done].remaining == 0:
            done += 1
            yield scaled[done - 1].result()


def default_max_batch(device: torch.device | str) -> int:
    """``DEFAULT_MAX_BATCH`` for the device's type (8 for a type not measured)."""
    return DEFAULT_MAX_BATCH.get(torch.device(device).type, 8)


def sliding_window_logits(model: Callable, image: Tensor, crop_size: int, stride: int, flip: bool = False,
                          pad_value: Sequence[float] = IMAGENET_BLACK, max_batch: int | None = None) -> Tensor:
    """B×C×H×W → B×K×H×W, logits (averaged over flips) averaged over crop×crop windows with the given stride."""
    (maps,) = _fill(model, [_ScaleMaps(image, crop_hw(crop_size), (stride, stride), pad_value)], flip, "logits",
                    max_batch or default_max_batch(image.device))
    return maps


def scaled_size(height: int, width: int, base_size: int, scale: float) -> tuple[int, int]:
    """Image size with the long side resized to ceil(base_size · scale), aspect ratio kept."""
    long_size = int(math.ceil(base_size * scale))
    if height > width:
        return long_size, int(width * long_size / height + 0.5)
    return int(height * long_size / width + 0.5), long_size


def multi_scale_logits(model: Callable, image: Tensor, scales: Sequence[float], base_size: int,
                       crop_size: int | Sequence[int], stride_ratio: float = 2.0 / 3.0, flip: bool = True,
                       accumulate: str = "release_exp_sum", align_corners: bool = True,
                       pad_value: Sequence[float] = IMAGENET_BLACK, max_batch: int | None = None) -> Tensor:
    """The paper's multi-scale (+ flip) sliding-window scores, B×K×H×W at the input's size.

    The scores are logits only for ``accumulate='logits'``; their argmax is the prediction in every mode.
    ``release_exp_sum`` scores are the logarithm of the release's (whose float32 sums of exponentials overflow),
    in the logits' dtype (at least float32).
    ``max_batch`` bounds the images (windows and their mirrors, of any scale) in one forward pass (None: the
    device's ``DEFAULT_MAX_BATCH``); the result does not depend on it beyond floating-point rounding.
    """
    _check_accumulate(accumulate)
    max_batch = default_max_batch(image.device) if max_batch is None else max_batch
    if max_batch < 1:
        raise ValueError(f"max_batch must be at least 1, found {max_batch} (config key eval.max_batch)")
    height, width = image.shape[-2:]
    crop = crop_hw(crop_size)
    stride = tuple(max(int(side * stride_ratio), 1) for side in crop)
    scaled = [_ScaleMaps(F.interpolate(image, size=scaled_size(height, width, base_size, scale), mode="bilinear",
                                       align_corners=align_corners), crop, stride, pad_value, accumulate)
              for scale in scales]
    scale_maps = _fill(model, scaled, flip, accumulate, max_batch)
    if accumulate == "release_exp_sum":
        exp_sum = _ExpSum((height, width), align_corners)
        for peak, total in scale_maps:
            exp_sum.add(peak, total)
        return exp_sum.log_scores()
    total = None
    for maps in scale_maps:
        maps = F.interpolate(maps.flatten(0, maps.dim() - 4), size=(height, width), mode="bilinear",
                             align_corners=align_corners)
        score = maps.unflatten(0, (-1, image.shape[0])).softmax(2).mean(0) if accumulate == "softmax" else maps
        total = score if total is None else total + score
    return total / len(scales)


@torch.no_grad()
def predict_logits(model: Callable, image: Tensor, scales: Sequence[float] | None = None, flip: bool = False,
                   base_size: int = 520, crop_size: int | Sequence[int] = 480, stride_ratio: float = 2.0 / 3.0,
                   accumulate: str = "release_exp_sum", align_corners: bool = True,
                   pad_value: Sequence[float] = IMAGENET_BLACK, max_batch: int | None = None) -> Tensor:
    """Full-image logits when ``scales`` is None, else the multi-scale sliding-window scores (see the module)."""
    if scales is None:
        return full_image_logits(model, image, flip)
    return multi_scale_logits(model, image, scales, base_size, crop_size, stride_ratio, flip, accumulate,
                              align_corners, pad_value, max_batch)
