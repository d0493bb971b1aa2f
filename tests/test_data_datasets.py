"""Every real dataset layout, written tiny into tmp_path and read through build_dataset as users do."""

import sys
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors

import data_fixtures as fx
from encnet.data import build_dataset
from encnet.data.base import DatasetNotFoundError, LabelSizeError, LabelValueError


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ENCNET_CACHE", str(tmp_path / "cache"))


def assert_sample_types(image, mask):
    assert isinstance(image, tv_tensors.Image) and image.dtype == torch.uint8 and image.shape[0] == 3
    assert isinstance(mask, tv_tensors.Mask) and mask.dtype == torch.int64 and mask.shape == image.shape[1:]


def test_importing_encnet_data_loads_no_optional_dependency():
    code = "import sys, encnet.data; print(any(m in sys.modules for m in ('pycocotools', 'scipy', 'scipy.io')))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"


@pytest.mark.parametrize("num_classes", [59, 60])
def test_pascal_context_png_layout(tmp_path, num_classes):
    labels = fx.pascal_context_png(tmp_path)
    ds = build_dataset("pascal_context", tmp_path, "train", num_classes=num_classes)
    assert ds.ids == fx.CONTEXT_SPLITS["train"] and ds.num_classes == num_classes == len(ds.class_names)
    assert ds.ignore_index == 255
    for i, image_id in enumerate(ds.ids):
        image, mask = ds[i]
        assert_sample_types(image, mask)
        raw = labels[image_id].astype(np.int64)
        want = np.where(raw == 0, 255, raw - 1) if num_classes == 59 else raw
        np.testing.assert_array_equal(mask.numpy(), want)
    assert ds.class_names[0] == ("aeroplane" if num_classes == 59 else "background")
    assert len(build_dataset("pascal_context", tmp_path, "val")) == 1


def test_pascal_context_detail_json_layout(tmp_path):
    expected = fx.detail_json(tmp_path / "trainval_merged.json")
    # independent oracle of the released mapping: rank in the sorted 60 ids; other ids are background
    ids60 = sorted([0, 2, 259, 260, 415, 324, 9, 258, 144, 18, 19, 22, 23, 397, 25, 284, 158, 159, 416, 33, 162,
                    420, 454, 295, 296, 427, 44, 45, 46, 308, 59, 440, 445, 31, 232, 65, 354, 424, 68, 326, 72, 458,
                    34, 207, 80, 355, 85, 347, 220, 349, 360, 98, 187, 104, 105, 366, 189, 368, 113, 115])  # fmt: skip
    rank = np.vectorize(lambda v: ids60.index(v) if v in ids60 else 0)
    for split in ("train", "val"):
        for num_classes in (59, 60):
            ds = build_dataset("pascal_context", tmp_path, split, num_classes=num_classes)
            assert ds.layout == "json" and ds.ids == fx.CONTEXT_SPLITS[split]
            for i, image_id in enumerate(ds.ids):
                image, mask = ds[i]
                assert_sample_types(image, mask)
                want = rank(expected[image_id])
                want = np.where(want == 0, 255, want - 1) if num_classes == 59 else want
                np.testing.assert_array_equal(mask.numpy(), want)
    # spot checks against the class names: id 2 is aeroplane, 458 wood, 360 sky
    ds = build_dataset("pascal_context", tmp_path, "train", num_classes=59)
    mask = ds[0][1].numpy()
    assert ds.class_names[mask[0, 0]] == "aeroplane" and ds.class_names[mask[9, 13]] == "wood"
    assert mask[9, 0] == 255  # category 1 is not among the 59 classes


def test_pascal_voc_splits_and_palette_labels(tmp_path):
    labels = fx.voc(tmp_path, sbd=False)
    ds = build_dataset("pascal_voc", tmp_path, "train")
    assert ds.ids == fx.VOC_TRAIN and ds.num_classes == 21 and ds.class_names[15] == "person"
    for i, image_id in enumerate(ds.ids):
        image, mask = ds[i]
        assert_sample_types(image, mask)
        np.testing.assert_array_equal(mask.numpy(), labels["voc"][image_id])
    assert 255 in np.concatenate([ds[i][1].numpy().ravel() for i in range(len(ds))])
    assert len(build_dataset("pascal_voc", tmp_path, "trainval")) == 3


