"""ADE20K SceneParsing (PAPER.md §6): ``ADEChallengeData2016``, 20,210 train / 2,000 val, 150 classes.

Layout (``python -m encnet.data.prepare ade20k`` extracts it from ``ADEChallengeData2016.zip``)::

    ROOT/ADEChallengeData2016/images/{training,validation}/<id>.jpg
    ROOT/ADEChallengeData2016/annotations/{training,validation}/<id>.png    values 0..150

Label 0 ("other objects") becomes the ignore label 255 and classes 1..150 become 0..149 (the benchmark's
``reduce_zero_label``). There are no split lists: a split is every image in its folder, sorted by name.
``ROOT`` may also be the ``ADEChallengeData2016`` folder itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from encnet.data.base import IGNORE_INDEX, SegmentationDataset, lookup_table, missing

CLASS_NAMES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet",
    "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk",
    "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand", "path",
    "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge", "bookcase",
    "blind", "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove", "palm",
    "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus", "towel", "light",
    "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver", "airplane",
    "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet", "poster",
    "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything", "swimming pool", "stool",
    "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step", "tank",
    "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture",
    "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate", "monitor",
    "bulletin board", "shower", "radiator", "glass", "clock", "flag",
)  # fmt: skip

LAYOUT = """\
  ROOT/ADEChallengeData2016/images/{training,validation}/<id>.jpg
  ROOT/ADEChallengeData2016/annotations/{training,validation}/<id>.png"""

SPLIT_FOLDERS = {"train": "training", "val": "validation"}


def prepare_command(root) -> str:
    return f"python -m encnet.data.prepare ade20k --src DIR_WITH(ADEChallengeData2016.zip) --root {root}"


def dataset_folder(root: Path) -> Path:
    root = Path(root)
    return root if root.name == "ADEChallengeData2016" and (root / "images").is_dir() else root / "ADEChallengeData2016"


class ADE20K(SegmentationDataset):
    name = "ade20k"
    num_classes = 150
    class_names = CLASS_NAMES

    def __init__(self, root: str | Path, split: str = "train", transform: Callable | None = None):
        super().__init__(transform)
        if split not in SPLIT_FOLDERS:
            raise ValueError(f"ade20k splits are {tuple(SPLIT_FOLDERS)}; got {split!r}")
        self.root, self.split = Path(root), split
        self.folder = dataset_folder(self.root)
        self.image_dir = self.folder / "images" / SPLIT_FOLDERS[split]
        self.label_dir = self.folder / "annotations" / SPLIT_FOLDERS[split]
        for folder in (self.image_dir, self.label_dir):
            if not folder.is_dir():
                raise missing(f"ADE20K {split} folder", folder, LAYOUT, prepare_command(root))
        self.ids = sorted(p.stem for p in self.image_dir.glob("*.jpg"))
        if not self.ids:
            raise missing(f"ADE20K {split} images (*.jpg)", self.image_dir, LAYOUT, prepare_command(root))
        self.label_table = lookup_table(
            256, {0: IGNORE_INDEX, **{v: v - 1 for v in range(1, 151)}, IGNORE_INDEX: IGNORE_INDEX}
        )

    def paths(self, index: int) -> tuple[Path, Path]:
        image_id = self.ids[index]
        return self.image_dir / f"{image_id}.jpg", self.label_dir / f"{image_id}.png"
