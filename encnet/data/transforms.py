"""Joint image/mask building blocks on ``torchvision.transforms.v2``; ``presets.py`` composes them into recipes.

Every block is a v2 built-in: v2 dispatches on the ``tv_tensors`` type, so a ``Mask`` is always resized and
rotated with nearest-neighbour interpolation (whatever ``interpolation`` says for the image) and normalisation
and dtype conversion touch only the ``Image``. Fill values are dicts per type so padding and rotation fill the
image with 0 and the mask with the ignore label. No hand-written transform was needed.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from encnet.data.base import IGNORE_INDEX

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The released CIFAR code normalised with these (its std is the commonly copied per-pixel value, not the
# per-channel std 0.247/0.243/0.261); kept so CIFAR numbers compare with the release.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)


def fill(ignore_index: int = IGNORE_INDEX) -> dict:
    """Fill value per tv_tensor type: image pixels 0, mask pixels ``ignore_index``."""
    return {tv_tensors.Image: 0, tv_tensors.Mask: ignore_index}


def random_scale(base_size: int, scale_range: Sequence[float] = (0.5, 2.0)) -> v2.Transform:
    """Resize so the *long* side is ``base_size · s``, s ~ U(scale_range), as the released code does.

    ``ScaleJitter`` scales by ``min(base/h, base/w) · s``, which puts the long side at ``base · s``. The
    torchvision references scale the short side instead; the released EncNet code scales the long side.
    """
    return v2.ScaleJitter(target_size=(base_size, base_size), scale_range=tuple(scale_range), antialias=True)


def random_rotation(degrees: float, ignore_index: int = IGNORE_INDEX) -> v2.Transform:
    """Rotate by U(−degrees, degrees); corners that come from outside become 0 / ``ignore_index``."""
    return v2.RandomRotation(degrees, interpolation=v2.InterpolationMode.BILINEAR, fill=fill(ignore_index))


def pad_and_random_crop(crop_size: int, ignore_index: int = IGNORE_INDEX) -> v2.Transform:
    """Pad (image with 0, mask with ``ignore_index``) up to ``crop_size`` where needed, then crop at random.

    The released code pads only bottom/right; v2 pads both sides by the shortfall, so a small image can land
    anywhere in the crop. The ignore label keeps the padding out of the loss either way.
    """
    return v2.RandomCrop(crop_size, pad_if_needed=True, fill=fill(ignore_index), padding_mode="constant")


def to_float_and_normalize(mean: Sequence[float], std: Sequence[float]) -> v2.Transform:
    """uint8 image → float in [0, 1] → (x − mean) / std; the mask stays int64."""
    return v2.Compose(
        [
            v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
            v2.Normalize(mean=list(mean), std=list(std)),
        ]
    )