def test_pascal_voc_train_aug_from_sbd_mat_files(tmp_path):
    labels = fx.voc(tmp_path)
    ds = build_dataset("pascal_voc_aug", tmp_path, "train")
    assert ds.split == "train_aug" and ds.ids == fx.expected_train_aug()
    for i, image_id in enumerate(ds.ids):
        image, mask = ds[i]
        assert_sample_types(image, mask)
        want = labels["sbd"].get(image_id, labels["voc"].get(image_id))  # SBD wins where both exist
        np.testing.assert_array_equal(mask.numpy(), want)
    assert build_dataset("pascal_voc_aug", tmp_path, "val").ids == fx.VOC_VAL


def test_pascal_voc_train_aug_from_segmentation_class_aug(tmp_path):
    fx.voc(tmp_path, sbd=False)
    devkit = tmp_path / "VOCdevkit" / "VOC2012"
    aug = fx.random_labels((9, 11), range(21), seed=1)
    fx.write_png(devkit / "SegmentationClassAug" / "2007_000032.png", aug)
    fx.write_list(devkit / "ImageSets" / "Segmentation" / "train_aug.txt", ["2007_000032"])
    ds = build_dataset("pascal_voc_aug", tmp_path, "train")
    np.testing.assert_array_equal(ds[0][1].numpy(), aug)


def test_coco_voc_rasterises_voc_classes_first_annotation_wins(tmp_path):
    expected = fx.coco(tmp_path / "coco")
    # ROOT/coco, as `prepare coco` lays it out, or the folder holding train2017/ and annotations/ itself
    assert build_dataset("coco_voc", tmp_path / "coco", "train", min_pixels=None).ids == sorted(expected)
    everything = build_dataset("coco_voc", tmp_path, "train", min_pixels=None)
    assert everything.ids == sorted(expected) and everything.num_classes == 21
    for i, image_id in enumerate(everything.ids):
        image, mask = everything[i]
        assert_sample_types(image, mask)
        np.testing.assert_array_equal(mask.numpy(), expected[image_id])
    assert set(np.unique(expected["000000000001"])) == {0, 12, 15}
    # the released code's filter: images without labelled pixels go (the traffic-light-only image)
    filtered = build_dataset("coco_voc", tmp_path, "train", min_pixels=0)
    assert filtered.ids == ["000000000001", "000000000003"]
    assert len(list((tmp_path / "cache" / "coco_voc").glob("*.json"))) == 1  # cached index
    assert build_dataset("coco_voc", tmp_path, "train", min_pixels=0).ids == filtered.ids
    assert build_dataset("coco_voc", tmp_path, "train", min_pixels=10_000).ids == []


def test_ade20k_shifts_labels_and_ignores_zero(tmp_path):
    labels = fx.ade20k(tmp_path)
    for root in (tmp_path, tmp_path / "ADEChallengeData2016"):
        ds = build_dataset("ade20k", root, "train")
        assert ds.ids == ["ADE_train_00000001", "ADE_train_00000002"] and ds.num_classes == 150
        for i, image_id in enumerate(ds.ids):
            image, mask = ds[i]
            assert_sample_types(image, mask)
            raw = labels[image_id].astype(np.int64)
            np.testing.assert_array_equal(mask.numpy(), np.where(raw == 0, 255, raw - 1))
    assert len(build_dataset("ade20k", tmp_path, "val")) == 1


def test_cifar10_reads_pickle_batches(tmp_path):
    written = fx.cifar10(tmp_path)
    train = build_dataset("cifar10", tmp_path, "train")
    test = build_dataset("cifar10", tmp_path, "val")  # 'val' is 'test'
    assert len(train) == 15 and len(test) == 3 and train.num_classes == 10 and train.class_names[0] == "airplane"
    image, label = test[1]
    data, labels = written["test_batch"]
    assert isinstance(image, tv_tensors.Image) and image.dtype == torch.uint8
    np.testing.assert_array_equal(image.numpy(), data[1].reshape(3, 32, 32))
    assert label == labels[1] and isinstance(label, int)
    image, label = train[4]  # second image of data_batch_2
    np.testing.assert_array_equal(image.numpy(), written["data_batch_2"][0][1].reshape(3, 32, 32))


