"""CIFAR-10 (PAPER.md §6–7): the python pickle batches, 50,000 train / 10,000 test, read by torchvision.

Layout (``python -m encnet.data.prepare cifar10`` extracts ``cifar-10-python.tar.gz``)::

    ROOT/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}

Samples are ``(tv_tensors.Image uint8 3×32×32, int label)``; ``transform`` sees the image only. Split ``val``
is accepted as another name for ``test`` so a trainer can use one name for its evaluation split.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
import torchvision

from encnet.data.base import InMemoryClassification, missing

CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

LAYOUT = """\
  ROOT/cifar-10-batches-py/data_batch_1 ... data_batch_5
  ROOT/cifar-10-batches-py/test_batch
  ROOT/cifar-10-batches-py/batches.meta"""


def prepare_command(root) -> str:
    return f"python -m encnet.data.prepare cifar10 --src DIR_WITH(cifar-10-python.tar.gz) --root {root}"


class _CIFAR10Batches(torchvision.datasets.CIFAR10):
    # torchvision hashes every batch on each construction; `python -m encnet.data.check cifar10` verifies the
    # official md5 sums once instead, so here a batch only has to be present.
    train_list = [[name, None] for name, _ in torchvision.datasets.CIFAR10.train_list]
    test_list = [[name, None] for name, _ in torchvision.datasets.CIFAR10.test_list]
    meta = {**torchvision.datasets.CIFAR10.meta, "md5": None}


class CIFAR10(InMemoryClassification):
    name = "cifar10"
    num_classes = 10
    class_names = CLASS_NAMES

    def __init__(self, root: str | Path, split: str = "train", transform: Callable | None = None):
        split = "test" if split == "val" else split
        if split not in ("train", "test"):
            raise ValueError(f"cifar10 splits are 'train' and 'test' (or 'val'); got {split!r}")
        self.root, self.split, self.transform = Path(root), split, transform
        try:
            batches = _CIFAR10Batches(str(self.root), train=split == "train", download=False)
        except RuntimeError as error:
            folder = self.root / "cifar-10-batches-py"
            raise missing("CIFAR-10 batches", folder, LAYOUT, prepare_command(root)) from error
        self.images = torch.from_numpy(batches.data).permute(0, 3, 1, 2)  # N×3×32×32 uint8
        self.labels = [int(t) for t in batches.targets]
