"""Joint image/mask building blocks on ``torchvision.transforms.v2``; ``presets.py`` composes them into recipes.

v2 dispatches on the ``tv_tensors`` type: normalisation and dtype conversion touch only the ``Image``, and fill
values are dicts per type, so padding and rotation fill the image with 0 and the mask with the ignore label (or,
for the release's VOC/COCO padding, background 0).

**Masks are resized at pixel centres.** An image is resized bilinearly on pixel centres; a mask must pick, for each
output pixel, the source pixel whose centre is nearest the same point: source index ⌊(i + ½)·in/out⌋, v2's
``NEAREST_EXACT`` and PIL's ``NEAREST`` (the release's ``mask.resize(..., Image.NEAREST)``). v2 resizes a ``Mask``
with its legacy ``NEAREST`` (⌊i·in/out⌋) whatever the image's interpolation, which moves every label edge by up to
half a source pixel against the image (16–21 % of a training crop's label-edge pixels differed from the release's).
OpenCV's ``INTER_NEAREST``, which mmsegmentation resizes its label maps with, has the same legacy rule. v2 takes one
interpolation for every type, so the resizing steps here call :func:`resize` per type. Rotation needs no such care:
v2 rotates a ``Mask`` by nearest sampling on the image's own pixel-centre grid (tests/test_data_transforms.py checks
it against PIL's rotate).

Hand-written, each where no v2 transform does the release's arithmetic or placement:

- :class:`ShortSideScale` and :class:`CoverCropResize`: release v0.5.0's sizes, the short side exactly the draw and
  the other ``int(1.0 * h * short / w)`` (``RandomShortestSize`` scales both sides by ``r = short / min(h, w)`` and
  truncates ``int(side · r)``, which leaves the short side itself one pixel below the draw on 7.6 % of the draws for a
  500×375 image);
- :class:`PadBottomRightRandomCrop`: the release (and torchvision's references/segmentation) pad on the bottom and
  right only; ``RandomCrop(pad_if_needed=True)`` pads both sides, so a small image would land anywhere in the crop;
- :class:`PILGaussianBlur`: release v0.5.0 blurs with PIL's ``GaussianBlur(radius)``, whose box-blur approximation
  v2's kernel blur does not reproduce, and whose radius may be 0.
"""

from __future__ import annotations

from typing import Any, Sequence

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
MASK_INTERPOLATION = v2.InterpolationMode.NEAREST_EXACT


def fill(ignore_index: int = IGNORE_INDEX) -> dict:
    """Fill value per tv_tensor type: image pixels 0, mask pixels ``ignore_index``."""
    return {tv_tensors.Image: 0, tv_tensors.Mask: ignore_index}


def resize(inpt: Any, size: Sequence[int]) -> Any:
    """An ``Image`` bilinearly with antialiasing (as PIL's ``BILINEAR``), a ``Mask`` nearest at pixel centres."""
    if isinstance(inpt, tv_tensors.Mask):
        return F.resize(inpt, list(size), interpolation=MASK_INTERPOLATION)
    return F.resize(inpt, list(size), interpolation=v2.InterpolationMode.BILINEAR, antialias=True)


def _size(flat_inputs: list) -> tuple[int, int]:
    sizes = {tuple(F.get_size(i)) for i in flat_inputs if isinstance(i, (tv_tensors.Image, tv_tensors.Mask))}
    if len(sizes) != 1:
        raise ValueError(f"expected an image and its mask of one size, found sizes {sorted(sizes)}")
    return sizes.pop()


def release_size(height: int, width: int, short: int) -> tuple[int, int]:
    """(height, width) with the short side set to ``short`` and the other side as release v0.5.0 computes it."""
    if height > width:  # base.py _sync_transform: `ow = short_size; oh = int(1.0 * h * ow / w)`
        return int(1.0 * height * short / width), short
    return short, int(1.0 * width * short / height)


class LongSideScaleJitter(v2.ScaleJitter):
    """``v2.ScaleJitter`` (long side ≈ base · s, s ~ U(scale_range)) with the mask resized at pixel centres."""

    def transform(self, inpt, params: dict):
        return resize(inpt, params["size"])


class ShortSideScale(v2.Transform):
    """Release v0.5.0's random scale: the short side becomes randint(int(base · s_min), int(base · s_max)), every
    integer equally likely, the other side ``int(1.0 * h * short / w)`` (``BaseDataset._sync_transform``)."""

    def __init__(self, base_size: int, scale_range: Sequence[float] = (0.5, 2.0)):
        super().__init__()
        self.low, self.high = int(base_size * scale_range[0]), int(base_size * scale_range[1])

    def make_params(self, flat_inputs) -> dict:
        height, width = _size(flat_inputs)
        return {"size": release_size(height, width, int(torch.randint(self.low, self.high + 1, ())))}

    def transform(self, inpt, params: dict):
        return resize(inpt, params["size"])


