"""PASCAL VOC 2012 with the SBD augmented training set (PAPER.md §6): 21 classes, 255 = ignore.

Layout (``python -m encnet.data.prepare pascal_voc`` writes it from the official archives)::

    ROOT/VOCdevkit/VOC2012/JPEGImages/<id>.jpg
    ROOT/VOCdevkit/VOC2012/SegmentationClass/<id>.png          palette PNG, values 0..20 and 255
    ROOT/VOCdevkit/VOC2012/ImageSets/Segmentation/{train,val,trainval}.txt
    train_aug, either
    ROOT/VOCdevkit/VOC2012/SegmentationClassAug/<id>.png       values 0..20 (and 255)
    ROOT/VOCdevkit/VOC2012/ImageSets/Segmentation/train_aug.txt
    or SBD as extracted from benchmark.tgz
    ROOT/benchmark_RELEASE/dataset/cls/<id>.mat                 GTcls.Segmentation, read with scipy.io
    ROOT/benchmark_RELEASE/dataset/{train,val}.txt

``train_aug`` (10,582 images) = (SBD train ∪ SBD val ∪ VOC train) − VOC val. Without a ``train_aug.txt`` the
list is computed that way. ``sbd_trainval`` (11,355 images) = SBD train ∪ SBD val, the list the released code
trains its ``pascal_aug`` stage on (``VOCaug/dataset/trainval.txt``, v0.5.0 and today). It includes VOC 2012 val
images, so a model trained on it must not be scored on VOC val (ledger entry ``voc_train_aug``). Where an image has both
an SBD and a VOC label, the SBD one is used (as the ``SegmentationClassAug`` folder that DeepLab and the authors' code
used); images only in VOC train use VOC's. mmsegmentation 1.2.2 decides the other way: its ``pascal_voc12_aug``
config concatenates VOC ``train.txt`` labelled from ``SegmentationClass`` with ``aug.txt`` (SBD − VOC train − VOC
val, from ``SegmentationClassAug``), so every VOC train image keeps VOC's PNG (with its 255 borders). Same ids, a
different label for the images in both; the paper does not say which it used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from encnet.data.base import IGNORE_INDEX, SegmentationDataset, lookup_table, missing, read_split_list

CLASS_NAMES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip

LAYOUT = """\
  ROOT/VOCdevkit/VOC2012/JPEGImages/<id>.jpg
  ROOT/VOCdevkit/VOC2012/SegmentationClass/<id>.png
  ROOT/VOCdevkit/VOC2012/ImageSets/Segmentation/{train,val,trainval}.txt
  for train_aug also: ROOT/VOCdevkit/VOC2012/SegmentationClassAug/<id>.png (+ ImageSets/Segmentation/train_aug.txt)
                  or: ROOT/benchmark_RELEASE/dataset/{cls/<id>.mat,train.txt,val.txt} (SBD)"""

SPLITS = ("train", "val", "trainval", "train_aug", "sbd_trainval")
AUG_SPLITS = ("train_aug", "sbd_trainval")  # labelled from SBD (or SegmentationClassAug) where it has the image


def prepare_command(root) -> str:
    return (
        f"python -m encnet.data.prepare pascal_voc --src DIR_WITH(VOCtrainval_11-May-2012.tar,benchmark.tgz) "
        f"--root {root}"
    )


def read_sbd_mat(path: Path) -> np.ndarray:
    """``GTcls.Segmentation`` in the dtype it is stored with. Release v0.5.0 reads it with ``mat_dtype=True``, which
    casts to the MATLAB class the file declares: the dtype may differ, the label values cannot. Compared on uint8
    files written as SBD's are (tests/test_peers_data.py); the real benchmark.tgz was not at hand."""
    import scipy.io  # imported on first use: most runs never read SBD's .mat files

    return np.asarray(scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)["GTcls"].Segmentation)


