"""The data path beside the authors' own dataset code (marker ``peers``; ``bash scripts/install_peers.sh`` first).

Release v0.5.0's ``encoding/datasets/`` (the torch-encoding 0.5.0 sdist in ``.peers/site``, the same files as commit
f891919, which trained the model zoo) reads the files below, written in the datasets' official formats, beside the
suite's datasets. Then its ``BaseDataset._sync_transform`` (the training crop) and ``_val_sync_transform`` (the
training's validation view) run beside the suite's presets on every paper config put on the release side
(``--follow release``; configs whose data sections are equal, such as R50 and R101 or EncNet and FCN on one dataset,
once: ``DATA_RECIPES``), both forced to the same random decisions: ``random`` in the release's ``base.py`` is replaced
by a script of draws, and ``torch.rand`` / ``torch.randint`` answer the suite's transforms from the same script.

The files, as each dataset ships them:
- VOC 2012: JPEGs and palette PNGs (0..20, 255 on the objects' borders);
- SBD (benchmark.tgz): ``cls/<id>.mat`` holding the MATLAB struct GTcls (a uint8 Segmentation, Boundaries as a 20×1
  cell of sparse maps, CategoriesPresent as a uint8 column), written with ``scipy.io.savemat``; the release reads it
  from ``VOCaug/dataset`` (its prepare script's layout: here a link to SBD's folder, with its ``trainval.txt``);
- COCO: an instances JSON (polygons, a crowd region in uncompressed RLE, overlapping instances, a category outside
  VOC's 20, images under the 1,000-pixel filter), rasterised by pycocotools on both sides;
- ADE20K: PNGs with 0 = unlabelled, 1..150;
- PASCAL-Context: the release paints its masks with the Detail API, which is not on the package registry. The PNG
  layout's label arrays go through the release's ``ContextSegmentation._sync_transform`` / ``_mask_transform`` here;
  the Detail JSON path is covered by the suite's own tests (tests/test_data_datasets.py).

Tolerances:
- labels: equal everywhere except on the output rows and columns whose pixel centre maps exactly onto the boundary of
  two source pixels under the resize ((i + ½)·in/out an integer), where nearest sampling may take either neighbour
  and PIL and torch break the tie differently. The ties follow from the sizes (``_tie_lines``); nothing is fitted.
- images: within ``GREY_LEVELS`` grey levels of the release's crop, per pixel and channel. PIL's bilinear resize and
  torchvision's antialiased bilinear kernel for uint8 images round differently: on these fixtures (JPEG noise, the
  hardest case) by at most 1 level, on 0.04–0.34 % of the values, blurred crops included; 2 levels on a smoothed
  noise image resized from 375×500 to 300×400 (a separate probe). A skipped blur or a crop one pixel off moves
  values by tens of levels.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from data_fixtures import write_jpeg, write_list, write_png
from encnet.engine.build import build_dataset_for, build_monitor_dataset
from encnet.engine.config import load_config, to_dict
from encnet.experiments.discrepancies import follow_overrides, load_ledger

pytestmark = pytest.mark.peers

REPO = Path(__file__).resolve().parents[1]
SITE = REPO / ".peers" / "site"
STAND_INS = REPO / "tests" / "peers_stand_ins"
PAPER = REPO / "configs" / "paper"
INSTALL = "bash scripts/install_peers.sh"
MEAN, STD = np.array([.485, .456, .406]), np.array([.229, .224, .225])
GREY_LEVELS = 2
IGNORE = 255

SEGMENTATION_CONFIGS = sorted(p.stem for p in PAPER.glob("*.yaml") if not p.stem.startswith("cifar"))


@pytest.fixture(scope="module")
def release():
    if not (SITE / "encoding" / "datasets").is_dir():
        pytest.skip(f"the peers' released code is not installed in {SITE}: run `{INSTALL}`")
    return load_release()


def load_release() -> SimpleNamespace:
    """The release's ``encoding`` package (its compiled ops stood in for, as in tests/test_peers.py)."""
    if str(SITE) not in sys.path:
        sys.path.append(str(SITE))  # after the venv's packages: the peers never replace torch or numpy
    spec = importlib.util.spec_from_file_location("peers_stand_ins.encoding_lib", STAND_INS / "encoding_lib.py")
    stand_in = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stand_in)
    sys.modules.setdefault("encoding.lib", stand_in)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import encoding.datasets
        import torchvision.transforms as transform
    # experiments/segmentation/train.py at v0.5.0: the input transform of its training and validation sets
    to_input = transform.Compose([transform.ToTensor(), transform.Normalize(MEAN.tolist(), STD.tolist())])
    return SimpleNamespace(datasets=encoding.datasets, base=sys.modules["encoding.datasets.base"], to_input=to_input)


