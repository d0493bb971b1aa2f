"""PASCAL-Context (PAPER.md §6): VOC2010 images with whole-scene labels, 4,998 train / 5,105 val.

Two on-disk layouts are read, picked automatically (``layout="auto"``):

* ``png`` — mmsegmentation's conversion, which ``python -m encnet.data.prepare pascal_context`` also writes::

      ROOT/VOCdevkit/VOC2010/JPEGImages/<id>.jpg
      ROOT/VOCdevkit/VOC2010/SegmentationClassContext/<id>.png     values 0..59, 0 = background
      ROOT/VOCdevkit/VOC2010/ImageSets/SegmentationContext/{train,val}.txt

* ``json`` — the Detail API annotation file the authors' code reads, decoded here with plain ``json`` and
  ``pycocotools`` RLE decoding (the ``detail`` package itself is not needed)::

      ROOT/VOCdevkit/VOC2010/JPEGImages/<file_name>
      ROOT/trainval_merged.json  (or ROOT/VOCdevkit/VOC2010/trainval_merged.json)

  Each image's class mask paints its segmentation annotations in file order (a later one wins, as Detail's
  ``getMask`` does); Detail category ids are then mapped to 0..59 by their rank in the sorted list of the 60 ids
  below. The released code asserts that no other id occurs; here any other id counts as background, which is
  what the 59-class benchmark means by "background".

``num_classes=59`` (the paper's ablation, "w/o background") maps background to the ignore label 255 and the
objects to 0..58; ``num_classes=60`` (the comparison table, "w/ background") keeps background as class 0.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np

from encnet.data.base import (
    IGNORE_INDEX,
    DatasetNotFoundError,
    SegmentationDataset,
    lookup_table,
    missing,
    read_split_list,
)

# Detail category ids of background + the 59 classes, in the released code's order; sorted they are 0..59.
DETAIL_IDS = (
    0, 2, 259, 260, 415, 324, 9, 258, 144, 18, 19, 22, 23, 397, 25, 284, 158, 159, 416, 33, 162, 420, 454, 295,
    296, 427, 44, 45, 46, 308, 59, 440, 445, 31, 232, 65, 354, 424, 68, 326, 72, 458, 34, 207, 80, 355, 85, 347,
    220, 349, 360, 98, 187, 104, 105, 366, 189, 368, 113, 115,
)  # fmt: skip

CLASS_NAMES_59 = (
    "aeroplane", "bag", "bed", "bedclothes", "bench", "bicycle", "bird", "boat", "book", "bottle", "building",
    "bus", "cabinet", "car", "cat", "ceiling", "chair", "cloth", "computer", "cow", "cup", "curtain", "dog",
    "door", "fence", "floor", "flower", "food", "grass", "ground", "horse", "keyboard", "light", "motorbike",
    "mountain", "mouse", "person", "plate", "platform", "pottedplant", "road", "rock", "sheep", "shelves",
    "sidewalk", "sign", "sky", "snow", "sofa", "table", "track", "train", "tree", "truck", "tvmonitor", "wall",
    "water", "window", "wood",
)  # fmt: skip

LAYOUT = """\
  ROOT/VOCdevkit/VOC2010/JPEGImages/<id>.jpg
  and either (png layout)
  ROOT/VOCdevkit/VOC2010/SegmentationClassContext/<id>.png
  ROOT/VOCdevkit/VOC2010/ImageSets/SegmentationContext/{train,val}.txt
  or (json layout, Detail API)
  ROOT/trainval_merged.json"""


def prepare_command(root) -> str:
    return (
        f"python -m encnet.data.prepare pascal_context --src DIR_WITH(VOCtrainval_03-May-2010.tar,"
        f"trainval_merged.json) --root {root}"
    )


def detail_id_table(max_id: int = 460) -> np.ndarray:
    """Detail category id → 0..59 (0 = background); ids outside the 59 classes count as background."""
    table = np.zeros(max(max_id, max(DETAIL_IDS)) + 1, dtype=np.int64)
    for rank, detail_id in enumerate(sorted(DETAIL_IDS)):
        table[detail_id] = rank
    return table


def decode_detail_mask(height: int, width: int, annotations: list[tuple[int, dict]]) -> np.ndarray:
    """Paint (category_id, RLE) annotations in order into an H×W mask of Detail category ids."""
    from pycocotools import mask as mask_utils  # optional dependency, imported only for the json layout

    mask = np.zeros((height, width), dtype=np.int64)
    for category_id, rle in annotations:
        if isinstance(rle.get("counts"), list):  # uncompressed RLE
            rle = mask_utils.frPyObjects(rle, height, width)
        mask[mask_utils.decode(rle).astype(bool)] = category_id
    return mask


class PascalContext(SegmentationDataset):
    name = "pascal_context"

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        transform: Callable | None = None,
        num_classes: int = 59,
        layout: str = "auto",
    ):
        super().__init__(transform)
        if num_classes not in (59, 60):
            raise ValueError(f"pascal_context has 59 classes (background ignored) or 60; got num_classes={num_classes}")
        if split not in ("train", "val"):
            raise ValueError(f"pascal_context splits are 'train' and 'val'; got {split!r}")
        self.root, self.split, self.num_classes = Path(root), split, num_classes
        self.devkit = self.root / "VOCdevkit" / "VOC2010"
        if not self.root.is_dir():
            raise missing("PASCAL-Context root", self.root, LAYOUT, prepare_command(root))
        self.layout = self._pick_layout(layout)

        if num_classes == 59:
            self.class_names = CLASS_NAMES_59
            pairs = {0: IGNORE_INDEX, **{v: v - 1 for v in range(1, 60)}}
        else:
            self.class_names = ("background",) + CLASS_NAMES_59
            pairs = {v: v for v in range(60)}
        pairs[IGNORE_INDEX] = IGNORE_INDEX  # some converted label sets mark unlabelled borders with 255
        self.label_table = lookup_table(256, pairs)

        if self.layout == "png":
            self.ids = read_split_list(
                self.devkit / "ImageSets" / "SegmentationContext" / f"{split}.txt", LAYOUT, prepare_command(root)
            )
        else:
            self._load_detail_json()

    def _json_path(self) -> Path | None:
        for candidate in (self.root / "trainval_merged.json", self.devkit / "trainval_merged.json"):
            if candidate.is_file():
                return candidate
        return None

    def _pick_layout(self, layout: str) -> str:
        has_png = (self.devkit / "SegmentationClassContext").is_dir()
        if layout == "auto":
            layout = "png" if has_png else "json" if self._json_path() else ""
        if layout == "png" and not has_png:
            raise missing("PASCAL-Context label folder", self.devkit / "SegmentationClassContext", LAYOUT,
                          prepare_command(self.root))
        if layout == "json" and not self._json_path():
            raise missing("PASCAL-Context Detail annotations", self.root / "trainval_merged.json", LAYOUT,
                          prepare_command(self.root))
        if layout not in ("png", "json"):
            raise missing("PASCAL-Context labels (PNG folder or trainval_merged.json)", self.devkit, LAYOUT,
                          prepare_command(self.root))
        return layout

    def _load_detail_json(self) -> None:
        with open(self._json_path()) as f:
            data = json.load(f)
        images = [img for img in data["images"] if img.get("phase") == self.split]
        wanted = {img["image_id"] for img in images}
        annotations: dict[int, list] = {i: [] for i in wanted}
        for ann in data["annos_segmentation"]:
            if ann["image_id"] in wanted:
                annotations[ann["image_id"]].append((ann["category_id"], ann["segmentation"]))
        del data  # the file also holds parts, occlusion and keypoints, which segmentation does not need
        max_id = max([cid for anns in annotations.values() for cid, _ in anns], default=0)
        self._detail_table = detail_id_table(max_id + 1)
        self._images = images
        self._annotations = [annotations[img["image_id"]] for img in images]
        self.ids = [Path(img["file_name"]).stem for img in images]
        if not self.ids:
            raise DatasetNotFoundError(f"{self._json_path()} has no images with phase {self.split!r}")

    def paths(self, index: int) -> tuple[Path, Path]:
        if self.layout == "json":
            return self.devkit / "JPEGImages" / self._images[index]["file_name"], self._json_path()
        image_id = self.ids[index]
        label = self.devkit / "SegmentationClassContext" / f"{image_id}.png"
        return self.devkit / "JPEGImages" / f"{image_id}.jpg", label

    def read_raw_label(self, index: int) -> np.ndarray:
        if self.layout == "png":
            return super().read_raw_label(index)
        img = self._images[index]
        detail = decode_detail_mask(img["height"], img["width"], self._annotations[index])
        return self._detail_table[detail]
