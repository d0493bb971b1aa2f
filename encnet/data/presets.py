"""Augmentation recipes as named presets (PAPER.md §5 for segmentation, §7 for CIFAR).

Segmentation presets take and return ``(tv_tensors.Image uint8, tv_tensors.Mask int64)`` and give back a
float32 normalised image and the int64 mask. Classification presets take and return the image only.
"""

from __future__ import annotations

from typing import Sequence

from torchvision.transforms import v2

from encnet.data.base import IGNORE_INDEX
from encnet.data.transforms import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    CoverCropResize,
    PILGaussianBlur,
    pad_and_random_crop,
    random_rotation,
    random_scale,
    to_float_and_normalize,
)


class SegmentationTrainPreset:
    """Mirror, random scale of the base size, optional rotation, pad (bottom/right) + random crop, optional blur,
    normalise.

    The order is release v0.5.0's (``BaseDataset._sync_transform``): the mirror comes first, so a mirrored image,
    too, is padded on its right. The paper mentions a random rotation of ±10°; the released code does not rotate,
    hence ``rotate_degrees=0`` by default (configs set ``rotate_degrees: 10`` to follow the paper). Release v0.5.0's
    recipe: ``scale_side="short"``, ``blur_prob=0.5`` and, for VOC/COCO, ``pad_label=0`` (background).
    """

    def __init__(
        self,
        base_size: int,
        crop_size: int | Sequence[int],  # or (height, width)
        scale_range: Sequence[float] = (0.5, 2.0),
        rotate_degrees: float = 0,
        hflip: bool = True,
        ignore_index: int = IGNORE_INDEX,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        scale_side: str = "long",
        blur_prob: float = 0.0,
        pad_label: int | None = None,
    ):
        steps = [v2.RandomHorizontalFlip(0.5)] if hflip else []
        steps.append(random_scale(base_size, scale_range, scale_side))
        if rotate_degrees:
            steps.append(random_rotation(rotate_degrees, ignore_index))
        steps.append(pad_and_random_crop(crop_size, ignore_index, pad_label))
        if blur_prob:  # v0.5.0 blurs the uint8 crop, after padding and cropping
            steps.append(PILGaussianBlur(blur_prob))
        steps.append(to_float_and_normalize(mean, std))
        self.transforms = v2.Compose(steps)

    def __call__(self, image, mask):
        return self.transforms(image, mask)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.transforms})"


class SegmentationEvalPreset:
    """Normalisation only: the full image at its own size (multi-scale and sliding windows are the evaluator's)."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        self.transforms = to_float_and_normalize(mean, std)

    def __call__(self, image, mask):
        return self.transforms(image, mask)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.transforms})"


class SegmentationCentreCropPreset:
    """Release v0.5.0's validation view during training (``BaseDataset._val_sync_transform``): resize so that the
    image just covers the crop (the short side to the crop size for a square crop), keep the central crop,
    normalise. The label is resized with the image (nearest, at pixel centres)."""

    def __init__(self, crop_size: int | Sequence[int], mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD):
        crop = [crop_size, crop_size] if isinstance(crop_size, int) else list(crop_size)
        # v2.CenterCrop places the crop at int(round((size - crop) / 2)), as the release does.
        self.transforms = v2.Compose([CoverCropResize(crop_size), v2.CenterCrop(crop),
                                      to_float_and_normalize(mean, std)])

    def __call__(self, image, mask):
        return self.transforms(image, mask)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.transforms})"


class ClassificationTrainPreset:
    """The standard CIFAR recipe: zero-pad by ``padding`` and random-crop back, horizontal flip, normalise."""

    def __init__(
        self,
        crop_size: int = 32,
        padding: int = 4,
        hflip: bool = True,
        mean: Sequence[float] = CIFAR10_MEAN,
        std: Sequence[float] = CIFAR10_STD,
    ):
        steps = [v2.RandomCrop(crop_size, padding=padding, fill=0)]
        if hflip:
            steps.append(v2.RandomHorizontalFlip(0.5))
        steps.append(to_float_and_normalize(mean, std))
        self.transforms = v2.Compose(steps)

    def __call__(self, image):
        return self.transforms(image)


class ClassificationEvalPreset:
    def __init__(self, mean: Sequence[float] = CIFAR10_MEAN, std: Sequence[float] = CIFAR10_STD):
        self.transforms = to_float_and_normalize(mean, std)

    def __call__(self, image):
        return self.transforms(image)