# ------------------------------------------------------------------------------------ files in official formats

VOC_TRAIN, VOC_VAL = ["2007_000032", "2007_000039", "2008_000008"], ["2007_000033", "2008_000015"]
SBD_TRAIN, SBD_VAL = ["2007_000032", "2008_000073", "2008_000104"], ["2007_000033", "2007_000039"]
# (height, width): VOC/Context/COCO-like 500-px images, portrait and landscape, and smaller ones (padded crops)
SIZES = [(375, 500), (500, 375), (333, 500), (281, 500), (240, 320), (480, 640), (427, 640)]


def blob_labels(height: int, width: int, values, seed: int) -> np.ndarray:
    """A background (the first value) with overlapping ellipses of other values: curved label edges at every
    angle, where a half-pixel shift shows."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width]
    labels = np.full((height, width), values[0], dtype=np.uint8)
    for value in rng.choice(np.asarray(values[1:]), size=6):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        ry, rx = rng.uniform(0.1, 0.4) * height, rng.uniform(0.1, 0.4) * width
        labels[((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2 < 1] = value
    return labels


def with_void_borders(labels: np.ndarray) -> np.ndarray:
    """VOC's 255 band along every object border."""
    edge = ndimage.grey_dilation(labels, size=3) != ndimage.grey_erosion(labels, size=3)
    return np.where(edge, IGNORE, labels).astype(np.uint8)


def write_sbd_mat(path: Path, labels: np.ndarray) -> None:
    """SBD's cls/<id>.mat: the struct GTcls with Segmentation, Boundaries and CategoriesPresent."""
    import scipy.io
    import scipy.sparse

    boundaries = np.empty((20, 1), dtype=object)
    for c in range(1, 21):
        region = labels == c
        boundaries[c - 1, 0] = scipy.sparse.csc_matrix(region & ~ndimage.binary_erosion(region))
    present = np.unique(labels[labels > 0]).astype(np.uint8).reshape(-1, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(path, {"GTcls": {"Segmentation": labels.astype(np.uint8), "Boundaries": boundaries,
                                      "CategoriesPresent": present}})


def write_voc_and_sbd(root: Path) -> None:
    devkit = root / "VOCdevkit" / "VOC2012"
    sbd = root / "benchmark_RELEASE" / "dataset"
    all_ids = sorted(set(VOC_TRAIN + VOC_VAL + SBD_TRAIN + SBD_VAL))
    for n, image_id in enumerate(all_ids):
        height, width = SIZES[n % len(SIZES)]
        write_jpeg(devkit / "JPEGImages" / f"{image_id}.jpg", height, width, seed=3300 + n)
        labels = blob_labels(height, width, range(21), seed=3400 + n)
        if image_id in VOC_TRAIN + VOC_VAL:
            write_png(devkit / "SegmentationClass" / f"{image_id}.png", with_void_borders(labels), palette=True)
        if image_id in SBD_TRAIN + SBD_VAL:
            write_sbd_mat(sbd / "cls" / f"{image_id}.mat", labels)
            (sbd / "img").mkdir(parents=True, exist_ok=True)  # SBD ships its own copy of the same JPEGs
            (sbd / "img" / f"{image_id}.jpg").write_bytes((devkit / "JPEGImages" / f"{image_id}.jpg").read_bytes())
    sets = devkit / "ImageSets" / "Segmentation"
    write_list(sets / "train.txt", VOC_TRAIN)
    write_list(sets / "val.txt", VOC_VAL)
    write_list(sets / "trainval.txt", VOC_TRAIN + VOC_VAL)
    write_list(sbd / "train.txt", SBD_TRAIN)
    write_list(sbd / "val.txt", SBD_VAL)
    write_list(sbd / "trainval.txt", sorted(set(SBD_TRAIN + SBD_VAL)))  # the release's VOCaug list
    (root / "VOCaug").mkdir()
    (root / "VOCaug" / "dataset").symlink_to(sbd, target_is_directory=True)


def _polygon(cx: float, cy: float, radius: float, corners: int, seed: int) -> list[float]:
    rng = np.random.default_rng(seed)
    angles = np.sort(rng.uniform(0, 2 * np.pi, corners))
    radii = radius * rng.uniform(0.5, 1.0, corners)
    return [float(v) for a, r in zip(angles, radii) for v in (cx + r * np.cos(a), cy + r * np.sin(a))]


def _uncompressed_rle(binary: np.ndarray) -> dict:
    """COCO's crowd format: column-major run lengths, starting with a run of zeros."""
    flat = binary.flatten(order="F").astype(np.uint8)
    change = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], change, [flat.size]])).tolist()
    return {"size": list(binary.shape), "counts": ([0] if flat[0] else []) + runs}