def test_transform_is_applied(tmp_path):
    fx.ade20k(tmp_path)
    ds = build_dataset("ade20k", tmp_path, "val", transform=lambda image, mask: (image.flip(-1), mask.flip(-1)))
    plain = build_dataset("ade20k", tmp_path, "val")
    assert torch.equal(ds[0][1], plain[0][1].flip(-1))


# --- errors are for people ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, needle, command",
    [
        ("pascal_context", "SegmentationClassContext", "prepare pascal_context"),
        ("pascal_voc", "JPEGImages", "prepare pascal_voc"),
        ("pascal_voc_aug", "JPEGImages", "prepare pascal_voc"),
        ("ade20k", "ADEChallengeData2016", "prepare ade20k"),
        ("cifar10", "cifar-10-batches-py", "prepare cifar10"),
        ("coco_voc", "instances_", "prepare coco"),
    ],
)
def test_missing_root_names_layout_and_prepare_command(tmp_path, name, needle, command):
    root = tmp_path / "nowhere"
    root.mkdir()
    with pytest.raises(FileNotFoundError) as info:
        build_dataset(name, root, "train")
    assert needle in str(info.value) and command in str(info.value) and "Expected layout" in str(info.value)


def test_missing_split_list_names_it(tmp_path):
    fx.pascal_context_png(tmp_path)
    (tmp_path / "VOCdevkit/VOC2010/ImageSets/SegmentationContext/val.txt").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"split list.*val\.txt(.|\n)*prepare pascal_context"):
        build_dataset("pascal_context", tmp_path, "val")


def test_sbd_missing_for_train_aug(tmp_path):
    fx.voc(tmp_path, sbd=False)
    with pytest.raises(DatasetNotFoundError, match="benchmark_RELEASE"):
        build_dataset("pascal_voc_aug", tmp_path, "train")


def test_label_value_outside_classes_names_file_and_value(tmp_path):
    labels = fx.ade20k(tmp_path)
    bad = labels["ADE_val_00000001"].copy()
    bad[3, 4] = 151
    path = tmp_path / "ADEChallengeData2016/annotations/validation/ADE_val_00000001.png"
    fx.write_png(path, bad)
    with pytest.raises(LabelValueError) as info:
        build_dataset("ade20k", tmp_path, "val")[0]
    assert str(path) in str(info.value) and "label value 151" in str(info.value)


def test_voc_label_value_21_is_rejected(tmp_path):
    fx.voc(tmp_path, sbd=False)
    path = tmp_path / "VOCdevkit/VOC2012/SegmentationClass/2007_000033.png"
    fx.write_png(path, np.full((np.asarray(Image.open(path)).shape), 21))
    with pytest.raises(LabelValueError, match="2007_000033.png: label value 21"):
        build_dataset("pascal_voc", tmp_path, "val")[0]


def test_size_mismatch_names_the_pair(tmp_path):
    fx.pascal_context_png(tmp_path)
    label = tmp_path / "VOCdevkit/VOC2010/SegmentationClassContext/2010_000001.png"
    fx.write_png(label, np.zeros((5, 5)))
    with pytest.raises(LabelSizeError) as info:
        build_dataset("pascal_context", tmp_path, "val")[0]
    assert "2010_000001.jpg" in str(info.value) and str(label) in str(info.value)


def test_listed_file_missing_on_disk(tmp_path):
    fx.ade20k(tmp_path)
    (tmp_path / "ADEChallengeData2016/annotations/validation/ADE_val_00000001.png").unlink()
    with pytest.raises(DatasetNotFoundError, match="ADE_val_00000001.png"):
        build_dataset("ade20k", tmp_path, "val")[0]


def test_num_classes_must_match_fixed_datasets(tmp_path):
    fx.ade20k(tmp_path)
    assert build_dataset("ade20k", tmp_path, "val", num_classes=150).num_classes == 150
    with pytest.raises(ValueError, match="150 classes"):
        build_dataset("ade20k", tmp_path, "val", num_classes=59)
    with pytest.raises(ValueError, match="unknown dataset"):
        build_dataset("imagenet", tmp_path, "val")
