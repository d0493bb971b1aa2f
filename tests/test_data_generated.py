"""The generated demo datasets: deterministic, atomic, documented, and hard in the intended way."""

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from encnet.data import build_dataset
from encnet.data import context_scenes as cs
from encnet.data import context_textures as ct

torch.set_num_threads(1)


def digest(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


@pytest.mark.parametrize(
    "ensure, sizes",
    [(cs.ensure_context_scenes, dict(num_train=10, num_val=4, image_size=48)),
     (cs.ensure_context_scenes, dict(num_train=6, num_val=3, image_size=64, sizes="small_large", layout="far",
                                     cue="mixture")),
     (ct.ensure_context_textures, dict(num_train=30, num_test=10))],
)  # fmt: skip
def test_generators_are_deterministic_and_atomic(tmp_path, ensure, sizes):
    a = ensure(tmp_path / "a", seed=3, **sizes)
    b = ensure(tmp_path / "b", seed=3, **sizes)
    other = ensure(tmp_path / "c", seed=4, **sizes)
    assert digest(a) == digest(b) and len(digest(a)) > 2
    assert digest(a) != digest(other)
    # built once, in place, with no temporary folder left behind
    before = {p: p.stat().st_mtime_ns for p in a.rglob("*")}
    assert ensure(tmp_path / "a", seed=3, **sizes) == a
    assert before == {p: p.stat().st_mtime_ns for p in a.rglob("*")}
    assert [p.name for p in (tmp_path / "a").iterdir()] == [a.name]


def test_docstrings_state_the_class_layout():
    for module in (cs, ct):
        for name in module.CLASS_NAMES:
            assert name in module.__doc__, f"{module.__name__} docstring does not mention class {name}"
    assert "no ignore pixels" in cs.__doc__


def test_build_dataset_generates_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ENCNET_CACHE", str(tmp_path))
    ds = build_dataset("context_scenes", None, "val", num_train=6, num_val=5, image_size=40, seed=1)
    assert len(ds) == 5 and ds.num_classes == 11 and ds.ignore_index == 255 and ds.ids[0] == "val_00000"
    image, mask = ds[0]
    assert image.shape == (3, 40, 40) and mask.dtype == torch.int64
    # the built folder is itself a valid root
    assert build_dataset("context_scenes", ds.root, "train").ids == [f"train_{i:05d}" for i in range(6)]
    tex = build_dataset("context_textures", None, "val", num_train=20, num_test=10)
    image, label = tex[3]
    assert len(tex) == 10 and image.shape == (3, 32, 32) and image.dtype == torch.uint8 and label == 3


def test_context_scenes_layout_keeps_objects_away_from_the_scene_cue(tmp_path):
    root = cs.ensure_context_scenes(tmp_path, num_train=40, num_val=1)
    ds = cs.ContextScenes(root, "train")
    top = round(cs.BAND_FRACTION * 64) + round(cs.GAP_FRACTION * 64)
    counts = np.zeros(ds.num_classes, dtype=np.int64)
    for i in range(len(ds)):
        _, mask = ds.load(i)
        assert mask[:top].max() == 0  # backdrop and gap rows are background only
        present = np.unique(mask)
        counts[present] += 1
        scene = ds.image_scenes[i]
        ambiguous = [c for c in present if c in ds.ambiguous_classes]
        assert ambiguous and all(ds.class_names[c].startswith(scene + "_") for c in ambiguous)
    assert (counts > 0).all()  # every class occurs in 40 images


def _pixels(ds):
    images, masks = zip(*(ds.load(i) for i in range(len(ds))))
    return np.stack(images).reshape(-1, 3) / 255.0, np.stack(masks).reshape(-1), np.stack(images)


def test_per_pixel_classifier_cannot_tell_ambiguous_classes_but_scene_is_global(tmp_path):
    """The design claim: the best per-pixel (1×1) classifier learns the objects' appearance but not which
    scene's class a disc or square is (chance 1/4), while the scene is trivially recognised globally.

    The per-pixel classifier is the Bayes rule on quantised colour (majority class of each of 16³ colour
    bins in the training pixels): no 1×1 model can beat it by more than the quantisation allows."""
    root = cs.ensure_context_scenes(tmp_path, num_train=80, num_val=40)
    train, val = cs.ContextScenes(root, "train"), cs.ContextScenes(root, "val")
    x, y, train_images = _pixels(train)
    xv, yv, val_images = _pixels(val)
    bins = lambda rgb: ((rgb * 15.999).astype(np.int64) * np.array([256, 16, 1])).sum(1)  # noqa: E731
    votes = np.zeros((16**3, train.num_classes), dtype=np.int64)
    np.add.at(votes, (bins(x), y), 1)
    pred = votes.argmax(1)[bins(xv)]
    ambiguous = np.isin(yv, train.ambiguous_classes)
    exact = (pred[ambiguous] == yv[ambiguous]).mean()
    shape_of = {c: train.class_names[c].split("_")[-1] for c in range(train.num_classes)}
    same_shape = np.mean([shape_of[p] == shape_of[t] for p, t in zip(pred[ambiguous], yv[ambiguous])])
    assert same_shape > 0.9, f"the per-pixel classifier should learn the object appearance ({same_shape:.2f})"
    assert exact < 0.45, f"per-pixel accuracy on scene-dependent classes {exact:.2f} should be near chance 0.25"

    # globally: nearest centroid on the mean colour of the top rows tells the scene
    band = round(cs.BAND_FRACTION * 64)
    scene_index = {s: k for k, s in enumerate(cs.SCENES)}
    ft = train_images[:, :band].mean((1, 2))
    fv = val_images[:, :band].mean((1, 2))
    st = np.array([scene_index[s] for s in train.image_scenes])
    sv = np.array([scene_index[s] for s in val.image_scenes])
    centroids = np.stack([ft[st == k].mean(0) for k in range(len(cs.SCENES))])
    guess = np.linalg.norm(fv[:, None] - centroids[None], axis=-1).argmin(1)
    assert (guess == sv).mean() > 0.95


# --------------------------------------------------- designs of the demo claims (docs/demo.md, one per claim)


def _scene_features(cue: str, count: int = 400, size: int = 64, layout: str = "near"):
    """Per image: mean colour and mean colour-gradient magnitude (what global average pooling of simple local
    features sees) and the backdrop's per-channel spread (a distribution statistic); and the scene index."""
    means, spreads, scenes = [], [], []
    for i in range(count):
        image, _, scene, _ = cs.draw_scene(np.random.default_rng([0, 0, i]), size, cue, layout=layout)
        im = image.astype(np.float64)
        gy, gx = np.diff(im, axis=0)[:, :-1], np.diff(im, axis=1)[:-1]
        gradient = np.sqrt((gx**2 + gy**2).sum(-1)).mean()
        band = im[: round(cs.BAND_FRACTION * size)].reshape(-1, 3)
        means.append([*im.reshape(-1, 3).mean(0), *band.mean(0), gradient])
        spreads.append(band.std(0))
        scenes.append(cs.SCENES.index(scene))
    return np.array(means), np.array(spreads), np.array(scenes)


def _nearest_centroid_accuracy(features: np.ndarray, labels: np.ndarray) -> float:
    """Fit class centroids (standardised features) on the first half, accuracy on the second half."""
    half = len(labels) // 2
    scale = features[:half].std(0) + 1e-9
    centroids = np.array([features[:half][labels[:half] == k].mean(0) for k in range(len(cs.SCENES))])
    distance = (((features[half:, None] - centroids[None]) / scale) ** 2).sum(-1)
    return float((distance.argmin(1) == labels[half:]).mean())


@pytest.mark.parametrize("layout", ["near", "far"])  # far: the demo's claim-2 data
def test_mixture_cue_hides_the_scene_from_every_per_image_mean_but_not_from_the_distribution(layout):
    means, spreads, scenes = _scene_features("mixture", layout=layout)
    assert len(set(scenes)) == 4
    # Chance is 25 %; 200 held-out images put a 95 % band of about ±6 % around it.
    assert _nearest_centroid_accuracy(means, scenes) < 0.36
    assert _nearest_centroid_accuracy(spreads, scenes) > 0.95
    # The colour cue, for contrast, is read from the mean alone.
    colour_means, _, colour_scenes = _scene_features("colour", layout=layout)
    assert _nearest_centroid_accuracy(colour_means, colour_scenes) > 0.95


def test_mixture_backdrop_is_exactly_half_each_colour_around_one_mean():
    rng = np.random.default_rng(5)
    band = cs._mixture_backdrop(rng, "beach", 12, 64)
    d = np.array(cs.MIXTURE_DIRECTIONS["beach"]) / np.linalg.norm(cs.MIXTURE_DIRECTIONS["beach"])
    along = (band - band.reshape(-1, 3).mean(0)) @ d
    assert (along > 0).sum() == (along < 0).sum() == 12 * 64 // 2
    assert np.abs(np.abs(along) - cs.MIXTURE_NORM).max() < 4 * 5  # ±m·d plus pixel noise (σ 4)


def _objects(mask: np.ndarray):
    from scipy import ndimage

    labelled, count = ndimage.label(mask > 0)
    for i, box in enumerate(ndimage.find_objects(labelled), start=1):
        yield labelled[box] == i, box, int(mask[box][labelled[box] == i][0])


def test_small_large_objects_fall_in_their_size_bins_and_regions_mark_them():
    size = 64
    bins = {name: (round(lo * size), round(hi * size)) for name, (lo, hi) in cs.SIZE_BINS["small_large"].items()}
    assert bins["small"][1] < bins["large"][0]  # the bins do not touch
    seen = {"small": 0, "large": 0}
    controls = []
    for i in range(60):
        _, mask, _, regions = cs.draw_scene(np.random.default_rng([0, 0, i]), size, "colour", "small_large")
        for pixels, box, label in _objects(mask):
            side = max(box[0].stop - box[0].start, box[1].stop - box[1].start)
            name = next(n for n, (lo, hi) in bins.items() if lo <= side <= hi)
            assert (regions[box][pixels] == cs.REGION_CODES[name]).all()
            if label in cs.AMBIGUOUS_CLASSES:
                seen[name] += 1
            else:
                controls.append((name, pixels.sum() / side**2))
        assert ((regions > 0) | (mask == 0)).all()  # every object pixel is in a region
    # Scene-dependent objects: small and large about equally often.
    assert min(seen.values()) > 40 and 0.6 < seen["small"] / seen["large"] < 1.6
    # Controls: always large, with thick strokes (a thin 2-px ring covers under a third of its box).
    assert len(controls) > 10 and all(name == "large" for name, _ in controls)
    assert min(cover for _, cover in controls) > 0.4


def test_default_sizes_keep_one_bin_and_write_no_regions(tmp_path):
    root = cs.ensure_context_scenes(tmp_path, num_train=4, num_val=2, image_size=64)
    assert not (root / "regions").exists() and cs.ContextScenes(root, "val").size_regions(0) is None
    lo, hi = (round(f * 64) for f in cs.SIZE_BINS["one"]["one"])
    for i in range(20):
        _, mask, _, regions = cs.draw_scene(np.random.default_rng([0, 0, i]), 64)
        assert not regions.any()
        for _, box, _ in _objects(mask):
            assert lo <= max(box[0].stop - box[0].start, box[1].stop - box[1].start) <= hi
    both = cs.ensure_context_scenes(tmp_path, num_train=4, num_val=2, image_size=64, cue="mixture",
                                    sizes="small_large")
    ds = cs.ContextScenes(both, "val")
    assert both.name.endswith("-mixture-small_large") and ds.size_regions(1).shape == (64, 64)
    with pytest.raises(ValueError, match="cue must be one of"):
        cs.ensure_context_scenes(tmp_path, cue="texture")


def test_context_scenes_keeps_decoded_samples_without_letting_callers_change_them(tmp_path):
    from PIL import Image

    root = cs.ensure_context_scenes(tmp_path, num_train=3, num_val=2, image_size=48)
    ds = cs.ContextScenes(root, "train")
    image, mask = ds.load(1)
    image[:] = 0
    mask[:] = 99
    again, again_mask = ds.load(1)
    image_path, mask_path = ds.paths(1)
    assert np.array_equal(again, np.array(Image.open(image_path).convert("RGB")))
    assert np.array_equal(again_mask, np.array(Image.open(mask_path)))
    assert 1 in ds._decoded and len(ds._decoded) == 1  # decoded once, on first use
    Image.fromarray(np.full((48, 48), 9, np.uint8)).save(mask_path)  # changed on disk: read again
    assert (ds.load(1)[1] == 9).all()


# ------------------------------------------------------------ the far layout: the scene beyond local convolutions


def _logit_gradient_on_rows(config_overrides, height, rows):
    """Per input row, the largest |∂ Σ logits[rows] / ∂ input| of a demo network (float64, eval mode)."""
    from encnet.engine.build import build_model_for
    from encnet.engine.config import load_config

    torch.manual_seed(0)
    demo = Path(__file__).resolve().parents[1] / "configs" / "demo"
    config = load_config(demo / ("context_scenes_fcn.yaml" if config_overrides is None
                                 else "context_scenes_encnet.yaml"), config_overrides or [])
    model = build_model_for(config, len(cs.CLASS_NAMES)).double().eval()
    x = torch.randn(1, 3, height, 64, dtype=torch.float64, requires_grad=True)
    out = model(x)
    (grad,) = torch.autograd.grad(out.out[:, :, rows].sum(), x)
    return grad.abs().amax(dim=(0, 1, 3))


def test_far_layout_puts_the_band_beyond_what_the_fcn_can_see_but_not_beyond_encnet():
    band = round(cs.BAND_FRACTION * 64)
    far_top = band + cs.FAR_GAP
    height = cs.image_height(64, "far")
    assert height == 112 and height % 8 == 0
    # The FCN's logits on every row an object can occupy do not depend on one band pixel: exactly zero.
    fcn_far = _logit_gradient_on_rows(None, height, slice(far_top, None))
    assert fcn_far[:band].max() == 0 and fcn_far[far_top:].min() > 0
    # The leak it removes: in the square layout the same FCN's object rows reach into the band.
    near_top = band + round(cs.GAP_FRACTION * 64)
    assert _logit_gradient_on_rows(None, 64, slice(near_top, None))[:band].max() > 0
    # EncNet's Context Encoding pools over the whole image, so its object rows do depend on the band.
    encnet_far = _logit_gradient_on_rows([], height, slice(far_top, None))
    assert encnet_far[:band].min() > 0


def test_far_layout_draws_the_same_band_and_objects_with_more_ground_between(tmp_path):
    root = cs.ensure_context_scenes(tmp_path, seed=2, num_train=30, num_val=2, image_size=64, sizes="small_large",
                                    layout="far")
    assert root.name.endswith("-small_large-far")
    ds = cs.ContextScenes(root, "train")
    assert ds.num_classes == 15 and ds.class_names[11:] == cs.BACKDROP_CLASSES
    band, top = round(cs.BAND_FRACTION * 64), round(cs.BAND_FRACTION * 64) + cs.FAR_GAP
    for i in range(len(ds)):
        image, mask = ds.load(i)
        assert image.shape == (112, 64, 3) and mask.shape == (112, 64)
        scene = ds.image_scenes[i]
        # the band carries its scene's backdrop class, the gap is plain ground, the objects lie below it
        assert (mask[:band] == ds.class_names.index(f"{scene}_backdrop")).all()
        assert mask[band:top].max() == 0 and (mask[top:] > 0).any()
        assert all(ds.class_names[c].startswith(scene + "_") for c in np.unique(mask) if c in ds.ambiguous_classes)
    # The band still tells the scene: its mean colour, nearest the scene's backdrop colour.
    for i in range(len(ds)):
        image, _ = ds.load(i)
        mean = image[:band].reshape(-1, 3).mean(0)
        nearest = min(cs.SCENES, key=lambda s: np.abs(mean - np.array(cs.BACKDROP_RGB[s])).sum())
        # (night's stars brighten its mean; the colour says which scene all the same)
        assert nearest == ds.image_scenes[i] or ds.image_scenes[i] == "night"
    with pytest.raises(ValueError, match="layout must be one of"):
        cs.draw_scene(np.random.default_rng(0), 64, layout="tall")
