"""`prepare` turns tiny copies of the official archives into the layouts; `check` reports on them."""

import io
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import data_fixtures as fx
from encnet.data import build_dataset
from encnet.data.check import check_dataset
from encnet.data.prepare import main as prepare


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ENCNET_CACHE", str(tmp_path / "cache"))


def report(name, root, **kwargs):
    out = io.StringIO()
    ok = check_dataset(name, root, out=out, **kwargs)
    return ok, out.getvalue()


def same_samples(a, b):
    assert a.ids == b.ids and len(a) > 0
    for i in range(len(a)):
        np.testing.assert_array_equal(a[i][1].numpy(), b[i][1].numpy())
        np.testing.assert_array_equal(a[i][0].numpy(), b[i][0].numpy())


def test_pascal_context_from_tar_and_detail_json(tmp_path):
    stage, src, root = tmp_path / "stage", tmp_path / "src", tmp_path / "data"
    src.mkdir()
    fx.detail_json(stage / "trainval_merged.json")
    fx.tar_folder(src / "VOCtrainval_03-May-2010.tar", stage / "VOCdevkit", "VOCdevkit")
    shutil.copy(stage / "trainval_merged.json", src)
    assert prepare(["pascal_context", "--src", str(src), "--root", str(root)]) == 0
    for split in ("train", "val"):
        png = build_dataset("pascal_context", root, split, num_classes=60)
        assert png.layout == "png"
        same_samples(png, build_dataset("pascal_context", stage, split, num_classes=60))  # the json layout

    ok, text = report("pascal_context", root, expected={"train": 2, "val": 1})
    assert ok and text.rstrip().endswith("OK") and "checked 2 of 2 images, 0 bad" in text
    ok, text = report("pascal_context", root)  # the official 4,998 / 5,105
    assert not ok and "WRONG COUNT" in text and "4998" in text and "5105" in text
    # an existing dataset is never overwritten
    assert prepare(["pascal_context", "--src", str(src), "--root", str(root)]) == 1


def test_failed_prepare_leaves_nothing_that_looks_prepared(tmp_path, capsys):
    stage, src, root = tmp_path / "stage", tmp_path / "src", tmp_path / "data"
    src.mkdir()
    fx.detail_json(stage / "trainval_merged.json")
    (stage / "VOCdevkit/VOC2010/JPEGImages/2010_000001.jpg").unlink()  # the json lists an image the tar lacks
    fx.tar_folder(src / "VOCtrainval_03-May-2010.tar", stage / "VOCdevkit", "VOCdevkit")
    shutil.copy(stage / "trainval_merged.json", src)
    assert prepare(["pascal_context", "--src", str(src), "--root", str(root)]) == 1
    assert "2010_000001.jpg" in capsys.readouterr().err
    assert list((root / "VOCdevkit").iterdir()) == []  # neither VOC2010 nor a temporary folder


@pytest.mark.parametrize("dataset, present, archive, page", [
    ("pascal_context", (), "VOCtrainval_03-May-2010.tar", "http://host.robots.ox.ac.uk/pascal/VOC/voc2010/"),
    ("pascal_context", ("VOCtrainval_03-May-2010.tar",), "trainval_merged.json",
     "https://codalabuser.blob.core.windows.net/public/trainval_merged.json"),
    ("pascal_voc", (), "VOCtrainval_11-May-2012.tar", "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/"),
    ("ade20k", (), "ADEChallengeData2016.zip", "http://sceneparsing.csail.mit.edu/"),
    ("cifar10", (), "cifar-10-python.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar.html"),
    ("coco", (), "train2017.zip", "https://cocodataset.org/#download"),
    ("coco", ("train2017.zip", "val2017.zip"), "annotations_trainval2017.zip", "https://cocodataset.org/#download"),
])
def test_a_missing_archive_is_named_with_its_official_page(tmp_path, capsys, dataset, present, archive, page):
    src = tmp_path / "src"
    src.mkdir()
    for name in present:
        (src / name).write_bytes(b"")
    assert prepare([dataset, "--src", str(src), "--root", str(tmp_path / "data")]) == 1
    err = capsys.readouterr().err
    assert f"{archive} not found in {src}; download it from {page}" in err
    assert not (tmp_path / "data").exists() or list((tmp_path / "data").iterdir()) == []


