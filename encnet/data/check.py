"""Check a prepared dataset: images per split against the official counts, and label values.

    python -m encnet.data.check DATASET --root ROOT [--full] [--sample N]

Labels are validated on an evenly spaced sample of each split (every image with ``--full``): each sample is
read through the dataset itself, so a missing file, an image/label size mismatch or a label value outside
the classes shows up exactly as training would meet it. CIFAR-10's batches are also checked against their
official md5 sums. Prints a one-screen report; exit code 1 if anything is wrong.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TextIO

import numpy as np
from tabulate import tabulate

from encnet.data import CLASSIFICATION_DATASETS, DATASETS, build_dataset
from encnet.data.base import DatasetNotFoundError, LabelSizeError, LabelValueError, UnreadableFileError

OFFICIAL_COUNTS = {
    "pascal_context": {"train": 4998, "val": 5105},
    "ade20k": {"train": 20210, "val": 2000},
    "pascal_voc_aug": {"train": 10582, "val": 1449},
    "pascal_voc": {"train": 1464, "val": 1449},
    "cifar10": {"train": 50000, "test": 10000},
    "coco_voc": {"train": None, "val": None},  # depends on the pixel filter; reported, not judged
}
MAX_LISTED_PROBLEMS = 8


def expected_counts(name: str, root: Path) -> dict[str, int | None]:
    if name in OFFICIAL_COUNTS:
        return OFFICIAL_COUNTS[name]
    meta = json.loads((Path(root) / "meta.json").read_text()) if (Path(root) / "meta.json").is_file() else {}
    if name == "context_scenes":
        return {"train": meta.get("num_train"), "val": meta.get("num_val")}
    return {"train": meta.get("num_train"), "test": meta.get("num_test")}


def _cifar_checksum_problems(root: Path) -> list[str]:
    import torchvision
    from torchvision.datasets.utils import check_integrity

    cifar = torchvision.datasets.CIFAR10
    files = cifar.train_list + cifar.test_list + [[cifar.meta["filename"], cifar.meta["md5"]]]
    folder = Path(root) / cifar.base_folder
    return [
        f"{folder / name}: md5 differs from the official {md5} (corrupt or not the official file)"
        for name, md5 in files
        if (folder / name).is_file() and not check_integrity(str(folder / name), md5)
    ]


def _sample(n: int, size: int | None) -> list[int]:
    if size is None or size >= n:
        return list(range(n))
    return sorted(set(np.linspace(0, n - 1, size).round().astype(int).tolist()))


def check_dataset(
    name: str,
    root: str | Path,
    full: bool = False,
    sample: int = 100,
    expected: dict[str, int | None] | None = None,
    checksums: bool = True,
    out: TextIO = sys.stdout,
    **dataset_kwargs,
) -> bool:
    """Print the report for ``name`` under ``root``; True when everything is as expected."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    root = Path(root)
    expected = expected if expected is not None else expected_counts(name, root)
    rows, problems, label_lines = [], [], []
    for split, count in expected.items():
        try:
            if DATASETS[name][2] is not None and not (root / "meta.json").is_file():
                # build_dataset would generate into a cache folder; a checker must not create what it checks
                raise DatasetNotFoundError(
                    f"{root} is not a generated {name} folder (no meta.json); make one with "
                    f"`python -m encnet.data.prepare {name} --root DIR`"
                )
            dataset = build_dataset(name, root, split, **dataset_kwargs)
        except (DatasetNotFoundError, FileNotFoundError, ValueError) as error:
            rows.append([split, "-", count if count is not None else "?", "MISSING"])
            problems.append(str(error))
            continue
        found = len(dataset)
        ok = count is None or found == count
        rows.append([split, found, count if count is not None else "?", "ok" if ok else "WRONG COUNT"])
        if not ok:
            problems.append(f"{split}: {found} images, the official split has {count}")
        indices = _sample(found, None if full else sample)
        bad, seen = 0, set()
        for i in indices:
            try:
                if name in CLASSIFICATION_DATASETS:
                    image, label = dataset[i]
                    if not 0 <= label < dataset.num_classes:
                        raise LabelValueError(f"{split}[{i}]: label {label} outside 0..{dataset.num_classes - 1}")
                    seen.add(label)
                else:
                    _, mask = dataset.load(i)
                    seen.update(np.unique(mask).tolist())
            except (DatasetNotFoundError, LabelValueError, LabelSizeError, UnreadableFileError, OSError) as error:
                bad += 1
                problems.append(str(error).splitlines()[0])
        seen.discard(255)
        label_lines.append(
            f"  {split}: checked {len(indices)} of {found} images, {bad} bad; "
            f"{len(seen)} of {dataset.num_classes} classes seen"
        )
    if name == "cifar10" and checksums:
        problems.extend(_cifar_checksum_problems(root))

    print(f"{name} at {root}", file=out)
    print(tabulate(rows, headers=["split", "images", "expected", "status"]), file=out)
    print(f"labels ({'all images' if full else f'sample of up to {sample} per split'}):", file=out)
    print("\n".join(label_lines) if label_lines else "  nothing to check", file=out)
    if problems:
        print(f"PROBLEMS ({len(problems)}):", file=out)
        for line in problems[:MAX_LISTED_PROBLEMS]:
            print(f"  - {line}", file=out)
        if len(problems) > MAX_LISTED_PROBLEMS:
            print(f"  ... and {len(problems) - MAX_LISTED_PROBLEMS} more", file=out)
    else:
        print("OK", file=out)
    return not problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m encnet.data.check", description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", choices=list(DATASETS))
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--full", action="store_true", help="validate the labels of every image")
    parser.add_argument("--sample", type=int, default=100, help="images per split to validate without --full")
    args = parser.parse_args(argv)
    return 0 if check_dataset(args.dataset, args.root, full=args.full, sample=args.sample) else 1


if __name__ == "__main__":
    sys.exit(main())
