"""Tiny on-disk copies of every real dataset layout, written by the tests (a few images each).

Each writer returns the label arrays it wrote, so tests compare what the datasets read against what was put
on disk (the oracle), not against the datasets' own code.
"""

from __future__ import annotations

import json
import pickle
import shutil
import tarfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image


def write_jpeg(path: Path, height: int, width: int, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=95)


def write_png(path: Path, array: np.ndarray, palette: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(array.astype(np.uint8), mode="L")
    if palette:  # VOC's labels are palette PNGs
        im = im.convert("P")
        im.putpalette([v for i in range(256) for v in (i, 255 - i, (7 * i) % 256)])
    im.save(path)


def write_list(path: Path, ids) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{i}\n" for i in ids))


def random_labels(shape, values, seed) -> np.ndarray:
    return np.random.default_rng(seed).choice(np.asarray(values), size=shape).astype(np.uint8)


# --- PASCAL-Context -------------------------------------------------------------------------------------------

CONTEXT_SPLITS = {"train": ["2008_000002", "2008_000003"], "val": ["2010_000001"]}


def pascal_context_png(root: Path) -> dict[str, np.ndarray]:
    devkit = root / "VOCdevkit" / "VOC2010"
    labels = {}
    for k, (split, ids) in enumerate(CONTEXT_SPLITS.items()):
        write_list(devkit / "ImageSets" / "SegmentationContext" / f"{split}.txt", ids)
        for j, image_id in enumerate(ids):
            h, w = 12 + j, 16
            write_jpeg(devkit / "JPEGImages" / f"{image_id}.jpg", h, w, seed=10 * k + j)
            labels[image_id] = random_labels((h, w), range(60), seed=10 * k + j)
            write_png(devkit / "SegmentationClassContext" / f"{image_id}.png", labels[image_id])
    return labels


def _rle(binary: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(binary.astype(np.uint8)))
    return {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")}


def detail_json(path: Path) -> dict[str, np.ndarray]:
    """A Detail-API style trainval_merged.json; returns each image's expected Detail-id mask (later wins)."""
    h, w = 10, 14
    images, anns, expected = [], [], {}
    boxes = [  # (category_id, y0, y1, x0, x1); 1 is not one of the 59 classes, so it counts as background
        [(2, 0, 5, 0, 7), (458, 3, 10, 4, 14), (1, 8, 10, 0, 3)],
        [(284, 2, 8, 2, 12), (115, 0, 4, 0, 4)],
        [(360, 0, 10, 0, 14), (25, 4, 6, 4, 6)],
    ]
    all_ids = [i for ids in CONTEXT_SPLITS.values() for i in ids]
    phases = [s for s, ids in CONTEXT_SPLITS.items() for _ in ids]
    for n, (stem, phase, image_boxes) in enumerate(zip(all_ids, phases, boxes)):
        image_id = int(stem.replace("_", ""))
        images.append({"image_id": image_id, "file_name": f"{stem}.jpg", "height": h, "width": w, "phase": phase})
        mask = np.zeros((h, w), dtype=np.int64)
        for category_id, y0, y1, x0, x1 in image_boxes:
            binary = np.zeros((h, w), dtype=bool)
            binary[y0:y1, x0:x1] = True
            mask[binary] = category_id
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": category_id,
                         "segmentation": _rle(binary), "area": int(binary.sum()), "parts": []})  # fmt: skip
        expected[stem] = mask
        write_jpeg(path.parent / "VOCdevkit" / "VOC2010" / "JPEGImages" / f"{stem}.jpg", h, w, seed=100 + n)
    data = {"images": images, "annos_segmentation": anns, "categories": [], "parts": [], "annos_occlusion": []}
    path.write_text(json.dumps(data))
    return expected


# --- VOC 2012 + SBD -------------------------------------------------------------------------------------------

VOC_TRAIN, VOC_VAL = ["2007_000032", "2007_000039"], ["2007_000033"]
SBD_TRAIN, SBD_VAL = ["2008_000008", "2007_000039"], ["2007_000033", "2008_000015"]  # overlaps on purpose