def test_pascal_voc_without_sbd_names_where_sbd_is(tmp_path, capsys):
    stage, src, root = tmp_path / "stage", tmp_path / "src", tmp_path / "data"
    src.mkdir()
    fx.voc(stage, sbd=False)
    fx.tar_folder(src / "VOCtrainval_11-May-2012.tar", stage / "VOCdevkit", "VOCdevkit")
    assert prepare(["pascal_voc", "--src", str(src), "--root", str(root)]) == 0
    assert "train_aug will be unavailable" in (out := capsys.readouterr().out)
    assert "http://home.bharathh.info/pubs/codes/SBD/download.html" in out


def test_coco_from_the_three_official_2017_archives(tmp_path, capsys):
    stage, src, root = tmp_path / "stage", tmp_path / "src", tmp_path / "data"
    fx.coco_archives(stage, src)
    assert prepare(["coco", "--src", str(src), "--root", str(root)]) == 0
    assert "check it with: python -m encnet.data.check coco_voc --root" in capsys.readouterr().out
    folder = root / "coco"
    assert sorted(p.name for p in root.iterdir()) == ["coco"]  # nothing else, no temporary folder left
    assert sorted(p.name for p in folder.iterdir()) == ["annotations", "train2017", "val2017"]
    assert sorted(p.name for p in (folder / "annotations").iterdir()) == ["instances_train2017.json",
                                                                         "instances_val2017.json"]
    for split in ("train", "val"):  # what the prepared layout reads equals what the unzipped archives read
        same_samples(build_dataset("coco_voc", root, split, min_pixels=None),
                     build_dataset("coco_voc", stage, split, min_pixels=None))
    assert prepare(["coco", "--src", str(src), "--root", str(root)]) == 1  # never overwritten


def test_coco_whose_annotations_list_a_missing_image_leaves_nothing(tmp_path, capsys):
    stage, src, root = tmp_path / "stage", tmp_path / "src", tmp_path / "data"
    fx.coco_archives(stage, src)
    with zipfile.ZipFile(src / "val2017.zip", "w") as zf:  # another image than the one the annotations list
        zf.write(stage / "train2017" / "000000000002.jpg", "val2017/000000000002.jpg")
    assert prepare(["coco", "--src", str(src), "--root", str(root)]) == 1
    err = capsys.readouterr().err
    assert "instances_val2017.json lists 1 images that val2017.zip does not contain" in err
    assert "000000000001.jpg" in err and "https://cocodataset.org/#download" in err
    assert list(root.iterdir()) == []  # neither coco/ nor a temporary folder


def test_pascal_voc_with_sbd_makes_train_aug(tmp_path):
    stage, src, root = tmp_path / "stage", tmp_path / "src", tmp_path / "data"
    src.mkdir()
    fx.voc(stage)
    fx.tar_folder(src / "VOCtrainval_11-May-2012.tar", stage / "VOCdevkit", "VOCdevkit")
    fx.tar_folder(src / "benchmark.tgz", stage / "benchmark_RELEASE", "benchmark_RELEASE", mode="w:gz")
    assert prepare(["pascal_voc", "--src", str(src), "--root", str(root)]) == 0
    assert not (root / "benchmark_RELEASE").exists()  # SBD was converted, not copied
    prepared = build_dataset("pascal_voc_aug", root, "train")
    assert (root / "VOCdevkit/VOC2012/ImageSets/Segmentation/train_aug.txt").is_file()
    same_samples(prepared, build_dataset("pascal_voc_aug", stage, "train"))  # read from SBD .mat directly
    same_samples(build_dataset("pascal_voc", root, "val"), build_dataset("pascal_voc", stage, "val"))
    ok, text = report("pascal_voc_aug", root, expected={"train": len(fx.expected_train_aug()), "val": 1})
    assert ok, text


