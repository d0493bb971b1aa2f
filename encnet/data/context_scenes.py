"""``context_scenes``: a generated segmentation set in which only the global scene tells classes apart.

Why it exists: the paper's claim is that encoding global context fixes confusions between classes that look
alike locally. Here that situation is built in, so the claim can be tested in minutes on a CPU.

What an image is (defaults: 64×64, 300 train / 100 val, seed 0; sizes scale with ``image_size``):

* one of 4 scenes — ``field``, ``beach``, ``street``, ``night`` — chosen per image;
* a backdrop band across the top ~19% of the rows, the only scene cue: its colour and large-scale structure
  differ per scene (field: green with horizontal bands; beach: light blue with a vertical gradient; street:
  grey with vertical building bars; night: dark blue with star dots);
* below it, the ground: one shared noisy grey-brown texture, drawn from the same distribution in every scene;
* 2–4 objects placed only in the lower part of the ground, at least ~19% of the image height (12 px at 64)
  below the backdrop, never overlapping. Every object kind appears in every scene with the same distribution,
  so nothing within an object's neighbourhood (its pixels, the ground, the other objects) depends on the scene.

Classes (11; no ignore pixels)::

    0  background      ground and backdrop
    1  field_disc      2  beach_disc      3  street_disc      4  night_disc     red/white striped disc
    5  field_square    6  beach_square    7  street_square    8  night_square   blue/yellow checkered square
    9  ring                                                                     magenta ring, any scene
    10 cross                                                                    cyan cross, any scene
    layout="far" only (the band labelled by its scene, as PASCAL-Context labels its sky, grass and water):
    11 field_backdrop  12 beach_backdrop  13 street_backdrop  14 night_backdrop

Classes 1–8 are the ambiguous ones: a disc's label is ``<scene>_disc``, and its pixels and surroundings are
identically distributed in all four scenes, so a per-pixel (1×1) or small-receptive-field classifier can at
best guess among four (25%); the scene itself is trivially recognisable from the image as a whole (the mean
colour of the backdrop). ``ring`` and ``cross`` are scene-independent controls that local features solve.

Two options put the mechanisms of two further claims at play (designed before any run; docs/demo.md)::

    cue="colour"  (default) the backdrop's mean colour tells the scene (claims 1, 3–5).
    cue="mixture" claim 2, Encoding Layer > global average pooling (Figure 5, K = 0 vs 16 vs 32): the backdrop
                  mixes two colours m + d and m − d in random blobs that cover exactly half of its pixels, with
                  one shared mean m (plus a per-image jitter drawn alike for every scene) and one shared |d|; only
                  the direction of d in colour space (so which two colours co-occur) tells the scene. The per-image
                  mean colour and the mean colour-gradient magnitude are then identically distributed in every
                  scene, so averaging features first and deciding later has nothing to read, while a dictionary
                  of colour codewords with soft assignment (the Encoding Layer's residuals) separates the scenes.
                  Tested: a nearest-centroid classifier on the per-image mean colour and mean gradient magnitude is
                  at chance; on the per-channel spread it is near perfect.
    layout="near" (default) the square image above: the band is 12 px above the highest object (at 64 px).
    layout="far"  claims 1–5 in the demo: the same band, ground and objects, with ``FAR_GAP`` more rows of plain
                  ground between the band and the objects (64 wide, 112 tall at 64 px). The demo networks'
                  receptive field is 91 px (the tiny dilated ResNet and a 3×3 head, output stride 8), so an
                  object's prediction cannot depend on the band through local convolutions: only a module that
                  pools over the whole image (EncNet's Context Encoding, SE-loss, global average pooling) can read
                  the scene. The band is labelled by its scene (classes 11–14), so every network learns
                  features that tell the scenes apart where it can see them; only a global module can carry
                  them down to the objects. With ``near``, an FCN reaches the band from the higher objects,
                  and it did on some seeds and not others (46.6 ± 11.6 mIoU over 5 seeds): a leak that made
                  the FCN arm's spread the largest term in the EncNet − FCN interval. Tested: the gradient of
                  an FCN's object-row logits with respect to the band's pixels is exactly zero.
    sizes="one"   (default) every object's side is 16–25 % of the image (10–16 px at 64).
    sizes="small_large"  claim 3, SE-loss helps mostly small objects (§2): each object is drawn small (side 10–14 %
                  of the image: 6–9 px at 64, about one cell of the output-stride-8 feature map) or large
                  (22–28 %: 14–18 px) with probability 1/2, so small scene-dependent objects are as frequent as
                  large ones but hold few pixels; a pixel loss sees them little, the SE-loss (one presence bit per
                  class, whatever its size) as much as large ones. The controls (ring, cross) are always large with
                  strokes a third of their side, so that learning them tests training, not resolution.
                  ``regions/<id>.png`` marks each object with a 2-pixel margin by its size bin (1 small, 2 large, 0
                  elsewhere), so evaluation reports the mean IoU of the scene-dependent classes over the pixels near
                  small objects and near large ones (``mIoU_small``, ``mIoU_large``; ``encnet.evaluate``).

On disk (a layout like the real datasets; written atomically into the cache folder)::

    <folder>/images/<id>.png   RGB
    <folder>/masks/<id>.png    L, values 0..10
    <folder>/regions/<id>.png  L, size bin of the object (with a 2-pixel margin) at each pixel; sizes="small_large"
    <folder>/{train,val}.txt   ids, one per line
    <folder>/meta.json         parameters, class and scene names, the scene of every image

Deterministic: each image is drawn from its own generator seeded by (seed, split, index), so the same
parameters give byte-identical files, and a bigger ``num_train`` extends a smaller one with the same images.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from encnet.data.base import DatasetNotFoundError, SegmentationDataset, lookup_table, missing, read_split_list
from encnet.data.cache import build_dir_atomically, default_cache_dir

VERSION = 2  # 2: size bins, the mixture cue, thick large controls with size bins (the default data is unchanged)
# (layout="far" came later; it draws other images, told apart by the folder name's "-far".)
SCENES = ("field", "beach", "street", "night")
SHAPES = ("disc", "square")
CLASS_NAMES = (
    ("background",) + tuple(f"{scene}_{shape}" for shape in SHAPES for scene in SCENES) + ("ring", "cross")
)
# layout="far" labels the band by its scene (classes 11–14), as PASCAL-Context labels sky, grass and water.
BACKDROP_CLASSES = tuple(f"{scene}_backdrop" for scene in SCENES)
AMBIGUOUS_CLASSES = tuple(range(1, 1 + len(SHAPES) * len(SCENES)))
SPLIT_CODES = {"train": 0, "val": 1}

BAND_FRACTION = 0.1875  # backdrop rows, the only place the scene shows
GAP_FRACTION = 0.1875  # empty ground between the backdrop and the highest object

GROUND_RGB = np.array([128, 118, 105], dtype=np.float64)
BACKDROP_RGB = {
    "field": (60, 150, 60),
    "beach": (120, 185, 235),
    "street": (115, 115, 125),
    "night": (20, 25, 70),
}

CUES = ("colour", "mixture")
SIZES = ("one", "small_large")
LAYOUTS = ("near", "far")
# layout="far": plain ground rows between the band and the highest object. The demo backbones' receptive field
# is 91 px (stem 11, stages 8 + 8 + 16 + 32, 3×3 head 16 at stride 8): 45 px each way, plus up to 8 px through
# the bilinear upsampling of the stride-8 logits, so 60 rows keep every object pixel's logits out of the band's
# reach with a margin (the gradient test in tests/ checks it) and make the far image 112 = 14 × 8 rows tall.
FAR_GAP = 60
# Object side as a fraction of the image side, per size option and bin; region value of each bin.
SIZE_BINS = {"one": {"one": (0.16, 0.25)}, "small_large": {"small": (0.10, 0.14), "large": (0.22, 0.28)}}
REGION_CODES = {"small": 1, "large": 2}
# The controls (ring, cross) are always drawn large with a third of their side as stroke width when there are size
# bins: the thin default controls (2–3 px strokes) were never segmented at output stride 8 (IoU ≈ 0 for FCN and
# EncNet alike), which left the precondition "controls learned" unmeetable for reasons that have nothing to do
# with context.
CONTROL_BIN = "large"
REGION_MARGIN = 2  # pixels around an object counted in its size bin: false positives next to it count too
# cue="mixture": every scene mixes m + d and m − d; |d| is the same, only its direction in RGB differs.
MIXTURE_MEAN = np.array([120.0, 120.0, 120.0])
MIXTURE_DIRECTIONS = {
    "field": (1.0, -1.0, 0.0),
    "beach": (0.0, 1.0, -1.0),
    "street": (1.0, 0.0, -1.0),
    "night": (1.0, 1.0, -2.0),
}
MIXTURE_NORM = 60.0

LAYOUT = """\
  ROOT/images/<id>.png, ROOT/masks/<id>.png, ROOT/{train,val}.txt, ROOT/meta.json"""


def class_names(layout: str = "near") -> tuple[str, ...]:
    return CLASS_NAMES + (BACKDROP_CLASSES if layout == "far" else ())


def class_id(scene: str, shape: str) -> int:
    return CLASS_NAMES.index(f"{scene}_{shape}")


def folder_name(seed: int, num_train: int, num_val: int, image_size: int, cue: str = "colour",
                sizes: str = "one", layout: str = "near") -> str:
    options = (("" if cue == "colour" else f"-{cue}") + ("" if sizes == "one" else f"-{sizes}")
               + ("" if layout == "near" else f"-{layout}"))
    return f"context_scenes-v{VERSION}-seed{seed}-{num_train}x{num_val}-{image_size}px{options}"


def _check_options(cue: str, sizes: str, layout: str = "near") -> None:
    if layout not in LAYOUTS:
        raise ValueError(f"context_scenes layout must be one of {LAYOUTS}, found {layout!r}")
    if cue not in CUES:
        raise ValueError(f"context_scenes cue must be one of {CUES}, found {cue!r}")
    if sizes not in SIZES:
        raise ValueError(f"context_scenes sizes must be one of {SIZES}, found {sizes!r}")


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [-1, 1]: a coarse random grid upsampled bilinearly."""
    grid = rng.uniform(-1, 1, size=(cells + 1, cells + 1))
    ys, xs = np.linspace(0, cells, height), np.linspace(0, cells, width)
    y0, x0 = np.minimum(ys.astype(int), cells - 1), np.minimum(xs.astype(int), cells - 1)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    top = grid[y0][:, x0] * (1 - fx) + grid[y0][:, x0 + 1] * fx
    bottom = grid[y0 + 1][:, x0] * (1 - fx) + grid[y0 + 1][:, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def _backdrop(rng: np.random.Generator, scene: str, rows: int, width: int) -> np.ndarray:
    base = np.array(BACKDROP_RGB[scene], dtype=np.float64) + rng.uniform(-12, 12, size=3)
    y, x = np.mgrid[0:rows, 0:width].astype(np.float64)
    if scene == "field":
        shade = 18 * np.sign(np.sin(2 * np.pi * (y / rng.uniform(3, 5) + rng.uniform())))
    elif scene == "beach":
        shade = 40 * (y / max(rows - 1, 1) - 0.5)
    elif scene == "street":
        heights = rng.integers(rows // 3, rows + 1, size=width // 4 + 1)
        shade = np.where(y >= rows - heights[(x // 4).astype(int)], 35.0, -20.0)
    else:
        shade = np.where(rng.uniform(size=(rows, width)) < 0.06, 180.0, 0.0)
    return base + shade[..., None] + rng.normal(0, 4, size=(rows, width, 3))


def _mixture_backdrop(rng: np.random.Generator, scene: str, rows: int, width: int) -> np.ndarray:
    """m + d on exactly half of the band's pixels (smooth random blobs), m − d on the other half."""
    d = np.array(MIXTURE_DIRECTIONS[scene])
    d = MIXTURE_NORM * d / np.linalg.norm(d)
    field = _smooth_noise(rng, rows, width, 6) + 1e-6 * rng.normal(size=(rows, width))  # no ties
    half = np.zeros(rows * width, dtype=bool)
    half[np.argsort(field, axis=None)[: rows * width // 2]] = True
    sign = np.where(half.reshape(rows, width), 1.0, -1.0)
    mean = MIXTURE_MEAN + rng.uniform(-12, 12, size=3)  # the same jitter law in every scene
    return mean + sign[..., None] * d + rng.normal(0, 4, size=(rows, width, 3))


def _shape_mask(kind: str, size: int, rng: np.random.Generator, thick: bool = False) -> np.ndarray:
    c = (size - 1) / 2
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    r = np.hypot(y - c, x - c)
    if kind == "disc":
        return r <= size / 2
    if kind == "square":
        return np.ones((size, size), dtype=bool)
    if kind == "ring":
        return (r <= size / 2) & (r >= size / 2 - max(2, size // (3 if thick else 5)))
    arm = max(2, size // (3 if thick else 4))  # cross
    return (np.abs(y - c) <= arm / 2) | (np.abs(x - c) <= arm / 2)


def _object_pixels(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """RGB fill of an object, the same distribution whatever the scene."""
    y, x = np.mgrid[0:size, 0:size]
    jitter = rng.uniform(-10, 10, size=3)
    if kind == "disc":  # horizontal stripes, period 4 px, random phase
        on = ((y + rng.integers(4)) // 2) % 2 == 0
        colours = np.where(on[..., None], (205, 40, 40), (235, 235, 235))
    elif kind == "square":  # 3-px checkerboard, random phase
        on = (((y + rng.integers(6)) // 3 + (x + rng.integers(6)) // 3) % 2) == 0
        colours = np.where(on[..., None], (40, 60, 205), (235, 210, 40))
    elif kind == "ring":
        colours = np.broadcast_to(np.array((200, 40, 200)), (size, size, 3))
    else:
        colours = np.broadcast_to(np.array((30, 200, 200)), (size, size, 3))
    return colours + jitter + rng.normal(0, 6, size=(size, size, 3))


def image_height(image_size: int, layout: str = "near") -> int:
    """Rows of an image: ``image_size``, or with ``layout="far"`` the band, ``FAR_GAP`` and the objects' rows."""
    if layout == "near":
        return image_size
    # The near image with its band-to-object gap widened to FAR_GAP.
    return image_size - max(1, round(GAP_FRACTION * image_size)) + FAR_GAP


def draw_scene(rng: np.random.Generator, image_size: int, cue: str = "colour", sizes: str = "one",
               layout: str = "near") -> tuple[np.ndarray, np.ndarray, str, np.ndarray]:
    """One image (H×W×3 uint8), its mask (H×W uint8), its scene name and its size-bin regions (H×W uint8)."""
    _check_options(cue, sizes, layout)
    s, h = image_size, image_height(image_size, layout)
    scene = SCENES[int(rng.integers(len(SCENES)))]
    band = max(1, round(BAND_FRACTION * s))
    top = band + (max(1, round(GAP_FRACTION * s)) if layout == "near" else FAR_GAP)

    image = GROUND_RGB + 14 * _smooth_noise(rng, h, s, 4)[..., None] + rng.normal(0, 8, size=(h, s, 3))
    image[:band] = (_backdrop if cue == "colour" else _mixture_backdrop)(rng, scene, band, s)
    mask = np.zeros((h, s), dtype=np.uint8)
    if layout == "far":
        mask[:band] = len(CLASS_NAMES) + SCENES.index(scene)
    regions = np.zeros((h, s), dtype=np.uint8)
    bins = SIZE_BINS[sizes]

    taken = np.zeros((h, s), dtype=bool)
    count = int(rng.integers(2, 5))
    kinds = []
    for i in range(count):
        # At least one ambiguous object per image; the rest ambiguous with probability 0.7.
        if i == 0 or rng.uniform() < 0.7:
            kinds.append(SHAPES[int(rng.integers(len(SHAPES)))])
        else:
            kinds.append(("ring", "cross")[int(rng.integers(2))])
    for kind in kinds:
        # (With sizes="one" this draws nothing extra, so the default data stays byte-identical to version 1.)
        size_bin = list(bins)[int(rng.integers(len(bins)))] if len(bins) > 1 else next(iter(bins))
        if kind not in SHAPES and sizes != "one":
            size_bin = CONTROL_BIN  # controls: large and thick, so that every network can learn them
        low, high = bins[size_bin]
        size = int(rng.integers(round(low * s), round(high * s) + 1))
        for _attempt in range(30):
            y0 = int(rng.integers(top, h - size + 1))
            x0 = int(rng.integers(0, s - size + 1))
            window = (slice(max(0, y0 - 1), y0 + size + 1), slice(max(0, x0 - 1), x0 + size + 1))
            if not taken[window].any():
                break
        else:
            continue  # no free place left: fewer objects
        shape = _shape_mask(kind, size, rng, thick=sizes != "one")
        label = class_id(scene, kind) if kind in SHAPES else CLASS_NAMES.index(kind)
        region = (slice(y0, y0 + size), slice(x0, x0 + size))
        image[region][shape] = _object_pixels(kind, size, rng)[shape]
        mask[region][shape] = label
        if size_bin in REGION_CODES:
            # An object's own box always carries its bin; its margin only fills pixels no other object claimed.
            m = REGION_MARGIN
            around = (slice(max(0, y0 - m), y0 + size + m), slice(max(0, x0 - m), x0 + size + m))
            free = ~taken[around] & (regions[around] == 0)
            regions[around][free] = REGION_CODES[size_bin]
            regions[region] = REGION_CODES[size_bin]
        taken[region] = True
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), mask, scene, regions


def generate_context_scenes(out: Path, seed: int = 0, num_train: int = 300, num_val: int = 100, image_size: int = 64,
                            cue: str = "colour", sizes: str = "one", layout: str = "near"):
    """Write the dataset into the (empty) folder ``out``."""
    _check_options(cue, sizes, layout)
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(exist_ok=True)
    if sizes != "one":
        (out / "regions").mkdir(exist_ok=True)
    scenes = {}
    for split, count in (("train", num_train), ("val", num_val)):
        ids = []
        for index in range(count):
            rng = np.random.default_rng([seed, SPLIT_CODES[split], index])
            image, mask, scene, regions = draw_scene(rng, image_size, cue, sizes, layout)
            image_id = f"{split}_{index:05d}"
            Image.fromarray(image).save(out / "images" / f"{image_id}.png")
            Image.fromarray(mask, mode="L").save(out / "masks" / f"{image_id}.png")
            if sizes != "one":
                Image.fromarray(regions, mode="L").save(out / "regions" / f"{image_id}.png")
            ids.append(image_id)
            scenes[image_id] = scene
        (out / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
    meta = {
        "dataset": "context_scenes",
        "version": VERSION,
        "seed": seed,
        "num_train": num_train,
        "num_val": num_val,
        "image_size": image_size,
        "class_names": list(class_names(layout)),
        **({} if cue == "colour" else {"cue": cue}),
        **({} if layout == "near" else {"layout": layout, "image_height": image_height(image_size, layout),
                                        "far_gap": FAR_GAP}),
        **({} if sizes == "one" else {"sizes": sizes, "size_bins": SIZE_BINS[sizes], "region_codes": REGION_CODES,
                                      "region_margin": REGION_MARGIN}),
        "ambiguous_classes": list(AMBIGUOUS_CLASSES),
        "scene_names": list(SCENES),
        "scenes": scenes,
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")


def ensure_context_scenes(
    cache_dir: str | Path | None = None, seed: int = 0, num_train: int = 300, num_val: int = 100, image_size: int = 64,
    cue: str = "colour", sizes: str = "one", layout: str = "near",
) -> Path:
    """Path of the generated dataset with these parameters, building it first if it is not in the cache."""
    _check_options(cue, sizes, layout)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    final = cache_dir / folder_name(seed, num_train, num_val, image_size, cue, sizes, layout)
    return build_dir_atomically(
        final, lambda tmp: generate_context_scenes(tmp, seed, num_train, num_val, image_size, cue, sizes, layout)
    )


class ContextScenes(SegmentationDataset):
    """The generated dataset in ``root`` (a folder made by :func:`ensure_context_scenes`)."""

    name = "context_scenes"
    num_classes = len(CLASS_NAMES)
    class_names = CLASS_NAMES
    scene_names = SCENES
    ambiguous_classes = AMBIGUOUS_CLASSES

    def __init__(self, root: str | Path, split: str = "train", transform: Callable | None = None):
        super().__init__(transform)
        if split not in SPLIT_CODES:
            raise ValueError(f"context_scenes splits are {tuple(SPLIT_CODES)}; got {split!r}")
        self.root, self.split = Path(root), split
        fix = f"python -m encnet.data.prepare context_scenes --root {self.root.parent}"
        if not (self.root / "meta.json").is_file():
            raise missing("context_scenes meta.json", self.root / "meta.json", LAYOUT, fix)
        self.meta = json.loads((self.root / "meta.json").read_text())
        if self.meta.get("dataset") != "context_scenes":
            raise DatasetNotFoundError(f"{self.root / 'meta.json'} does not describe a context_scenes folder")
        self.ids = read_split_list(self.root / f"{split}.txt", LAYOUT, fix)
        self.image_scenes = [self.meta["scenes"][i] for i in self.ids]
        # The far layout adds the labelled backdrops: the folder's own class list decides.
        self.class_names = tuple(self.meta.get("class_names", CLASS_NAMES))
        self.num_classes = len(self.class_names)
        self.label_table = lookup_table(256, {v: v for v in range(self.num_classes)})
        # Decoded samples, kept: the set is a few hundred small images read 40 times each by a demo run, and
        # decoding two PNGs per sample was an eighth of a demo epoch on one core (cProfile, 2026-11-30). Each is
        # keyed by its files' (mtime, size), so a file changed or damaged on disk is read again and its error
        # names it, as with the real datasets.
        self._decoded: dict[int, tuple[tuple, np.ndarray, np.ndarray]] = {}

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        try:
            stamp = tuple((s.st_mtime_ns, s.st_size) for s in map(os.stat, self.paths(index)))
        except OSError:
            return super().load(index)  # the base class names the missing file
        kept = self._decoded.get(index)
        if kept is None or kept[0] != stamp:
            kept = self._decoded[index] = (stamp, *super().load(index))
        return kept[1].copy(), kept[2].copy()  # the transforms must not reach the kept arrays

    def paths(self, index: int) -> tuple[Path, Path]:
        image_id = self.ids[index]
        return self.root / "images" / f"{image_id}.png", self.root / "masks" / f"{image_id}.png"

    @property
    def region_codes(self) -> dict[str, int]:
        """Size bin → value in ``regions/<id>.png``; empty for data without size bins (sizes="one")."""
        return dict(self.meta.get("region_codes", {}))

    def size_regions(self, index: int) -> np.ndarray | None:
        """H×W uint8 size-bin regions of image ``index`` (``REGION_CODES``), or None without size bins."""
        if not self.region_codes:
            return None
        return np.array(Image.open(self.root / "regions" / f"{self.ids[index]}.png"))
