"""Joint image/mask building blocks on ``torchvision.transforms.v2``; ``presets.py`` composes them into recipes.

Every block but one is a v2 built-in: v2 dispatches on the ``tv_tensors`` type, so a ``Mask`` is always resized
and rotated with nearest-neighbour interpolation (whatever ``interpolation`` says for the image) and normalisation
and dtype conversion touch only the ``Image``. Fill values are dicts per type so padding and rotation fill the
image with 0 and the mask with the ignore label (or, for the release's VOC/COCO padding, background 0). The one
hand-written transform is :class:`PILGaussianBlur`: release v0.5.0 blurs with PIL's ``GaussianBlur(radius)``,
whose box-blur approximation v2's kernel blur does not reproduce, and whose radius may be 0.
"""

from __future__ import annotations

from typing import Sequence

import torch
from PIL import ImageFilter
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

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


def random_scale(base_size: int, scale_range: Sequence[float] = (0.5, 2.0), side: str = "long") -> v2.Transform:
    """Resize so that one side is about ``base_size · s`` for a random s in ``scale_range``.

    ``side="long"`` (today's release, v1.0+): ``ScaleJitter`` scales by ``min(base/h, base/w) · s``, s ~ U, which
    puts the long side at ``base · s``. ``side="short"`` (release v0.5.0, which trained the model-zoo weights):
    the short side becomes randint(int(base · s_min), int(base · s_max)), every integer equally likely, as
    ``random.randint`` in v0.5.0's ``BaseDataset._sync_transform``; for a 4:3 image that is 4/3 larger.
    """
    if side == "long":
        return v2.ScaleJitter(target_size=(base_size, base_size), scale_range=tuple(scale_range), antialias=True)
    if side == "short":
        low, high = int(base_size * scale_range[0]), int(base_size * scale_range[1])
        return v2.RandomShortestSize(min_size=list(range(low, high + 1)), antialias=True)
    raise ValueError(f"scale side must be 'long' or 'short', found {side!r}")


class PILGaussianBlur(v2.Transform):
    """With probability ``p``, blur the image (never the mask) with PIL's ``GaussianBlur(radius)``, radius ~
    U(0, ``max_radius``): release v0.4.2–v0.5.x ("gaussian blur as in PSP"), removed in v1.0.

    The draws come from torch's generator, so a seeded run blurs the same images by the same radii.
    """

    def __init__(self, p: float = 0.5, max_radius: float = 1.0):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"blur probability must be in [0, 1], found {p}")
        self.p, self.max_radius = p, max_radius

    def make_params(self, flat_inputs) -> dict:
        if torch.rand(()) >= self.p:
            return {"radius": None}
        return {"radius": float(torch.rand(())) * self.max_radius}

    def transform(self, inpt, params: dict):
        if params["radius"] is None or not isinstance(inpt, tv_tensors.Image):
            return inpt
        if inpt.dtype != torch.uint8:
            raise TypeError(f"PILGaussianBlur expects a uint8 image (blur before normalising), found {inpt.dtype}")
        blurred = F.to_pil_image(inpt.as_subclass(torch.Tensor)).filter(ImageFilter.GaussianBlur(params["radius"]))
        return tv_tensors.wrap(F.pil_to_tensor(blurred), like=inpt)


def random_rotation(degrees: float, ignore_index: int = IGNORE_INDEX) -> v2.Transform:
    """Rotate by U(−degrees, degrees); corners that come from outside become 0 / ``ignore_index``."""
    return v2.RandomRotation(degrees, interpolation=v2.InterpolationMode.BILINEAR, fill=fill(ignore_index))


def pad_and_random_crop(crop_size: int | Sequence[int], ignore_index: int = IGNORE_INDEX,
                        pad_label: int | None = None) -> v2.Transform:
    """Pad (image with 0, mask with ``pad_label``, default ``ignore_index``) up to ``crop_size`` where needed,
    then crop at random.

    The released code pads only bottom/right; v2 pads both sides by the shortfall, so a small image can land
    anywhere in the crop. With the ignore label the padding stays out of the loss either way; the release's
    VOC and COCO datasets pad with 0 and so train it as background (``pad_label=0``).
    """
    label = ignore_index if pad_label is None else pad_label
    size = crop_size if isinstance(crop_size, int) else tuple(crop_size)  # (height, width)
    return v2.RandomCrop(size, pad_if_needed=True, fill=fill(label), padding_mode="constant")


def to_float_and_normalize(mean: Sequence[float], std: Sequence[float]) -> v2.Transform:
    """uint8 image → float in [0, 1] → (x − mean) / std; the mask stays int64."""
    return v2.Compose(
        [
            v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
            v2.Normalize(mean=list(mean), std=list(std)),
        ]
    )
