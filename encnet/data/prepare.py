"""Turn official archives a user already downloaded into the layouts the datasets read.

    python -m encnet.data.prepare pascal_context --src DIR --root ROOT   # VOCtrainval_03-May-2010.tar
                                                                         #   + trainval_merged.json
    python -m encnet.data.prepare pascal_voc     --src DIR --root ROOT   # VOCtrainval_11-May-2012.tar
                                                                         #   (+ SBD benchmark.tgz for train_aug)
    python -m encnet.data.prepare ade20k         --src DIR --root ROOT   # ADEChallengeData2016.zip
    python -m encnet.data.prepare cifar10        --src DIR --root ROOT   # cifar-10-python.tar.gz
    python -m encnet.data.prepare coco           --src DIR --root ROOT   # train2017.zip, val2017.zip
                                                                         #   + annotations_trainval2017.zip
    python -m encnet.data.prepare context_scenes   --root ROOT [--seed 0 --num-train 300 --num-val 100 --image-size 64]
    python -m encnet.data.prepare context_textures --root ROOT [--seed 0 --num-train 2000 --num-test 500]

``--src`` is a folder holding the archives (or one archive). Each dataset folder is assembled in a hidden
temporary sibling and renamed into place only when complete, so an interrupted run leaves nothing that looks
prepared; an existing dataset folder is never overwritten. A missing archive is named with the official page to
download it from (``OFFICIAL_PAGES``): the suite itself never downloads.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image
from tqdm import tqdm

from encnet.data.cache import build_dir_atomically


class PrepareError(RuntimeError):
    pass


_VOC2012 = "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/ (PASCAL VOC 2012, 'training/validation data')"
_COCO = ("https://cocodataset.org/#download (COCO 2017: '2017 Train images', '2017 Val images', "
         "'2017 Train/Val annotations')")
# Where each archive is published by the people who made it.
OFFICIAL_PAGES = {
    "VOCtrainval_03-May-2010.tar": "http://host.robots.ox.ac.uk/pascal/VOC/voc2010/ (PASCAL VOC 2010, "
                                   "'training/validation data')",
    # The Detail API's merged PASCAL-Context annotations: the file the authors' scripts/prepare_pcontext.py fetches.
    "trainval_merged.json": "https://codalabuser.blob.core.windows.net/public/trainval_merged.json (PASCAL-Context "
                            "in the Detail API's format; the dataset's page: https://cs.stanford.edu/~roozbeh/pascal-context/)",
    "VOCtrainval_11-May-2012.tar": _VOC2012,
    "benchmark.tgz": "http://home.bharathh.info/pubs/codes/SBD/download.html (the Semantic Boundaries Dataset, SBD)",
    "ADEChallengeData2016.zip": "http://sceneparsing.csail.mit.edu/ (MIT Scene Parsing Benchmark, ADE20K)",
    "cifar-10-python.tar.gz": "https://www.cs.toronto.edu/~kriz/cifar.html ('CIFAR-10 python version')",
    "train2017.zip": _COCO,
    "val2017.zip": _COCO,
    "annotations_trainval2017.zip": _COCO,
}


def find_archive(src: Path, name: str, required: bool = True) -> Path | None:
    src = Path(src)
    path = src if src.is_file() and src.name == name else src / name
    if path.is_file():
        return path
    if required:
        raise PrepareError(f"{name} not found in {src}; download it from {OFFICIAL_PAGES[name]} into {src}")
    return None


def extract(archive: Path, dest: Path, prefix: str, keep: Callable[[str], bool] = lambda rel: True) -> int:
    """Copy the archive's files under ``prefix`` to ``dest``, with the prefix stripped; returns the file count.

    Each target path is built from the member's name below ``prefix`` and refused if it would leave ``dest``,
    so a hostile archive cannot write elsewhere.
    """
    count = 0
    dest = Path(dest).resolve()

    def target_of(name: str) -> Path | None:
        if not name.startswith(prefix):
            return None
        rel = name[len(prefix) :].lstrip("/")
        if not rel or not keep(rel):
            return None
        target = (dest / rel).resolve()
        if dest not in target.parents:
            raise PrepareError(f"{archive}: member {name} points outside the target folder")
        return target

    progress = tqdm(desc=f"extract {archive.name}", unit=" files", leave=False)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                target = None if info.is_dir() else target_of(info.filename)
                if target is not None:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(info) as fin, open(target, "wb") as fout:
                        shutil.copyfileobj(fin, fout)
                    count += 1
                    progress.update()
    else:
        with tarfile.open(archive, "r:*") as tf:
            for member in tf:
                target = target_of(member.name) if member.isfile() else None
                if target is not None:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with tf.extractfile(member) as fin, open(target, "wb") as fout:
                        shutil.copyfileobj(fin, fout)
                    count += 1
                    progress.update()
    progress.close()
    if count == 0:
        raise PrepareError(f"{archive} has no files under {prefix!r}; is it the right archive?")
    return count


def _assemble(final: Path, build: Callable[[Path], None]) -> Path:
    if final.exists():
        raise PrepareError(f"{final} already exists; remove it first to prepare it again")
    build_dir_atomically(final, build)
    print(f"prepared {final}")
    return final


def save_label_png(mask: np.ndarray, path: Path) -> None:
    Image.fromarray(mask.astype(np.uint8), mode="L").save(path)


def prepare_pascal_context(src: Path, root: Path) -> Path:
    from encnet.data.pascal_context import decode_detail_mask, detail_id_table

    tar = find_archive(src, "VOCtrainval_03-May-2010.tar")
    json_path = find_archive(src, "trainval_merged.json")

    def build(tmp: Path) -> None:
        extract(tar, tmp / "JPEGImages", "VOCdevkit/VOC2010/JPEGImages/")
        with open(json_path) as f:
            data = json.load(f)
        annotations: dict[int, list] = {}
        for ann in data["annos_segmentation"]:
            annotations.setdefault(ann["image_id"], []).append((ann["category_id"], ann["segmentation"]))
        max_id = max((cid for anns in annotations.values() for cid, _ in anns), default=0)
        table = detail_id_table(max_id + 1)
        (tmp / "SegmentationClassContext").mkdir()
        splits: dict[str, list[str]] = {"train": [], "val": []}
        for img in tqdm(data["images"], desc="Detail masks -> PNG", leave=False):
            if img.get("phase") not in splits:
                continue
            stem = Path(img["file_name"]).stem
            if not (tmp / "JPEGImages" / img["file_name"]).is_file():
                raise PrepareError(f"{json_path} lists {img['file_name']}, which {tar.name} does not contain")
            mask = table[decode_detail_mask(img["height"], img["width"], annotations.get(img["image_id"], []))]
            save_label_png(mask, tmp / "SegmentationClassContext" / f"{stem}.png")
            splits[img["phase"]].append(stem)
        lists = tmp / "ImageSets" / "SegmentationContext"
        lists.mkdir(parents=True)
        for split, ids in splits.items():
            (lists / f"{split}.txt").write_text("".join(f"{i}\n" for i in sorted(ids)))

    return _assemble(Path(root) / "VOCdevkit" / "VOC2010", build)


def prepare_pascal_voc(src: Path, root: Path) -> Path:
    from encnet.data.voc import read_sbd_mat

    tar = find_archive(src, "VOCtrainval_11-May-2012.tar")
    sbd = find_archive(src, "benchmark.tgz", required=False)
    wanted = ("JPEGImages/", "SegmentationClass/", "ImageSets/Segmentation/")

    def build(tmp: Path) -> None:
        extract(tar, tmp, "VOCdevkit/VOC2012/", keep=lambda rel: rel.startswith(wanted))
        if sbd is None:
            print(f"benchmark.tgz not found in {src}: train_aug will be unavailable (VOC train/val/trainval are "
                  f"ready); SBD is published at {OFFICIAL_PAGES['benchmark.tgz']}")
            return
        sbd_dir = tmp / ".sbd"
        extract(sbd, sbd_dir, "benchmark_RELEASE/dataset/",
                keep=lambda rel: rel.startswith("cls/") or rel in ("train.txt", "val.txt"))  # fmt: skip
        read = lambda p: [line.strip() for line in p.read_text().splitlines() if line.strip()]  # noqa: E731
        sets = tmp / "ImageSets" / "Segmentation"
        voc_train, voc_val = read(sets / "train.txt"), set(read(sets / "val.txt"))
        sbd_ids = set(read(sbd_dir / "train.txt")) | set(read(sbd_dir / "val.txt"))
        train_aug = sorted((sbd_ids | set(voc_train)) - voc_val)
        aug = tmp / "SegmentationClassAug"
        aug.mkdir()
        for image_id in tqdm(train_aug, desc="train_aug labels -> PNG", leave=False):
            mat = sbd_dir / "cls" / f"{image_id}.mat"
            if mat.is_file():  # SBD's label wins where both exist (see encnet.data.voc)
                save_label_png(read_sbd_mat(mat), aug / f"{image_id}.png")
            else:
                with Image.open(tmp / "SegmentationClass" / f"{image_id}.png") as im:
                    save_label_png(np.asarray(im), aug / f"{image_id}.png")
        (sets / "train_aug.txt").write_text("".join(f"{i}\n" for i in train_aug))
        shutil.rmtree(sbd_dir)

    return _assemble(Path(root) / "VOCdevkit" / "VOC2012", build)


def prepare_ade20k(src: Path, root: Path) -> Path:
    archive = find_archive(src, "ADEChallengeData2016.zip")
    keep = lambda rel: rel.startswith(("images/", "annotations/"))  # noqa: E731
    return _assemble(
        Path(root) / "ADEChallengeData2016", lambda tmp: extract(archive, tmp, "ADEChallengeData2016/", keep=keep)
    )


def prepare_cifar10(src: Path, root: Path) -> Path:
    archive = find_archive(src, "cifar-10-python.tar.gz")
    return _assemble(Path(root) / "cifar-10-batches-py", lambda tmp: extract(archive, tmp, "cifar-10-batches-py/"))


def prepare_coco(src: Path, root: Path) -> Path:
    """COCO 2017 as ``encnet.data.coco`` reads it: the images of both splits and the two instance annotation files
    (the captions and keypoints of the annotations archive are left out)."""
    archives = {name: find_archive(src, name) for name in ("train2017.zip", "val2017.zip",
                                                            "annotations_trainval2017.zip")}
    instances = ("instances_train2017.json", "instances_val2017.json")

    def build(tmp: Path) -> None:
        extract(archives["annotations_trainval2017.zip"], tmp / "annotations", "annotations/",
                keep=lambda rel: rel in instances)
        for split in ("train2017", "val2017"):
            annotation = tmp / "annotations" / f"instances_{split}.json"
            if not annotation.is_file():
                raise PrepareError(f"annotations_trainval2017.zip has no annotations/{annotation.name}; is it the "
                                   f"2017 Train/Val annotations archive from {_COCO}?")
            extract(archives[f"{split}.zip"], tmp / split, f"{split}/")
            with open(annotation) as f:
                listed = [image["file_name"] for image in json.load(f)["images"]]
            absent = [name for name in listed if not (tmp / split / name).is_file()]
            if absent:
                raise PrepareError(f"annotations/{annotation.name} lists {len(absent)} images that {split}.zip "
                                   f"does not contain, e.g. {absent[0]}; download both again from {_COCO}")

    return _assemble(Path(root) / "coco", build)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m encnet.data.prepare", description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", choices=["pascal_context", "pascal_voc", "ade20k", "cifar10", "coco",
                                            "context_scenes", "context_textures"])  # fmt: skip
    parser.add_argument("--src", type=Path, help="folder with the downloaded archives (real datasets)")
    parser.add_argument("--root", type=Path, required=True, help="data root to prepare into")
    parser.add_argument("--seed", type=int, default=0, help="generated data: seed")
    parser.add_argument("--num-train", type=int, default=None, help="generated data: training images")
    parser.add_argument("--num-val", type=int, default=100, help="context_scenes: validation images")
    parser.add_argument("--num-test", type=int, default=500, help="context_textures: test images")
    parser.add_argument("--image-size", type=int, default=64, help="context_scenes: image side in pixels")
    args = parser.parse_args(argv)
    try:
        if args.dataset == "context_scenes":
            from encnet.data.context_scenes import ensure_context_scenes

            num_train = 300 if args.num_train is None else args.num_train
            print(ensure_context_scenes(args.root, args.seed, num_train, args.num_val, args.image_size))
            return 0
        if args.dataset == "context_textures":
            from encnet.data.context_textures import ensure_context_textures

            num_train = 2000 if args.num_train is None else args.num_train
            print(ensure_context_textures(args.root, args.seed, num_train, args.num_test))
            return 0
        if args.src is None:
            parser.error(f"{args.dataset} needs --src, the folder with the downloaded archives")
        prepare = {"pascal_context": prepare_pascal_context, "pascal_voc": prepare_pascal_voc, "coco": prepare_coco,
                   "ade20k": prepare_ade20k, "cifar10": prepare_cifar10}[args.dataset]  # fmt: skip
        prepare(args.src, args.root)
        checked = "coco_voc" if args.dataset == "coco" else args.dataset  # COCO is read as COCO mapped to VOC
        print(f"check it with: python -m encnet.data.check {checked} --root {args.root}")
        return 0
    except PrepareError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