def write_coco(root: Path) -> None:
    """person 1 → VOC 15, dog 18 → 12, cat 17 → 8; traffic light 10 is not a VOC class."""
    categories = [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}, {"id": 17, "name": "cat"},
                  {"id": 10, "name": "traffic light"}]
    plan = {  # image id: (split, size index, [(category, kind)]) — kind: polygon, crowd, small
        1: ("train", 0, [(1, "polygon"), (18, "polygon"), (10, "polygon")]),
        2: ("train", 5, [(17, "polygon"), (1, "crowd"), (18, "polygon")]),
        3: ("train", 1, [(10, "polygon")]),  # nothing of VOC's: filtered out
        4: ("train", 6, [(18, "small")]),  # 1,000 or fewer VOC pixels: filtered out
        5: ("train", 2, [(1, "polygon"), (1, "polygon")]),
        11: ("val", 6, [(18, "polygon"), (17, "polygon")]),
        12: ("val", 4, [(1, "crowd"), (17, "polygon")]),
    }
    data = {s: {"images": [], "annotations": [], "categories": categories} for s in ("train", "val")}
    for image_id, (split, size, anns) in plan.items():
        height, width = SIZES[size]
        name = f"{image_id:012d}.jpg"
        write_jpeg(root / f"{split}2017" / name, height, width, seed=3500 + image_id)
        data[split]["images"].append({"id": image_id, "file_name": name, "height": height, "width": width})
        for k, (category, kind) in enumerate(anns):
            seed = 100 * image_id + k
            if kind == "crowd":
                binary = blob_labels(height, width, [0, 1], seed) > 0
                segmentation, crowd = _uncompressed_rle(binary), 1
            else:
                rng = np.random.default_rng(seed)
                radius = 12 if kind == "small" else min(height, width) * rng.uniform(0.2, 0.45)
                cx, cy = rng.uniform(radius, width - radius), rng.uniform(radius, height - radius)
                segmentation, crowd = [_polygon(cx, cy, radius, 7, seed)], 0
            data[split]["annotations"].append({
                "id": len(data[split]["annotations"]) + 1 + 1000 * (split == "val"), "image_id": image_id,
                "category_id": category, "segmentation": segmentation, "iscrowd": crowd, "area": 1.0,
                "bbox": [0, 0, 1, 1]})
    (root / "annotations").mkdir(parents=True)
    for split, content in data.items():
        (root / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(content))


ADE_SPLITS = {"training": ["ADE_train_00000001", "ADE_train_00000002", "ADE_train_00000003"],
              "validation": ["ADE_val_00000001", "ADE_val_00000002"]}
ADE_SIZES = {"training": [(512, 683), (683, 512), (300, 451)], "validation": [(512, 683), (375, 500)]}
CONTEXT_SPLITS = {"train": ["2008_000002", "2008_000003", "2008_000007"], "val": ["2008_000009", "2010_000001"]}


def write_ade20k(root: Path) -> None:
    folder = root / "ADEChallengeData2016"
    for k, (phase, stems) in enumerate(ADE_SPLITS.items()):
        for j, stem in enumerate(stems):
            height, width = ADE_SIZES[phase][j]  # ADE20K's images: the short side is often 512
            write_jpeg(folder / "images" / phase / f"{stem}.jpg", height, width, seed=3600 + 10 * k + j)
            write_png(folder / "annotations" / phase / f"{stem}.png",
                      blob_labels(height, width, range(151), seed=3700 + 10 * k + j))


def write_pascal_context(root: Path) -> None:
    devkit = root / "VOCdevkit" / "VOC2010"
    for k, (split, ids) in enumerate(CONTEXT_SPLITS.items()):
        write_list(devkit / "ImageSets" / "SegmentationContext" / f"{split}.txt", ids)
        for j, image_id in enumerate(ids):
            height, width = SIZES[(3 * k + j + 2) % len(SIZES)]
            write_jpeg(devkit / "JPEGImages" / f"{image_id}.jpg", height, width, seed=3800 + 10 * k + j)
            write_png(devkit / "SegmentationClassContext" / f"{image_id}.png",
                      blob_labels(height, width, range(60), seed=3900 + 10 * k + j))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("official_formats")
    write_voc_and_sbd(root)
    write_coco(root / "coco")
    write_ade20k(root)
    write_pascal_context(root)
    return root


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ENCNET_CACHE", str(tmp_path / "cache"))  # the COCO filter's cache