def train_aug_ids(root: Path) -> list[str]:
    """(SBD train ∪ SBD val ∪ VOC train) − VOC val, in sorted order."""
    root = Path(root)
    sets = root / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation"
    sbd = root / "benchmark_RELEASE" / "dataset"
    fix = prepare_command(root)
    ids = set(read_split_list(sets / "train.txt", LAYOUT, fix))
    for name in ("train.txt", "val.txt"):
        ids.update(read_split_list(sbd / name, LAYOUT, fix))
    return sorted(ids - set(read_split_list(sets / "val.txt", LAYOUT, fix)))


def sbd_trainval_ids(root: Path) -> list[str]:
    """SBD train ∪ SBD val, sorted: the released code's VOC-aug training list (it overlaps VOC 2012 val)."""
    sbd = Path(root) / "benchmark_RELEASE" / "dataset"
    fix = prepare_command(root)
    return sorted({i for name in ("train.txt", "val.txt") for i in read_split_list(sbd / name, LAYOUT, fix)})


class PascalVOC(SegmentationDataset):
    name = "pascal_voc"
    num_classes = 21
    class_names = CLASS_NAMES

    def __init__(self, root: str | Path, split: str = "train", transform: Callable | None = None):
        super().__init__(transform)
        split = self._resolve_split(split)
        if split not in SPLITS:
            raise ValueError(f"{self.name} splits are {SPLITS}; got {split!r}")
        self.root, self.split = Path(root), split
        self.devkit = self.root / "VOCdevkit" / "VOC2012"
        self.sbd = self.root / "benchmark_RELEASE" / "dataset"
        if not (self.devkit / "JPEGImages").is_dir():
            raise missing("PASCAL VOC 2012 images", self.devkit / "JPEGImages", LAYOUT, prepare_command(root))
        self.label_table = lookup_table(256, {**{v: v for v in range(21)}, IGNORE_INDEX: IGNORE_INDEX})

        sets = self.devkit / "ImageSets" / "Segmentation"
        if split not in AUG_SPLITS:
            self.ids = read_split_list(sets / f"{split}.txt", LAYOUT, prepare_command(root))
            self._label_source = {i: "voc" for i in self.ids}
            return
        aug_dir = self.devkit / "SegmentationClassAug"
        if split == "sbd_trainval":
            self.ids = sbd_trainval_ids(self.root)
        elif (sets / "train_aug.txt").is_file():
            self.ids = read_split_list(sets / "train_aug.txt", LAYOUT, prepare_command(root))
        else:
            self.ids = train_aug_ids(self.root)
        if aug_dir.is_dir():
            self._label_source = {i: "aug" for i in self.ids}
        elif (self.sbd / "cls").is_dir():
            self._label_source = {i: "sbd" if (self.sbd / "cls" / f"{i}.mat").is_file() else "voc" for i in self.ids}
        else:
            raise missing("train_aug labels (SegmentationClassAug or SBD cls/)", aug_dir, LAYOUT, prepare_command(root))

    def _resolve_split(self, split: str) -> str:
        return split

    def paths(self, index: int) -> tuple[Path, Path]:
        image_id = self.ids[index]
        source = self._label_source[image_id]
        if source == "aug":
            label = self.devkit / "SegmentationClassAug" / f"{image_id}.png"
        elif source == "sbd":
            label = self.sbd / "cls" / f"{image_id}.mat"
        else:
            label = self.devkit / "SegmentationClass" / f"{image_id}.png"
        return self.devkit / "JPEGImages" / f"{image_id}.jpg", label

    def read_raw_label(self, index: int) -> np.ndarray:
        label_path = self.paths(index)[1]
        if label_path.suffix == ".mat":
            return read_sbd_mat(label_path)
        return super().read_raw_label(index)


class PascalVOCAug(PascalVOC):
    """VOC 2012 for the ``pascal_aug`` recipe: split ``train`` means ``train_aug`` (10,582 images)."""

    name = "pascal_voc_aug"

    def _resolve_split(self, split: str) -> str:
        return "train_aug" if split == "train" else split
