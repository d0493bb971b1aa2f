"""Datasets (one file each), joint transforms and presets, generated demo data, ``prepare`` and ``check``.

``build_dataset(name, root, split, transform=None, **kwargs)`` is the one entry point the engine uses.
Importing this package imports no dataset module: pycocotools and scipy load only when COCO or SBD is read.

Segmentation datasets return ``(tv_tensors.Image uint8 C×H×W, tv_tensors.Mask int64 H×W)`` with 255 = ignore
and have ``num_classes``, ``ignore_index``, ``class_names`` and ``ids``; classification datasets return
``(tv_tensors.Image uint8, int)`` and have ``num_classes`` and ``class_names``.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

# name → (module, class, generator to run when root is not a built folder, or None)
DATASETS = {
    "pascal_context": ("encnet.data.pascal_context", "PascalContext", None),
    "pascal_voc": ("encnet.data.voc", "PascalVOC", None),
    "pascal_voc_aug": ("encnet.data.voc", "PascalVOCAug", None),
    "coco_voc": ("encnet.data.coco", "COCOVOC", None),
    "ade20k": ("encnet.data.ade20k", "ADE20K", None),
    "cifar10": ("encnet.data.cifar10", "CIFAR10", None),
    "context_scenes": ("encnet.data.context_scenes", "ContextScenes", "ensure_context_scenes"),
    "context_textures": ("encnet.data.context_textures", "ContextTextures", "ensure_context_textures"),
}

CLASSIFICATION_DATASETS = ("cifar10", "context_textures")

__all__ = ["DATASETS", "CLASSIFICATION_DATASETS", "build_dataset", "dataset_class"]


def dataset_class(name: str) -> type:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    module, cls, _ = DATASETS[name]
    return getattr(importlib.import_module(module), cls)


def build_dataset(name: str, root: str | Path | None, split: str, transform=None, **kwargs):
    """The dataset ``name`` under ``root``.

    For the generated datasets, ``root`` is either a built folder (it holds ``meta.json``) or a cache folder
    (``None``: ``$ENCNET_CACHE`` or ``~/.cache/encnet``) in which the variant described by ``kwargs``
    (``seed``, ``num_train``, ...) is built on first use. ``num_classes`` is passed to datasets that have a
    choice (PASCAL-Context: 59 or 60); for the others it must equal the dataset's own count.
    """
    cls = dataset_class(name)
    module, _, generator = DATASETS[name]
    if generator is not None:
        num_classes = kwargs.pop("num_classes", None)
        if root is None or not (Path(root) / "meta.json").is_file():
            root = getattr(importlib.import_module(module), generator)(root, **kwargs)
        elif kwargs:
            raise ValueError(f"{name}: {root} is an already built folder; generator options {kwargs} do not apply")
        dataset = cls(root, split, transform)
    else:
        if root is None:
            raise ValueError(f"{name} needs a data root (see `python -m encnet.data.prepare {name} --help`)")
        num_classes = kwargs.get("num_classes")
        if "num_classes" in kwargs and "num_classes" not in inspect.signature(cls).parameters:
            kwargs.pop("num_classes")
        dataset = cls(root, split, transform, **kwargs)
    if num_classes is not None and num_classes != dataset.num_classes:
        raise ValueError(f"{name} has {dataset.num_classes} classes; the config asks for num_classes={num_classes}")
    return dataset