def random_scale(base_size: int, scale_range: Sequence[float] = (0.5, 2.0), side: str = "long") -> v2.Transform:
    """Resize so that one side is about ``base_size · s`` for a random s in ``scale_range``.

    ``side="long"`` (today's release, v1.0+): :class:`LongSideScaleJitter` scales by ``min(base/h, base/w) · s``,
    s ~ U, which puts the long side at ``base · s``. ``side="short"`` (release v0.5.0, which trained the model-zoo
    weights): :class:`ShortSideScale`; for a 4:3 image that is 4/3 larger.
    """
    if side == "long":
        return LongSideScaleJitter(target_size=(base_size, base_size), scale_range=tuple(scale_range))
    if side == "short":
        return ShortSideScale(base_size, scale_range)
    raise ValueError(f"scale side must be 'long' or 'short', found {side!r}")


class CoverCropResize(v2.Transform):
    """Resize (aspect kept) so that the image just covers ``crop_size``: release v0.5.0's ``_val_sync_transform``,
    whose square crop sets the short side to the crop and the other side to ``int(1.0 * w * oh / h)``. For a
    [height, width] crop the side whose crop ratio is larger is set, the other computed the same way."""

    def __init__(self, crop_size: int | Sequence[int]):
        super().__init__()
        self.crop = (crop_size, crop_size) if isinstance(crop_size, int) else tuple(crop_size)

    def make_params(self, flat_inputs) -> dict:
        height, width = _size(flat_inputs)
        crop_h, crop_w = self.crop
        if crop_h * width > crop_w * height:  # square crop: w > h, `oh = short_size; ow = int(1.0 * w * oh / h)`
            return {"size": (crop_h, int(1.0 * width * crop_h / height))}
        return {"size": (int(1.0 * height * crop_w / width), crop_w)}

    def transform(self, inpt, params: dict):
        return resize(inpt, params["size"])


class PadBottomRightRandomCrop(v2.Transform):
    """Pad on the bottom and right (image 0, mask ``pad_label``) up to ``crop_size`` where the image is smaller, then
    crop at a random position: release v0.5.0's ``ImageOps.expand(img, border=(0, 0, padw, padh))`` followed by
    ``x1 = random.randint(0, w - crop_size)``, ``y1 = random.randint(0, h - crop_size)``.

    Both offsets are drawn on every call, left first as the release draws them, so the number of draws does not
    depend on the image's size.
    """

    def __init__(self, crop_size: int | Sequence[int], pad_label: int = IGNORE_INDEX):
        super().__init__()
        self.crop = (crop_size, crop_size) if isinstance(crop_size, int) else tuple(crop_size)
        self.pad_label = pad_label

    def make_params(self, flat_inputs) -> dict:
        height, width = _size(flat_inputs)
        crop_h, crop_w = self.crop
        pad_h, pad_w = max(crop_h - height, 0), max(crop_w - width, 0)
        left = int(torch.randint(0, width + pad_w - crop_w + 1, ()))
        top = int(torch.randint(0, height + pad_h - crop_h + 1, ()))
        return {"padding": [0, 0, pad_w, pad_h], "top": top, "left": left}

    def transform(self, inpt, params: dict):
        if any(params["padding"]):
            value = self.pad_label if isinstance(inpt, tv_tensors.Mask) else 0
            inpt = F.pad(inpt, params["padding"], fill=value, padding_mode="constant")
        return F.crop(inpt, params["top"], params["left"], *self.crop)


def pad_and_random_crop(crop_size: int | Sequence[int], ignore_index: int = IGNORE_INDEX,
                        pad_label: int | None = None) -> v2.Transform:
    """Pad on the bottom and right (image with 0, mask with ``pad_label``, default ``ignore_index``) up to
    ``crop_size`` where needed, then crop at random (:class:`PadBottomRightRandomCrop`).

    With the ignore label the padding stays out of the loss; the release's VOC and COCO datasets pad with 0 and so
    train it as background (``pad_label=0``).
    """
    return PadBottomRightRandomCrop(crop_size, ignore_index if pad_label is None else pad_label)


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


def to_float_and_normalize(mean: Sequence[float], std: Sequence[float]) -> v2.Transform:
    """uint8 image → float in [0, 1] → (x − mean) / std; the mask stays int64."""
    return v2.Compose(
        [
            v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
            v2.Normalize(mean=list(mean), std=list(std)),
        ]
    )