# --------------------------------------------------------------------------------- the release's datasets


def _bypassing_init(cls, root: Path, mode: str, images: list[Path], masks: list[Path], to_input, base: int,
                    crop: int):
    """A release dataset without its ``__init__``'s checks that cannot hold on a few files (ADE20K asserts 20,210
    training images) or need a package that is not installed (PASCAL-Context's Detail API)."""
    dataset = cls.__new__(cls)
    dataset.root, dataset.split, dataset.mode = str(root), mode, mode
    dataset.transform, dataset.target_transform = to_input, None
    dataset.base_size, dataset.crop_size = base, crop
    dataset.images, dataset.masks = [str(p) for p in images], [str(p) for p in masks]
    return dataset


@dataclass
class ReleaseSide:
    """The release's dataset for one split, and how its labels compare with the suite's."""

    dataset: object
    ids: list  # the release's order of images, to match with the suite's ``ids``
    getitem: object  # index -> (normalised image tensor, label tensor), through the release's own code
    images: list  # each image's file, for its size

    def size(self, index: int) -> tuple[int, int]:
        with Image.open(self.images[index]) as image:
            return image.height, image.width


def release_side(release, dataset: str, num_classes: int | None, root: Path, mode: str, base: int,
                 crop: int) -> ReleaseSide:
    ds, kw = release.datasets, dict(transform=release.to_input, base_size=base, crop_size=crop)
    if dataset == "pascal_voc" or (dataset == "pascal_voc_aug" and mode == "val"):
        # The release's VOC-aug dataset validates on SBD's val list; the suite (and the comparison) on VOC 2012 val.
        split = "train" if mode == "train" else "val"
        d = ds.VOCSegmentation(str(root), split=split, mode=mode, **kw)
        return ReleaseSide(d, [Path(p).stem for p in d.images], d.__getitem__, d.images)
    if dataset == "pascal_voc_aug":
        d = ds.VOCAugSegmentation(str(root), split="train", mode=mode, **kw)
        return ReleaseSide(d, [Path(p).stem for p in d.images], d.__getitem__, d.images)
    if dataset == "coco_voc":
        d = ds.COCOSegmentation(str(root / "coco"), split=mode, mode=mode, **kw)
        files = [Path(d.root) / d.coco.loadImgs(i)[0]["file_name"] for i in d.ids]
        return ReleaseSide(d, [f"{i:012d}" for i in d.ids], d.__getitem__, files)
    if dataset == "ade20k":
        folder = root / "ADEChallengeData2016"
        phase = {"train": "training", "val": "validation", "testval": "validation"}[mode]
        stems = ADE_SPLITS[phase]
        d = _bypassing_init(ds.ADE20KSegmentation, root, mode,
                            [folder / "images" / phase / f"{s}.jpg" for s in stems],
                            [folder / "annotations" / phase / f"{s}.png" for s in stems], release.to_input, base, crop)
        return ReleaseSide(d, stems, d.__getitem__, d.images)
    if dataset == "pascal_context":
        devkit = root / "VOCdevkit" / "VOC2010"
        ids = CONTEXT_SPLITS["train" if mode == "train" else "val"]
        d = _bypassing_init(ds.ContextSegmentation, root, mode, [devkit / "JPEGImages" / f"{i}.jpg" for i in ids],
                            [devkit / "SegmentationClassContext" / f"{i}.png" for i in ids], release.to_input, base,
                            crop)

        def getitem(index):  # ContextSegmentation.__getitem__, with the Detail-painted mask read from the PNG
            img, mask = Image.open(d.images[index]).convert("RGB"), Image.open(d.masks[index])
            img, mask = d._sync_transform(img, mask) if mode == "train" else d._val_sync_transform(img, mask)
            return d.transform(img), mask

        return ReleaseSide(d, ids, getitem, d.images)
    raise ValueError(dataset)


def to_release_labels(mask: torch.Tensor, dataset: str, num_classes: int | None) -> np.ndarray:
    """The suite's labels in the release's coding: ignore 255 ↔ −1. The release has no 60-class PASCAL-Context
    dataset (its ContextSegmentation shifts background to −1): a 60-class mask is compared in that coding."""
    labels = mask.numpy().astype(np.int64)
    if dataset == "pascal_context" and num_classes == 60:
        labels = np.where(labels == IGNORE, IGNORE, labels - 1)
        labels[labels == -1] = IGNORE
    return np.where(labels == IGNORE, -1, labels)