def voc(root: Path, sbd: bool = True) -> dict[str, dict[str, np.ndarray]]:
    import scipy.io

    devkit = root / "VOCdevkit" / "VOC2012"
    labels = {"voc": {}, "sbd": {}}
    all_ids = sorted(set(VOC_TRAIN + VOC_VAL + SBD_TRAIN + SBD_VAL))
    for n, image_id in enumerate(all_ids):
        write_jpeg(devkit / "JPEGImages" / f"{image_id}.jpg", 9 + n, 11, seed=200 + n)
    for n, image_id in enumerate(VOC_TRAIN + VOC_VAL):
        h = 9 + all_ids.index(image_id)
        label = random_labels((h, 11), list(range(21)) + [255], seed=300 + n)
        labels["voc"][image_id] = label
        write_png(devkit / "SegmentationClass" / f"{image_id}.png", label, palette=True)
    sets = devkit / "ImageSets" / "Segmentation"
    write_list(sets / "train.txt", VOC_TRAIN)
    write_list(sets / "val.txt", VOC_VAL)
    write_list(sets / "trainval.txt", VOC_TRAIN + VOC_VAL)
    if sbd:
        dataset = root / "benchmark_RELEASE" / "dataset"
        (dataset / "cls").mkdir(parents=True)
        for n, image_id in enumerate(SBD_TRAIN + SBD_VAL):
            h = 9 + all_ids.index(image_id)
            label = random_labels((h, 11), range(21), seed=400 + n)
            labels["sbd"][image_id] = label
            gt = {"Segmentation": label, "Boundaries": np.zeros((1, 1)), "CategoriesPresent": np.unique(label)}
            scipy.io.savemat(dataset / "cls" / f"{image_id}.mat", {"GTcls": gt})
        write_list(dataset / "train.txt", SBD_TRAIN)
        write_list(dataset / "val.txt", SBD_VAL)
    return labels


def expected_train_aug() -> list[str]:
    return sorted((set(SBD_TRAIN) | set(SBD_VAL) | set(VOC_TRAIN)) - set(VOC_VAL))


# --- COCO ----------------------------------------------------------------------------------------------------


def coco(root: Path) -> dict[str, np.ndarray]:
    """COCO train2017 with 3 images; returns the expected VOC-label mask of each file stem."""
    h, w = 20, 24
    images = [{"id": i + 1, "file_name": f"00000000000{i + 1}.jpg", "height": h, "width": w} for i in range(3)]
    categories = [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}, {"id": 10, "name": "traffic light"}]
    anns, expected = [], {}

    def poly(x0, y0, x1, y1):
        return [[x0, y0, x1, y0, x1, y1, x0, y1]]

    # image 1: a person box then an overlapping dog box (the first annotation keeps the overlap)
    anns.append({"image_id": 1, "category_id": 1, "segmentation": poly(0, 0, 12, 10), "iscrowd": 0})
    anns.append({"image_id": 1, "category_id": 18, "segmentation": poly(6, 5, 20, 18), "iscrowd": 0})
    # image 2: only a traffic light, which is not a VOC class
    anns.append({"image_id": 2, "category_id": 10, "segmentation": poly(0, 0, 20, 20), "iscrowd": 0})
    # image 3: a crowd person given as uncompressed RLE: the top 5 rows (column-major runs)
    counts = []
    for _ in range(w):
        counts += [5, h - 5]
    crowd = {"size": [h, w], "counts": [0] + counts}
    anns.append({"image_id": 3, "category_id": 1, "segmentation": crowd, "iscrowd": 1})
    for k, a in enumerate(anns):
        a.update(id=k + 1, area=1.0, bbox=[0, 0, 1, 1])
    from pycocotools import mask as mask_utils

    for img in images:
        write_jpeg(root / "train2017" / img["file_name"], h, w, seed=500 + img["id"])
        m = np.zeros((h, w), dtype=np.uint8)
        voc_label = {1: 15, 18: 12}  # person, dog
        for a in anns:
            if a["image_id"] != img["id"] or a["category_id"] not in voc_label:
                continue
            seg = a["segmentation"]
            rles = mask_utils.frPyObjects(seg, h, w)
            binary = mask_utils.decode(mask_utils.merge(rles) if isinstance(rles, list) else rles)
            m[(m == 0) & (binary > 0)] = voc_label[a["category_id"]]
        expected[Path(img["file_name"]).stem] = m
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / "instances_train2017.json").write_text(
        json.dumps({"images": images, "annotations": anns, "categories": categories})
    )
    return expected


