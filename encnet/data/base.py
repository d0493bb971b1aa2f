"""What every segmentation dataset shares: reading files, turning raw labels into masks, and errors for people.

A dataset subclass lists its samples (``ids`` plus image/label paths) and gives a lookup table from the raw
label values stored on disk to training labels (0..num_classes-1, 255 = ignore, -1 = "must never occur").
``__getitem__`` then does the same three checks for every dataset: both files exist, the sizes agree, and no
raw value falls outside the table — one table lookup and one ``min()`` per mask.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torchvision import tv_tensors

IGNORE_INDEX = 255
INVALID = -1  # lookup-table entry for raw values a dataset must never contain


class DatasetNotFoundError(FileNotFoundError):
    """A dataset root, split list or file is missing; the message names the layout and the prepare command."""


class LabelValueError(ValueError):
    """A label file holds a value outside the dataset's classes."""


class LabelSizeError(ValueError):
    """An image and its label file disagree in size."""


class UnreadableFileError(OSError):
    """An image or label file exists but cannot be decoded (truncated download, disk error, wrong format)."""


def unreadable(path: Path | str, what: str, err: BaseException) -> UnreadableFileError:
    detail = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return UnreadableFileError(
        f"{path}: cannot read this {what} ({type(err).__name__}{': ' + detail if detail else ''}); the file is "
        f"truncated or corrupt: restore it from the original archive (python -m encnet.data.prepare) and check the "
        f"dataset with python -m encnet.data.check"
    )


def missing(what: str, path: Path | str, layout: str, fix: str) -> DatasetNotFoundError:
    return DatasetNotFoundError(
        f"{what} not found: {path}\nExpected layout:\n{layout.rstrip()}\nTo create it: {fix}"
    )


def read_split_list(path: Path, layout: str, fix: str) -> list[str]:
    if not path.is_file():
        raise missing("split list", path, layout, fix)
    ids = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise DatasetNotFoundError(f"split list {path} is empty\nTo recreate it: {fix}")
    return ids


def read_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.array(im.convert("RGB"))  # a writable copy: torch.from_numpy needs one


def read_label_png(path: Path) -> np.ndarray:
    # Palette PNGs (VOC) must be read as indices, never converted to RGB.
    with Image.open(path) as im:
        if im.mode not in ("P", "L", "I", "I;16"):
            raise LabelValueError(f"{path}: label PNG has mode {im.mode}; expected a single-channel (L or P) PNG")
        return np.asarray(im)


def lookup_table(size: int, pairs: dict[int, int] | None = None) -> np.ndarray:
    table = np.full(size, INVALID, dtype=np.int64)
    for raw, label in (pairs or {}).items():
        table[raw] = label
    return table


def encode_label(raw: np.ndarray, table: np.ndarray, label_path: Path | str, dataset: str) -> np.ndarray:
    """Map raw label values through ``table``; name the file and the value when one is not allowed."""
    raw = raw.astype(np.int64, copy=False)
    if raw.size and (raw.min() < 0 or raw.max() >= len(table)):
        bad = int(raw.max() if raw.max() >= len(table) else raw.min())
        raise LabelValueError(_bad_value_message(label_path, bad, table, dataset))
    mask = table[raw]
    if mask.size and mask.min() == INVALID:
        bad = int(raw[mask == INVALID][0])
        raise LabelValueError(_bad_value_message(label_path, bad, table, dataset))
    return mask


def _bad_value_message(label_path, value: int, table: np.ndarray, dataset: str) -> str:
    allowed = np.flatnonzero(table != INVALID)
    return (
        f"{label_path}: label value {value} is outside the classes of {dataset} "
        f"(allowed raw values: {_ranges(allowed)}). The file is corrupt or belongs to another dataset; "
        f"run `python -m encnet.data.check {dataset} --root ROOT --full` to list every bad file."
    )


def _ranges(values: np.ndarray) -> str:
    parts, start = [], None
    for i, v in enumerate(values):
        if start is None:
            start = v
        if i + 1 == len(values) or values[i + 1] != v + 1:
            parts.append(f"{start}" if start == v else f"{start}..{v}")
            start = None
    return ", ".join(parts)


class InMemoryClassification(torch.utils.data.Dataset):
    """Images held as one N×3×H×W uint8 tensor with integer labels (CIFAR-10, context_textures): small enough
    to live in memory, so each item is a view, not a file read."""

    images: torch.Tensor
    labels: list[int]
    transform: Callable | None

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        image = tv_tensors.Image(self.images[index])
        if self.transform is not None:
            image = self.transform(image)
        return image, self.labels[index]


class SegmentationDataset(torch.utils.data.Dataset):
    """Base for (image, mask) datasets: ``tv_tensors.Image`` uint8 C×H×W and ``tv_tensors.Mask`` int64 H×W.

    Subclasses set ``name``, ``num_classes``, ``class_names``, ``ids`` and implement ``paths(index)`` and
    ``read_raw_label(index)``; ``label_table`` maps raw label values to training labels.
    """

    name = "segmentation"
    ignore_index = IGNORE_INDEX
    num_classes: int
    class_names: Sequence[str]
    label_table: np.ndarray

    def __init__(self, transform: Callable | None = None):
        self.transform = transform
        self.ids: list[str] = []

    def __len__(self) -> int:
        return len(self.ids)

    def paths(self, index: int) -> tuple[Path, Path]:
        """(image path, label path) of sample ``index``, for reading and for error messages."""
        raise NotImplementedError

    def read_image(self, index: int) -> np.ndarray:
        return read_rgb(self.paths(index)[0])

    def read_raw_label(self, index: int) -> np.ndarray:
        return read_label_png(self.paths(index)[1])

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The checked sample as numpy arrays: image H×W×3 uint8, mask H×W int64."""
        image_path, label_path = self.paths(index)
        for path in (image_path, label_path):
            if not Path(path).exists():
                raise DatasetNotFoundError(
                    f"{path} is listed in the {self.name} split but missing on disk; "
                    f"run `python -m encnet.data.check {self.name} --root ROOT` for a full report"
                )
        image = self._read(self.read_image, index, image_path, "image")
        raw = self._read(self.read_raw_label, index, label_path, "label file")
        if image.shape[:2] != raw.shape[:2]:
            raise LabelSizeError(
                f"image {image_path} is {image.shape[1]}×{image.shape[0]} (W×H) but its label {label_path} "
                f"is {raw.shape[1]}×{raw.shape[0]}"
            )
        return image, encode_label(raw, self.label_table, label_path, self.name)

    @staticmethod
    def _read(reader, index: int, path, what: str) -> np.ndarray:
        # Decoders raise OSError, SyntaxError, ValueError, zlib.error, struct.error... without the file's name
        # (PIL: "image file is truncated"); inside a data-loader worker the name is all a person can act on.
        try:
            return reader(index)
        except (DatasetNotFoundError, LabelValueError, LabelSizeError, UnreadableFileError):
            raise
        except Exception as err:
            raise unreadable(path, what, err) from None

    def __getitem__(self, index: int):
        image, mask = self.load(index)
        image = tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1))
        mask = tv_tensors.Mask(torch.from_numpy(mask))
        if self.transform is not None:
            image, mask = self.transform(image, mask)
        return image, mask

    def __repr__(self) -> str:
        split = getattr(self, "split", "?")
        return f"{type(self).__name__}(split={split!r}, {len(self)} images, {self.num_classes} classes)"