# ------------------------------------------------------------------------------------ the same random draws


class ScriptedRandom:
    """Stands in for ``random`` in the release's ``base.py``: ``random()`` answers the scripted uniforms in turn;
    ``randint(a, b)`` takes the next scripted fraction of its range and records the integer it became."""

    def __init__(self, uniforms, fractions):
        self.uniforms, self.fractions, self.ints, self.ranges = list(uniforms), list(fractions), [], []

    def random(self) -> float:
        return self.uniforms.pop(0)

    def randint(self, a: int, b: int) -> int:
        value = a + min(int(self.fractions.pop(0) * (b - a + 1)), b - a)
        self.ints.append(value)
        self.ranges.append((a, b))
        return value


class ScriptedTorch:
    """``torch.rand`` / ``torch.randint`` for the suite's transforms, answering the same draws the release took:
    the same uniforms (mirror, blur, radius) and the release's integers (short side, x1, y1) in its order. A
    randint whose range does not hold the release's integer fails: the two pipelines disagree on a size."""

    def __init__(self, uniforms, ints):
        self.uniforms, self.ints = list(uniforms), list(ints)

    def rand(self, *size, **kwargs):
        if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)):
            size = tuple(size[0])
        return torch.full(size, self.uniforms.pop(0))

    def randint(self, low, high=None, size=(), **kwargs):
        low, high = (0, low) if high is None else (low, high)
        value = self.ints.pop(0)
        assert low <= value < high, f"the suite draws from [{low}, {high}) where the release drew {value}"
        return torch.tensor(value)


def _scripts(seed: int, low: int, high: int, crop: int, case: int):
    """(uniforms, fractions) of one training sample. The cases cover the smallest and largest short side, one
    exactly the crop size, both mirror and blur decisions, and crops at both ends of their range."""
    rng = np.random.default_rng(seed)
    span = high - low + 1
    short = [0.0, 0.999999, (crop - low + 0.5) / span, rng.uniform()][case % 4]
    flip, blur = [(0.2, 0.3), (0.8, 0.9), (0.4, 0.6), (rng.uniform(), rng.uniform())][case % 4]
    offsets = [(0.999999, 0.0), (0.0, 0.999999), (0.5, 0.5), (rng.uniform(), rng.uniform())][case % 4]
    radius = rng.uniform(0.3, 1.0)
    return [flip, blur, radius], [short, *offsets]


def _tie_lines(size_in: int, size_out: int) -> np.ndarray:
    """Output lines whose pixel centre maps exactly onto a source pixel boundary: (i + ½)·in/out an integer."""
    i = np.arange(size_out)
    return ((2 * i + 1) * size_in) % (2 * size_out) == 0


def _ties(source: tuple[int, int], scaled: tuple[int, int], top: int, left: int, crop: int) -> np.ndarray:
    """The crop's pixels that sit on a tied row or column of the resized label (padding has none)."""
    rows = np.zeros(crop, dtype=bool)
    cols = np.zeros(crop, dtype=bool)
    tied_rows, tied_cols = _tie_lines(source[0], scaled[0]), _tie_lines(source[1], scaled[1])
    inside_rows, inside_cols = min(crop, scaled[0] - top), min(crop, scaled[1] - left)
    rows[:inside_rows] = tied_rows[top:top + inside_rows]
    cols[:inside_cols] = tied_cols[left:left + inside_cols]
    return rows[:, None] | cols[None, :]


def release_train_size(height: int, width: int, short: int) -> tuple[int, int]:
    """base.py at v0.5.0, _sync_transform, written out."""
    if height > width:
        return int(1.0 * height * short / width), short
    return short, int(1.0 * width * short / height)


def release_val_size(height: int, width: int, crop: int) -> tuple[int, int]:
    """base.py at v0.5.0, _val_sync_transform, written out."""
    if width > height:
        return crop, int(1.0 * width * crop / height)
    return int(1.0 * height * crop / width), crop


@dataclass
class Compared:
    """One sample of both pipelines, in the release's label coding and in grey levels."""

    ours_labels: np.ndarray
    release_labels: np.ndarray
    ties: np.ndarray
    grey_difference: np.ndarray  # |ours − release| per pixel and channel, in grey levels (0..255)

    def label_mismatches(self, where: np.ndarray | None = None) -> int:
        differ = self.ours_labels != self.release_labels
        return int(differ[where].sum() if where is not None else differ.sum())


def _grey(image: torch.Tensor) -> np.ndarray:
    return (image.double().numpy() * STD[:, None, None] + MEAN[:, None, None]) * 255


