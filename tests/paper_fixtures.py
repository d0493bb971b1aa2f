"""Small copies of the paper's datasets in their real on-disk layouts, at realistic image sizes.

``tests/data_fixtures.py`` writes a few tiny images per layout to test the readers; the paper smoke test
(``tests/test_paper_smoke.py``) needs the same layouts with images big enough that the paper's 480 crop and the
multi-scale windows do real work: PASCAL/VOC/COCO/ADE images of ~500×375 (the datasets' typical size).

Every writer lays out ``TRAIN_IMAGES`` training images (one batch of 2 over 2 processes, twice = 2 iterations)
and one validation image, and returns the root to give as ``data.root``. Two sizes (``FULL`` and ``SMALL``):

- ``FULL``, for the smoke test's full-size runs (the paper's 480 crop): the validation image is 500×256, so the
  multi-scale protocol resizes its long side to 260…910 px, one padded window at scales 0.5/0.75 and one row of
  windows from 1.0 on (2, 2, 2, then 3 at 1.75): 22 forward passes with flips, where a 500×375 image costs 36
  and 500×280 costs 28 (its short side passes the 480 crop at 1.75). The windows' 2-D grid is tested on small
  models in tests/test_inference.py; here the cost is ResNet-101 forwards at 480² on the CPU.
- ``SMALL``, for the runs that prove a config's own part (its settings, layout, network, hand-over and protocol
  settings) at a 64 crop: the same layouts and aspect ratios at a quarter of the side, so a ResNet-101 forward
  costs about 1/16 of a full one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import numpy as np

from data_fixtures import cifar10, write_jpeg, write_list, write_png

TRAIN_IMAGES = 4


class Sizes(NamedTuple):
    train: list[tuple[int, int]]  # (height, width) of each training image
    val: tuple[int, int]
    block: int  # side of the labels' constant regions


FULL = Sizes(train=[(375, 500), (500, 375), (333, 500), (375, 500)], val=(256, 500), block=40)  # as VOC/Context/COCO
SMALL = Sizes(train=[(94, 125), (125, 94), (83, 125), (94, 125)], val=(64, 125), block=10)


def blocky_labels(height: int, width: int, values, seed: int, block: int = FULL.block) -> np.ndarray:
    """Piecewise-constant labels (regions of ``block`` px), like a real segmentation, drawn from ``values``."""
    rng = np.random.default_rng(seed)
    grid = rng.choice(np.asarray(values), size=(-(-height // block), -(-width // block)))
    return np.kron(grid, np.ones((block, block), dtype=grid.dtype))[:height, :width].astype(np.uint8)


def _split_sizes(sizes: Sizes):
    return [("train", i, size) for i, size in enumerate(sizes.train)] + [("val", 0, sizes.val)]


def pascal_context(root: Path, sizes: Sizes = FULL) -> Path:
    """The png layout (mmsegmentation's conversion, what ``encnet.data.prepare pascal_context`` writes)."""
    devkit = root / "VOCdevkit" / "VOC2010"
    ids = {"train": [], "val": []}
    for n, (split, i, (h, w)) in enumerate(_split_sizes(sizes)):
        image_id = f"20{8 + (split == 'val'):02d}_{i + 1:06d}"
        ids[split].append(image_id)
        write_jpeg(devkit / "JPEGImages" / f"{image_id}.jpg", h, w, seed=1000 + n)
        labels = blocky_labels(h, w, range(60), 1100 + n, sizes.block)
        write_png(devkit / "SegmentationClassContext" / f"{image_id}.png", labels)
    for split, names in ids.items():
        write_list(devkit / "ImageSets" / "SegmentationContext" / f"{split}.txt", names)
    return root


def voc(root: Path, sizes: Sizes = FULL) -> Path:
    """VOC 2012 + SBD (``benchmark_RELEASE``): train_aug = (SBD train ∪ SBD val ∪ VOC train) − VOC val has
    ``TRAIN_IMAGES`` images, and so has VOC trainval (the third VOC stage's training split)."""
    import scipy.io

    devkit = root / "VOCdevkit" / "VOC2012"
    voc_train, voc_val = ["2007_000032", "2007_000039", "2007_000063"], ["2007_000033"]
    sbd_train, sbd_val = ["2007_000032", "2008_000008"], ["2007_000033", "2007_000039"]
    all_ids = sorted(set(voc_train + voc_val + sbd_train + sbd_val))
    size_of = dict(zip(all_ids, [sizes.train[0], sizes.val, *sizes.train[1:]]))
    assert size_of["2007_000033"] == sizes.val
    classes = list(range(21))
    for n, image_id in enumerate(all_ids):
        h, w = size_of[image_id]
        write_jpeg(devkit / "JPEGImages" / f"{image_id}.jpg", h, w, seed=1200 + n)
        label = blocky_labels(h, w, classes, 1300 + n, sizes.block)
        label[:, :3] = 255  # VOC's void border
        if image_id in voc_train + voc_val:
            write_png(devkit / "SegmentationClass" / f"{image_id}.png", label, palette=True)
        if image_id in sbd_train + sbd_val:
            (root / "benchmark_RELEASE" / "dataset" / "cls").mkdir(parents=True, exist_ok=True)
            sbd = np.where(label == 255, 0, label)  # SBD has no void label
            gt = {"Segmentation": sbd, "Boundaries": np.zeros((1, 1)), "CategoriesPresent": np.unique(sbd)}
            scipy.io.savemat(root / "benchmark_RELEASE" / "dataset" / "cls" / f"{image_id}.mat", {"GTcls": gt})
    sets = devkit / "ImageSets" / "Segmentation"
    write_list(sets / "train.txt", voc_train)
    write_list(sets / "val.txt", voc_val)
    write_list(sets / "trainval.txt", voc_train + voc_val)
    write_list(root / "benchmark_RELEASE" / "dataset" / "train.txt", sbd_train)
    write_list(root / "benchmark_RELEASE" / "dataset" / "val.txt", sbd_val)
    return root


def coco(root: Path, sizes: Sizes = FULL) -> Path:
    """COCO 2017 (train2017/, val2017/, annotations/instances_*.json) with person, dog and a non-VOC class;
    every image has more than the 1,000 labelled VOC pixels the dataset's filter asks for. Written under
    ``root/coco`` as `prepare coco` lays it out; ``root`` is the data root, as for the other datasets."""
    data_root, root = root, root / "coco"
    categories = [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}, {"id": 10, "name": "traffic light"}]
    per_split: dict[str, dict] = {s: {"images": [], "annotations": [], "categories": categories}
                                  for s in ("train", "val")}
    for n, (split, i, (h, w)) in enumerate(_split_sizes(sizes)):
        image_id = 100 * (split == "val") + i + 1
        name = f"{image_id:012d}.jpg"
        write_jpeg(root / f"{split}2017" / name, h, w, seed=1400 + n)
        data = per_split[split]
        data["images"].append({"id": image_id, "file_name": name, "height": h, "width": w})
        boxes = [(1, 10, 10, w // 2, h - 10), (18, w // 3, h // 4, w - 20, h // 2), (10, 0, 0, 40, 40)]
        for category_id, x0, y0, x1, y1 in boxes:
            data["annotations"].append({
                "id": len(data["annotations"]) + 1, "image_id": image_id, "category_id": category_id,
                "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]], "iscrowd": 0,
                "area": float((x1 - x0) * (y1 - y0)), "bbox": [x0, y0, x1 - x0, y1 - y0]})
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    for split, data in per_split.items():
        (root / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(data))
    return data_root


def ade20k(root: Path, sizes: Sizes = FULL) -> Path:
    folder = root / "ADEChallengeData2016"
    for n, (split, i, (h, w)) in enumerate(_split_sizes(sizes)):
        phase = {"train": "training", "val": "validation"}[split]
        stem = f"ADE_{split}_{i + 1:08d}"
        write_jpeg(folder / "images" / phase / f"{stem}.jpg", h, w, seed=1500 + n)
        labels = blocky_labels(h, w, range(151), 1600 + n, sizes.block)
        write_png(folder / "annotations" / phase / f"{stem}.png", labels)
    return root


def cifar(root: Path, sizes: Sizes = FULL) -> Path:
    """CIFAR-10's python pickles: 5 × 2 training images (a batch of 4 over 2 processes, twice), 2 test images, at
    CIFAR's own 32×32 whatever ``sizes`` says."""
    cifar10(root, per_batch=2)
    return root


# data.dataset → writer; the root each returns is the config's data.root.
WRITERS = {
    "pascal_context": pascal_context,
    "pascal_voc": voc,
    "pascal_voc_aug": voc,
    "coco_voc": coco,
    "ade20k": ade20k,
    "cifar10": cifar,
}
