"""Joint transforms: the image is drawn FROM the mask (one colour per label), so after any augmentation the
image must still spell out the transformed mask away from interpolation edges."""

import numpy as np
import pytest
import torch
from scipy import ndimage
from torchvision import tv_tensors

from encnet.data.presets import (
    ClassificationEvalPreset,
    ClassificationTrainPreset,
    SegmentationEvalPreset,
    SegmentationTrainPreset,
)

torch.set_num_threads(1)
PALETTE = np.array(
    [[0.9, 0.1, 0.1], [0.1, 0.9, 0.1], [0.1, 0.1, 0.9], [0.9, 0.9, 0.1], [0.9, 0.1, 0.9], [0.1, 0.9, 0.9],
     [0.5, 0.5, 0.5], [0.95, 0.95, 0.95]]
)  # fmt: skip
IDENTITY = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))  # keeps pixel values readable after normalisation


def coded_pair(height=48, width=72, seed=0):
    """Blocky random labels (incl. 1-px-wide stripes at the top) and the image that paints them."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, len(PALETTE), size=(height // 24 + 1, width // 24 + 1))
    mask = np.kron(blocks, np.ones((24, 24), dtype=np.int64))[:height, :width]
    mask[:4] = np.arange(width) % 3  # thin structures are where a wrong interpolation would show first
    image = (PALETTE[mask] * 255).round().astype(np.uint8).transpose(2, 0, 1)
    return tv_tensors.Image(torch.from_numpy(image)), tv_tensors.Mask(torch.from_numpy(mask))


def decode(image: torch.Tensor) -> np.ndarray:
    """Nearest palette label of each pixel of a float image in [0, 1]."""
    pixels = image.permute(1, 2, 0).numpy().astype(np.float64)
    return np.linalg.norm(pixels[:, :, None, :] - PALETTE[None, None], axis=-1).argmin(-1)


def interior(mask: np.ndarray) -> np.ndarray:
    """Pixels whose 5×5 neighbourhood carries a single label (away from label, fill and crop edges: beyond the
    crop there may be rotation fill, which the image blends in bilinearly)."""
    low = ndimage.minimum_filter(mask, size=5, mode="constant", cval=255)
    high = ndimage.maximum_filter(mask, size=5, mode="constant", cval=255)
    return (low == high) & (mask != 255)


@pytest.mark.parametrize("rotate", [0, 10, 30])
def test_train_preset_keeps_image_and_mask_aligned(rotate):
    torch.manual_seed(0)
    preset = SegmentationTrainPreset(base_size=64, crop_size=56, scale_range=(0.5, 2.0), rotate_degrees=rotate,
                                     **IDENTITY)  # fmt: skip
    padded = 0
    for seed in range(12):
        image, mask = coded_pair(seed=seed)
        out_image, out_mask = preset(image, mask)
        assert isinstance(out_mask, tv_tensors.Mask) and out_mask.dtype == torch.int64
        assert out_image.dtype == torch.float32 and out_image.shape == (3, 56, 56) and out_mask.shape == (56, 56)
        m = out_mask.numpy()
        # no new label values: only the input's, plus the ignore label from padding/rotation
        assert set(np.unique(m)) <= set(np.unique(mask.numpy())) | {255}
        inside = interior(m)
        assert inside.sum() > 100
        agreement = (decode(out_image)[inside] == m[inside]).mean()
        assert agreement == 1.0, f"seed {seed}: image and mask disagree on {1 - agreement:.1%} of interior pixels"
        # ignore only on the mask: where the mask was filled, the image was filled with 0
        filled = m == 255
        assert np.all(out_image.numpy()[:, ndimage.binary_erosion(filled, iterations=2)] == 0)
        padded += int(filled.any())
    assert padded > 0  # scale 0.5 of base 64 gives 32-px sides, so some crops must have been padded


def test_random_scale_sets_the_long_side_and_flip_mirrors_both():
    image, mask = coded_pair(height=30, width=20)
    preset = SegmentationTrainPreset(base_size=40, crop_size=64, scale_range=(0.5, 0.5), hflip=False, **IDENTITY)
    _, out_mask = preset(image, mask)
    labelled = (out_mask != 255).numpy()
    # long side 30 → 0.5·40 = 20, short side 20 → int(20·20/30) = 13
    assert labelled.sum() == 20 * 13
    rows, cols = np.nonzero(labelled)
    assert rows.max() - rows.min() + 1 == 20 and cols.max() - cols.min() + 1 == 13

    torch.manual_seed(1)
    image, mask = coded_pair(height=32, width=32)
    flipper = SegmentationTrainPreset(base_size=32, crop_size=32, scale_range=(1.0, 1.0), **IDENTITY)
    seen_flip = False
    for _ in range(10):
        out_image, out_mask = flipper(image, mask)
        assert np.all(decode(out_image)[interior(out_mask.numpy())] == out_mask.numpy()[interior(out_mask.numpy())])
        seen_flip |= torch.equal(out_mask, mask.flip(-1))
    assert seen_flip


def test_masks_are_resized_with_nearest_neighbour_only():
    torch.manual_seed(0)
    mask = tv_tensors.Mask(torch.tensor([[0, 10], [20, 30]]).repeat_interleave(7, 0).repeat_interleave(7, 1))
    image = tv_tensors.Image(torch.zeros(3, 14, 14, dtype=torch.uint8))
    preset = SegmentationTrainPreset(base_size=14, crop_size=8, scale_range=(0.37, 1.9), rotate_degrees=17)
    for _ in range(20):
        _, out = preset(image, mask)
        assert set(out.unique().tolist()) <= {0, 10, 20, 30, 255}


def test_eval_preset_keeps_full_image_and_normalises():
    image, mask = coded_pair(height=37, width=53)
    out_image, out_mask = SegmentationEvalPreset()(image, mask)
    assert out_image.shape == (3, 37, 53) and torch.equal(out_mask, mask)
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    expected = (image.double() / 255 - mean.double()[:, None, None]) / std.double()[:, None, None]
    torch.testing.assert_close(out_image.double(), expected, atol=1e-5, rtol=0)


def test_classification_presets():
    torch.manual_seed(0)
    image = tv_tensors.Image(torch.full((3, 32, 32), 255, dtype=torch.uint8))
    train = ClassificationTrainPreset(**IDENTITY)
    zero_border_seen = False
    for _ in range(10):
        out = train(image)
        assert out.shape == (3, 32, 32) and out.dtype == torch.float32
        assert set(out.unique().tolist()) <= {0.0, 1.0}
        zero_border_seen |= bool((out == 0).any())
    assert zero_border_seen  # zero padding of 4 then a random crop
    out = ClassificationEvalPreset()(image)
    expected = (1 - torch.tensor([0.4914, 0.4822, 0.4465])) / torch.tensor([0.2023, 0.1994, 0.2010])
    torch.testing.assert_close(out[:, 0, 0], expected)


def test_a_height_by_width_crop_keeps_a_tall_image_whole_at_scale_one():
    torch.manual_seed(0)
    preset = SegmentationTrainPreset(base_size=112, crop_size=(112, 64), scale_range=(1.0, 1.0), hflip=False,
                                     **IDENTITY)
    image, mask = coded_pair(seed=1, height=112, width=64)
    out_image, out_mask = preset(image, mask)
    assert out_image.shape == (3, 112, 64) and out_mask.shape == (112, 64)
    assert torch.equal(out_mask.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor).long())
    # scaled up, a tall crop is cut out of the larger image at random; scaled down, it is padded with ignore
    for scale, padded in ((1.25, False), (0.75, True)):
        preset = SegmentationTrainPreset(base_size=112, crop_size=(112, 64), scale_range=(scale, scale),
                                         hflip=False, **IDENTITY)
        _, out_mask = preset(image, mask)
        assert out_mask.shape == (112, 64) and bool((out_mask == 255).any()) == padded


# ---------------------------------------------------------------- masks on the image's pixel grid (issue 33)


def _tie_lines(size_in: int, size_out: int) -> np.ndarray:
    """Output lines whose centre maps exactly onto a boundary between two source pixels: (i + ½)·in/out is an
    integer, so nearest sampling may take either neighbour (PIL and torch break such ties differently)."""
    i = np.arange(size_out)
    return ((2 * i + 1) * size_in) % (2 * size_out) == 0


@pytest.mark.parametrize("side", ["long", "short"])
def test_random_scale_resizes_masks_as_pils_nearest_at_pixel_centres(side):
    from PIL import Image

    from encnet.data.transforms import random_scale

    _, mask = coded_pair(height=45, width=61, seed=3)
    image = tv_tensors.Image(torch.zeros(3, 45, 61, dtype=torch.uint8))
    pil_mask = Image.fromarray(mask.numpy().astype(np.uint8))
    torch.manual_seed(0)
    step, compared = random_scale(40, (0.5, 2.0), side), 0
    for _ in range(30):
        out_image, out_mask = step(image, mask)
        height, width = out_mask.shape
        assert out_image.shape[-2:] == (height, width)
        oracle = np.array(pil_mask.resize((width, height), Image.NEAREST))  # PIL samples pixel centres
        ties = _tie_lines(45, height)[:, None] | _tie_lines(61, width)[None, :]
        assert np.array_equal(out_mask.numpy()[~ties], oracle[~ties])
        compared += int((~ties).sum())
    assert compared > 30 * 20 * 30


def test_centre_crop_view_resizes_the_label_with_the_image_and_crops_as_the_release():
    from PIL import Image

    from encnet.data.presets import SegmentationCentreCropPreset

    for height, width, crop in ((45, 61, 24), (61, 45, 24), (30, 30, 24), (33, 50, 17)):
        image, mask = coded_pair(height=height, width=width, seed=height)
        out_image, out_mask = SegmentationCentreCropPreset(crop, **IDENTITY)(image, mask)
        assert out_image.shape == (3, crop, crop) and out_mask.shape == (crop, crop)
        # the release's _val_sync_transform, written out: short side to the crop, the other int(1.0 * w * oh / h)
        if width > height:
            oh, ow = crop, int(1.0 * width * crop / height)
        else:
            ow, oh = crop, int(1.0 * height * crop / width)
        top, left = int(round((oh - crop) / 2.0)), int(round((ow - crop) / 2.0))
        resized = np.array(Image.fromarray(mask.numpy().astype(np.uint8)).resize((ow, oh), Image.NEAREST))
        ties = _tie_lines(height, oh)[:, None] | _tie_lines(width, ow)[None, :]
        window = np.s_[top:top + crop, left:left + crop]
        assert np.array_equal(out_mask.numpy()[~ties[window]], resized[window][~ties[window]])


def test_rotation_samples_the_mask_on_the_images_pixel_centre_grid():
    """v2 rotates a Mask by nearest sampling on the same grid as the bilinear image; PIL's rotate (pixel centres,
    centre (w/2, h/2)) is the oracle. They may differ only where PIL's sample point is within 1e-3 px of a pixel
    boundary (float rounding decides those); a half-pixel shift would move whole label edges."""
    import math

    from PIL import Image
    from torchvision.transforms.v2 import functional as F

    _, mask = coded_pair(height=45, width=61, seed=5)
    pil_mask = Image.fromarray(mask.numpy().astype(np.uint8))
    ys, xs = np.mgrid[0:45, 0:61] + 0.5
    for angle in (3.7, -8.2, 10.0, 25.3):
        ours = F.rotate(mask, angle, fill=255).numpy()
        oracle = np.array(pil_mask.rotate(angle, resample=Image.NEAREST, fillcolor=255))
        a = -math.radians(angle)  # PIL's inverse map: output centre → input point
        cx, cy = 61 / 2, 45 / 2
        x_in = math.cos(a) * (xs - cx) + math.sin(a) * (ys - cy) + cx
        y_in = -math.sin(a) * (xs - cx) + math.cos(a) * (ys - cy) + cy
        near = lambda v: np.abs(v - np.round(v)) < 1e-3  # noqa: E731
        differ = ours != oracle
        assert differ.sum() < 0.01 * ours.size and not differ[~(near(x_in) | near(y_in))].any(), angle


def test_short_side_scale_computes_the_other_side_as_release_v050(monkeypatch):
    from encnet.data.transforms import ShortSideScale

    asked = []

    def randint(low, high, size=()):  # answers the short side the test asks for, within the drawn range
        assert low <= asked[-1] < high, (low, high, asked[-1])
        return torch.tensor(asked[-1])

    monkeypatch.setattr(torch, "randint", randint)
    for height, width in ((375, 500), (500, 375), (333, 500), (281, 500), (480, 480)):
        image = tv_tensors.Image(torch.zeros(3, height, width, dtype=torch.uint8))
        step = ShortSideScale(520, (0.5, 2.0))
        for short in range(260, 1041, 7):
            asked.append(short)
            # encoding/datasets/base.py at v0.5.0, _sync_transform
            expected = (int(1.0 * height * short / width), short) if height > width else (
                short, int(1.0 * width * short / height))
            assert tuple(step(image).shape[-2:]) == expected


def test_crops_of_small_images_are_padded_bottom_right_mirrored_or_not():
    preset = SegmentationTrainPreset(base_size=20, crop_size=32, scale_range=(1.0, 1.0), scale_side="short",
                                     **IDENTITY)
    image, mask = coded_pair(height=20, width=25, seed=2)
    torch.manual_seed(0)
    mirrored = 0
    for _ in range(12):
        _, out = preset(image, mask)
        out = out.numpy()
        assert (out[:20, :25] != 255).all() and (out[20:] == 255).all() and (out[:, 25:] == 255).all()
        flipped = np.array_equal(out[:20, :25], mask.numpy()[:, ::-1])
        assert flipped or np.array_equal(out[:20, :25], mask.numpy())
        mirrored += flipped
    assert 0 < mirrored < 12  # the mirror comes first, so a mirrored image is padded on its right too