def release_config(name: str, root: Path):
    """``configs/paper/<name>.yaml`` with --follow release, reading the fixtures."""
    path = PAPER / f"{name}.yaml"
    overrides = [f"data.root={root / 'coco' if 'coco' in name else root}", "data.workers=0"]
    added = [o for choice in follow_overrides(load_ledger(), "release", path, overrides) for o in choice.overrides]
    return load_config(path, [*overrides, *added])


def data_recipe(name: str) -> str:
    """What the data path of ``name`` on the release side reads and does: its resolved ``data`` section but the root
    (and the evaluation's monitor view, which picks the validation transform)."""
    config = release_config(name, Path("/fixture"))
    data = {k: v for k, v in to_dict(config)["data"].items() if k != "root"}
    return json.dumps({"data": data, "monitor_view": config.eval.monitor_view}, sort_keys=True, default=str)


def data_recipes(names: list[str]) -> dict[str, list[str]]:
    """The configs grouped by data recipe, each group named by its first config. Configs that differ only in the
    network (R50/R101, EncNet/FCN) load, scale, crop and pad identically: compared once, not once per network."""
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(data_recipe(name), []).append(name)
    return {members[0]: members for members in groups.values()}


DATA_RECIPES = data_recipes(SEGMENTATION_CONFIGS)


def compare_training_crops(release, config, root: Path, cases: int = 4):
    """Every training image of ``config`` through both pipelines, ``cases`` scripted draws each."""
    d = config.data
    crop = d.crop_size
    ours = build_dataset_for(config, d.train_split, train=True)
    theirs = release_side(release, d.dataset, d.num_classes, root, "train", d.base_size, crop)
    assert list(ours.ids) == theirs.ids  # the same images, in the same order
    low, high = int(d.base_size * d.scale_min), int(d.base_size * d.scale_max)
    out = []
    for index in range(len(ours)):
        for case in range(cases):
            uniforms, fractions = _scripts(1000 * index + case, low, high, crop, case)
            scripted = ScriptedRandom(uniforms, fractions)
            with pytest.MonkeyPatch.context() as mp:
                mp.setattr(release.base, "random", scripted)
                their_image, their_mask = theirs.getitem(index)
            short, left, top = scripted.ints
            mirrored, blurred = uniforms[0] < 0.5, uniforms[1] < 0.5
            draws = ScriptedTorch([uniforms[0], uniforms[1]] + ([uniforms[2]] if blurred else []), scripted.ints)
            with pytest.MonkeyPatch.context() as mp:
                mp.setattr(torch, "rand", draws.rand)
                mp.setattr(torch, "randint", draws.randint)
                our_image, our_mask = ours[index]
            assert not draws.uniforms and not draws.ints, "the suite took fewer draws than the release"
            assert our_image.shape == their_image.shape and our_mask.shape == their_mask.shape
            height, width = theirs.size(index)
            ties = _ties((height, width), release_train_size(height, width, short), top, left, crop)
            out.append((dict(index=index, case=case, short=short, mirrored=mirrored, blurred=blurred),
                        Compared(to_release_labels(our_mask, d.dataset, d.num_classes), their_mask.numpy(), ties,
                                 np.abs(_grey(our_image) - _grey(their_image)))))
    return out


def compare_validation_views(release, config, root: Path):
    d = config.data
    crop = d.crop_size
    ours = build_monitor_dataset(config)
    theirs = release_side(release, d.dataset, d.num_classes, root, "val", d.base_size, crop)
    assert list(ours.ids) == theirs.ids
    out = []
    for index in range(len(ours)):
        their_image, their_mask = theirs.getitem(index)
        our_image, our_mask = ours[index]
        assert our_image.shape == their_image.shape == (3, crop, crop) and our_mask.shape == their_mask.shape
        height, width = theirs.size(index)
        oh, ow = release_val_size(height, width, crop)
        ties = _ties((height, width), (oh, ow), int(round((oh - crop) / 2.0)), int(round((ow - crop) / 2.0)), crop)
        out.append((dict(index=index), Compared(to_release_labels(our_mask, d.dataset, d.num_classes),
                                                their_mask.numpy(), ties,
                                                np.abs(_grey(our_image) - _grey(their_image)))))
    return out