def coco_archives(stage: Path, src: Path) -> dict[str, np.ndarray]:
    """The three official COCO 2017 archives of the tiny COCO above, laid out as cocodataset.org publishes them:
    ``train2017.zip`` (``train2017/<file>.jpg``), ``val2017.zip`` (the first training image again, under
    ``val2017/``) and ``annotations_trainval2017.zip`` (``annotations/instances_*.json`` and a captions file that
    ``prepare`` leaves out). ``stage`` gets the unzipped layout; returns the training masks, as ``coco``."""
    expected = coco(stage)
    train = json.loads((stage / "annotations" / "instances_train2017.json").read_text())
    image = train["images"][0]
    val = {"images": [image], "annotations": [a for a in train["annotations"] if a["image_id"] == image["id"]],
           "categories": train["categories"]}
    (stage / "val2017").mkdir()
    shutil.copy(stage / "train2017" / image["file_name"], stage / "val2017" / image["file_name"])
    (stage / "annotations" / "instances_val2017.json").write_text(json.dumps(val))
    (stage / "annotations" / "captions_train2017.json").write_text(json.dumps({"annotations": []}))
    src.mkdir(parents=True, exist_ok=True)
    for folder, archive in (("train2017", "train2017.zip"), ("val2017", "val2017.zip"),
                            ("annotations", "annotations_trainval2017.zip")):
        with zipfile.ZipFile(src / archive, "w") as zf:
            zf.writestr(f"{folder}/", "")  # the official archives carry their folder as an entry of its own
            for path in sorted((stage / folder).iterdir()):
                zf.write(path, f"{folder}/{path.name}")
    return expected


# --- ADE20K --------------------------------------------------------------------------------------------------


def ade20k(root: Path) -> dict[str, np.ndarray]:
    folder = root / "ADEChallengeData2016"
    labels = {}
    for k, (split, names) in enumerate({"training": ["ADE_train_00000001", "ADE_train_00000002"],
                                        "validation": ["ADE_val_00000001"]}.items()):  # fmt: skip
        for j, stem in enumerate(names):
            write_jpeg(folder / "images" / split / f"{stem}.jpg", 10, 13 + j, seed=600 + 10 * k + j)
            labels[stem] = random_labels((10, 13 + j), range(151), seed=700 + 10 * k + j)
            write_png(folder / "annotations" / split / f"{stem}.png", labels[stem])
    return labels


# --- CIFAR-10 ------------------------------------------------------------------------------------------------


def cifar10(root: Path, per_batch: int = 3) -> dict[str, tuple[np.ndarray, list[int]]]:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    written = {}
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for n, name in enumerate(names):
        rng = np.random.default_rng(800 + n)
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=per_batch).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump({"batch_label": name, "data": data, "labels": labels, "filenames": []}, f)
        written[name] = (data, labels)
    names10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": names10, "num_cases_per_batch": per_batch}, f)
    return written


# --- archives for prepare --------------------------------------------------------------------------------------


def tar_folder(archive: Path, folder: Path, arcname: str, mode: str = "w") -> Path:
    with tarfile.open(archive, mode) as tf:
        tf.add(folder, arcname=arcname)
    return archive


def zip_folder(archive: Path, folder: Path, arcname: str) -> Path:
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, f"{arcname}/{path.relative_to(folder)}")
    return archive
