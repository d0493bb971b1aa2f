"""COCO mapped to VOC's 20 classes, for the pre-training stage of the VOC 2012 recipe (PAPER.md §5).

Layout (``python -m encnet.data.prepare coco`` extracts it from the official train2017.zip, val2017.zip and
annotations_trainval2017.zip)::

    ROOT/coco/{train2017,val2017}/<file_name>.jpg
    ROOT/coco/annotations/instances_{train,val}2017.json

``ROOT`` may also be the folder holding ``train2017/``, ``val2017/`` and ``annotations/`` itself (the archives
unzipped by hand), so one ``--data-root`` serves every dataset, as ``ROOT/VOCdevkit``, ``ROOT/ADEChallengeData2016``.

The instance annotations are read with ``pycocotools`` and rasterised: each annotation of one of the 20 VOC
categories paints its VOC label where nothing was painted before (the first annotation wins, as in the
released code), everything else is background 0. Crowd regions are painted like instances, as in the released
code. The released code also drops images with 1,000 or fewer labelled pixels; ``min_pixels`` does the same
(``None`` keeps every image). That filter rasterises every image once, so its result is cached under the
encnet cache folder, keyed by the annotation file's path, size and modification time.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
from pathlib import Path
from typing import Callable

import numpy as np

from encnet.data.base import SegmentationDataset, lookup_table, missing
from encnet.data.cache import default_cache_dir, write_text_atomically
from encnet.data.voc import CLASS_NAMES as VOC_CLASS_NAMES

# COCO category id of each VOC class 1..20 (aeroplane=airplane 5, ..., sofa=couch 63, tvmonitor=tv 72).
COCO_IDS_FOR_VOC = (5, 2, 16, 9, 44, 6, 3, 17, 62, 21, 67, 18, 19, 4, 1, 64, 20, 63, 7, 72)

LAYOUT = """\
  ROOT/coco/{train,val}2017/<file_name>.jpg
  ROOT/coco/annotations/instances_{train,val}2017.json"""


def prepare_command(root) -> str:
    return ("python -m encnet.data.prepare coco --src DIR_WITH(train2017.zip, val2017.zip, "
            f"annotations_trainval2017.zip) --root {root}")


def dataset_folder(root: Path) -> Path:
    root = Path(root)
    return root if (root / "annotations").is_dir() and not (root / "coco").is_dir() else root / "coco"


class COCOVOC(SegmentationDataset):
    name = "coco_voc"
    num_classes = 21
    class_names = VOC_CLASS_NAMES

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        transform: Callable | None = None,
        year: int = 2017,
        min_pixels: int | None = 1000,
    ):
        super().__init__(transform)
        if split not in ("train", "val"):
            raise ValueError(f"coco_voc splits are 'train' and 'val'; got {split!r}")
        self.root, self.split = Path(root), split
        self.folder = dataset_folder(self.root)
        self.image_dir = self.folder / f"{split}{year}"
        self.annotation_file = self.folder / "annotations" / f"instances_{split}{year}.json"
        for path in (self.image_dir, self.annotation_file):
            if not path.exists():
                raise missing(f"COCO {split}{year}", path, LAYOUT, prepare_command(root))
        self.label_table = lookup_table(256, {v: v for v in range(21)})

        from pycocotools.coco import COCO  # optional dependency, imported only when COCO is used

        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress chatter
            self.coco = COCO(str(self.annotation_file))
        self._voc_label = {coco_id: i + 1 for i, coco_id in enumerate(COCO_IDS_FOR_VOC)}
        image_ids = sorted(self.coco.getImgIds())
        if min_pixels is not None:
            image_ids = self._filtered(image_ids, min_pixels)
        self.image_ids = image_ids
        self.ids = [Path(self.coco.imgs[i]["file_name"]).stem for i in image_ids]

    def _filtered(self, image_ids: list[int], min_pixels: int) -> list[int]:
        stat = self.annotation_file.stat()
        key = f"{self.annotation_file.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{min_pixels}"
        cache = default_cache_dir() / "coco_voc" / f"{hashlib.sha1(key.encode()).hexdigest()[:16]}.json"
        if cache.is_file():
            return json.loads(cache.read_text())
        kept = [i for i in image_ids if int((self.rasterise(i) > 0).sum()) > min_pixels]
        write_text_atomically(cache, json.dumps(kept))
        return kept

    def rasterise(self, image_id: int) -> np.ndarray:
        info = self.coco.imgs[image_id]
        mask = np.zeros((info["height"], info["width"]), dtype=np.uint8)
        for ann in self.coco.loadAnns(self.coco.getAnnIds(imgIds=image_id, iscrowd=None)):
            label = self._voc_label.get(ann["category_id"])
            if label is None:
                continue
            mask[(mask == 0) & (self.coco.annToMask(ann) > 0)] = label
        return mask

    def paths(self, index: int) -> tuple[Path, Path]:
        return self.image_dir / self.coco.imgs[self.image_ids[index]]["file_name"], self.annotation_file

    def read_raw_label(self, index: int) -> np.ndarray:
        return self.rasterise(self.image_ids[index])