def _assert_equal_up_to_ties_and_resampling(results, what: str) -> None:
    tie_pixels = 0
    for where, c in results:
        off_tie = c.label_mismatches(~c.ties)
        assert off_tie == 0, f"{what} {where}: {off_tie} label pixels differ away from exact ties"
        assert c.grey_difference.max() <= GREY_LEVELS, (
            f"{what} {where}: the image differs by up to {c.grey_difference.max():.2f} grey levels "
            f"(mean {c.grey_difference.mean():.3f}); PIL vs torchvision resampling stays within {GREY_LEVELS}")
        tie_pixels += int(c.ties.sum())
    # Most pixels are compared exactly: ties take whole rows and columns only where in/out is a simple fraction
    # (512 → 576 px ties every 9th line, 21 % of the crop; a random scale almost never does).
    assert tie_pixels < 0.5 * sum(c.ties.size for _, c in results)


# --------------------------------------------------------------------------------------------- label arrays


def _ours(name: str, root: Path, split: str):
    from encnet.data import build_dataset

    return build_dataset(name, root, split)


def test_voc_palette_pngs_decode_to_the_releases_labels(release, data_root):
    theirs = release.datasets.VOCSegmentation(str(data_root), split="train", mode="train")  # reads trainval.txt
    ours = _ours("pascal_voc", data_root, "trainval")
    assert list(ours.ids) == [Path(p).stem for p in theirs.images]
    for index in range(len(ours)):
        image, labels = ours.load(index)
        # the release's own steps for one image (its 'testval' branch names an undefined `mask` and cannot run)
        their_labels = theirs._mask_transform(Image.open(theirs.masks[index])).numpy()
        assert np.array_equal(np.where(labels == IGNORE, -1, labels), their_labels)
        assert (their_labels == -1).any() and set(np.unique(their_labels)) - {-1} <= set(range(21))
        assert np.array_equal(image, np.asarray(Image.open(theirs.images[index]).convert("RGB")))


def test_sbd_mat_files_decode_to_the_releases_labels(release, data_root):
    theirs = release.datasets.VOCAugSegmentation(str(data_root), split="train", mode="train")
    ours = _ours("pascal_voc", data_root, "sbd_trainval")
    assert list(ours.ids) == [Path(p).stem for p in theirs.images] == sorted(set(SBD_TRAIN + SBD_VAL))
    for index in range(len(ours)):
        image, labels = ours.load(index)
        # _load_mat reads with mat_dtype=True, the suite without: the same for SBD's uint8 Segmentation
        their_labels = theirs._mask_transform(theirs._load_mat(theirs.masks[index])).numpy()
        assert np.array_equal(labels, their_labels) and len(np.unique(labels)) > 2
        assert np.array_equal(image, np.asarray(Image.open(theirs.images[index]).convert("RGB")))


@pytest.mark.parametrize("split", ["train", "val"])
def test_coco_instances_rasterise_to_the_releases_labels_and_filter(release, data_root, split):
    theirs = release.datasets.COCOSegmentation(str(data_root / "coco"), split=split, mode="testval")
    ours = _ours("coco_voc", data_root / "coco", split)
    assert ours.image_ids == list(theirs.ids)  # the >1,000-pixel filter keeps the same images
    assert (split, len(ours.image_ids)) in (("train", 3), ("val", 2))  # images 3 and 4 are filtered out
    for index in range(len(ours)):
        image, labels = ours.load(index)
        their_image, their_labels = theirs[index]
        assert np.array_equal(labels, their_labels.numpy())
        assert np.array_equal(image, np.asarray(their_image))
    assert {8, 12, 15} <= {int(v) for i in range(len(ours)) for v in np.unique(ours.load(i)[1])}


@pytest.mark.parametrize("split", ["train", "val"])
def test_ade20k_pngs_decode_to_the_releases_labels(release, data_root, split):
    folder = data_root / "ADEChallengeData2016"
    phase = {"train": "training", "val": "validation"}[split]
    theirs = _bypassing_init(release.datasets.ADE20KSegmentation, data_root, "testval",
                             [folder / "images" / phase / f"{s}.jpg" for s in ADE_SPLITS[phase]],
                             [folder / "annotations" / phase / f"{s}.png" for s in ADE_SPLITS[phase]], None, 520, 480)
    ours = _ours("ade20k", data_root, split)
    assert list(ours.ids) == ADE_SPLITS[phase]
    for index in range(len(ours)):
        image, labels = ours.load(index)
        their_image, their_labels = theirs[index]  # mode 'testval': the label shifted by one, unlabelled → −1
        assert np.array_equal(np.where(labels == IGNORE, -1, labels), their_labels.numpy())
        assert np.array_equal(image, np.asarray(their_image))


# ----------------------------------------------------------------------- training crops and validation views


class _Resized(Exception):
    """Raised by a stand-in for PIL's resize: the release's transform stops where it has computed its size."""