def test_ade20k_from_zip_and_label_errors_in_the_report(tmp_path):
    stage, src, root = tmp_path / "stage", tmp_path / "src", tmp_path / "data"
    src.mkdir()
    labels = fx.ade20k(stage)
    fx.zip_folder(src / "ADEChallengeData2016.zip", stage / "ADEChallengeData2016", "ADEChallengeData2016")
    assert prepare(["ade20k", "--src", str(src), "--root", str(root)]) == 0
    same_samples(build_dataset("ade20k", root, "train"), build_dataset("ade20k", stage, "train"))
    ok, text = report("ade20k", root, expected={"train": 2, "val": 1})
    assert ok, text

    bad = labels["ADE_train_00000002"].copy()
    bad[0, 0] = 200
    fx.write_png(root / "ADEChallengeData2016/annotations/training/ADE_train_00000002.png", bad)
    fx.write_png(root / "ADEChallengeData2016/annotations/validation/ADE_val_00000001.png", np.zeros((3, 3)))
    ok, text = report("ade20k", root, expected={"train": 2, "val": 1}, full=True)
    assert not ok
    assert "ADE_train_00000002.png: label value 200" in text
    assert "ADE_val_00000001.jpg" in text and "ADE_val_00000001.png" in text  # the size mismatch names the pair
    assert "1 bad" in text


def test_cifar10_from_tar_gz_and_checksums(tmp_path):
    stage, src, root = tmp_path / "stage", tmp_path / "src", tmp_path / "data"
    src.mkdir()
    fx.cifar10(stage)
    fx.tar_folder(src / "cifar-10-python.tar.gz", stage / "cifar-10-batches-py", "cifar-10-batches-py", mode="w:gz")
    assert prepare(["cifar10", "--src", str(src), "--root", str(root)]) == 0
    assert len(build_dataset("cifar10", root, "train")) == 15
    ok, text = report("cifar10", root, expected={"train": 15, "test": 3}, checksums=False)
    assert ok, text
    ok, text = report("cifar10", root, expected={"train": 15, "test": 3})
    assert not ok and "md5 differs" in text and "data_batch_1" in text


def test_generated_data_via_prepare_and_check(tmp_path, capsys):
    assert prepare(["context_scenes", "--root", str(tmp_path), "--num-train", "6", "--num-val", "3",
                    "--image-size", "32"]) == 0  # fmt: skip
    folder = tmp_path / cs_folder()
    assert capsys.readouterr().out.strip() == str(folder)
    ok, text = report("context_scenes", folder)
    assert ok and "checked 6 of 6 images" in text
    assert build_dataset("context_scenes", tmp_path, "val", num_train=6, num_val=3, image_size=32).root == folder
    ok, text = report("context_scenes", tmp_path)  # a cache folder is not a dataset: reported, not generated
    assert not ok and "no meta.json" in text
    assert prepare(["context_textures", "--root", str(tmp_path), "--num-train", "20", "--num-test", "10"]) == 0
    ok, text = report("context_textures", capsys.readouterr().out.strip())
    assert ok, text


def cs_folder():
    from encnet.data.context_scenes import folder_name

    return folder_name(0, 6, 3, 32)


def test_check_command_line_exit_codes(tmp_path):
    fx.ade20k(tmp_path)
    run = subprocess.run([sys.executable, "-m", "encnet.data.check", "ade20k", "--root", str(tmp_path)],
                         capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 1 and "20210" in run.stdout and "WRONG COUNT" in run.stdout
    assert len(run.stdout.splitlines()) < 25  # one screen