def _asking_size(self, size, *args, **kwargs):
    raise _Resized(size)


def _release_resize_size(call, image: Image.Image) -> tuple[int, int]:
    """(height, width) the release's ``call(img, mask)`` asks PIL to resize ``image`` to (PIL's resize patched)."""
    try:
        call(image, image)
    except _Resized as asked:
        width, height = asked.args[0]
        return height, width
    raise AssertionError("the release's transform did not resize")


def test_scaled_sizes_equal_the_releases_for_every_short_side_and_image_size(release, monkeypatch):
    """The size arithmetic alone, for every draw of the short side (the crops above see a few per image): at
    base/crop 520/480 and 640/576 (ADE20K ResNet-101), on the fixtures' sizes and others of the datasets."""
    from torchvision import tv_tensors

    from encnet.data.transforms import CoverCropResize, ShortSideScale

    sizes = sorted(set(SIZES) | {hw for phase in ADE_SIZES.values() for hw in phase} | {
        (366, 500), (500, 353), (335, 500), (512, 768), (1536, 2048), (480, 480), (217, 300)})
    answer = []
    monkeypatch.setattr(torch, "randint", lambda low, high, size=(): torch.tensor(answer[-1]))
    monkeypatch.setattr(Image.Image, "resize", _asking_size)
    scripted = ScriptedRandom([], [])
    monkeypatch.setattr(release.base, "random", scripted)
    for base, crop in ((520, 480), (640, 576)):
        theirs = release.base.BaseDataset("", "train", base_size=base, crop_size=crop)
        low, high = int(base * 0.5), int(base * 2.0)
        ours = ShortSideScale(base, (0.5, 2.0))
        for height, width in sizes:
            pil_image = Image.new("L", (width, height))
            image = [tv_tensors.Image(torch.zeros(1, height, width, dtype=torch.uint8))]
            for short in range(low, high + 1):
                # no mirror; the short side `short` (the offsets and blur are never reached)
                scripted.uniforms, scripted.fractions = [0.9], [(short - low + 0.5) / (high - low + 1)]
                expected = _release_resize_size(theirs._sync_transform, pil_image)
                answer.append(short)
                assert tuple(ours.make_params(image)["size"]) == expected, (height, width, short)
            expected = _release_resize_size(theirs._val_sync_transform, pil_image)
            assert tuple(CoverCropResize(crop).make_params(image)["size"]) == expected, (height, width, crop)


def test_every_config_is_compared_through_its_data_recipe():
    assert sorted(n for group in DATA_RECIPES.values() for n in group) == SEGMENTATION_CONFIGS
    # The network alone does not part two configs; the release's own sizes do (ledger ade_r101_size: the zoo's
    # ADE20K R101 trains at base 640 / crop 576), and so does a split.
    assert DATA_RECIPES["ade20k_encnet_r50"] == ["ade20k_encnet_r50", "ade20k_fcn_r50"]
    assert ["ade20k_encnet_r101"] in DATA_RECIPES.values()
    assert ["voc_aug_encnet_r101"] in DATA_RECIPES.values() and ["voc_trainval_encnet_r101"] in DATA_RECIPES.values()


@pytest.mark.parametrize("name", DATA_RECIPES)
def test_training_crops_equal_the_releases_sync_transform_on_the_release_side(release, data_root, name):
    config = release_config(name, data_root)
    d = config.data
    # --follow release: v0.5.0's recipe (short side, blur, no rotation; VOC/COCO pad with background)
    assert (d.scale_side, d.blur_prob, d.rotate_degrees, d.hflip) == ("short", 0.5, 0.0, True)
    assert d.pad_label == ("background" if d.dataset in ("pascal_voc", "pascal_voc_aug", "coco_voc") else "ignore")
    results = compare_training_crops(release, config, data_root)
    _assert_equal_up_to_ties_and_resampling(results, name)
    cases = [where for where, _ in results]
    # the scripts reached padded and unpadded crops, both mirror and blur decisions, a non-trivial blur radius
    assert {w["short"] < d.crop_size for w in cases} == {True, False}
    assert {w["mirrored"] for w in cases} == {w["blurred"] for w in cases} == {True, False}


@pytest.mark.parametrize("name", DATA_RECIPES)
def test_validation_view_equals_the_releases_val_sync_transform_on_the_release_side(release, data_root, name):
    config = release_config(name, data_root)
    assert config.eval.monitor_view == "centre_crop"
    _assert_equal_up_to_ties_and_resampling(compare_validation_views(release, config, data_root), name)
