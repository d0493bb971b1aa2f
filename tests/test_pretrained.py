"""Backbone weights offline (issue 36, item 3): one folder of per-backbone files serves every run, torchvision's cache
serves when pre-seeded, and a file that does not fit its backbone is refused before any run starts.

The files are what torch.save writes from real models: ``torchvision.models.resnet50().state_dict()`` (torchvision's
layout, random weights), and the release layout of the deep stem from the suite's own ``resnet50s``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
import torchvision

from encnet.engine import runs
from encnet.engine.build import build_model_for
from encnet.engine.config import load_config
from encnet.experiments.checks import FAIL, OK, weights_check
from encnet.models.backbones import build_backbone
from encnet.models.pretrained import NO_IMAGENET, PretrainedWeightsError, locate, torchvision_cache_file

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "configs" / "paper"


@pytest.fixture(scope="module")
def weights_folder(tmp_path_factory) -> Path:
    """resnet50.pth and resnet50s.pth as a --pretrained-dir folder holds them (no resnet101.pth)."""
    folder = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet50().state_dict(), folder / "resnet50.pth")
    torch.save(build_backbone("resnet50s").state_dict(), folder / "resnet50s.pth")
    return folder


def test_the_folder_serves_imagenet_for_each_backbone_and_the_weights_are_the_files(weights_folder):
    backbone = build_backbone("resnet50", "imagenet", str(weights_folder))
    saved = torch.load(weights_folder / "resnet50.pth", weights_only=True)
    assert torch.equal(backbone.layer3[2].conv2.weight, saved["layer3.2.conv2.weight"])
    assert torch.equal(backbone.bn1.running_var, saved["bn1.running_var"])
    assert locate("resnet50", "imagenet", weights_folder).source == "weights folder"


def test_the_release_side_path_of_the_ledger_is_served_by_the_folder(weights_folder):
    located = locate("resnet50s", "~/.encoding/models/resnet50s.pth", weights_folder)
    assert located.path == weights_folder / "resnet50s.pth"
    assert locate("resnet50s", "imagenet", weights_folder).path == weights_folder / "resnet50s.pth"


def test_a_backbone_file_missing_from_the_folder_names_the_file_and_the_setting(weights_folder):
    with pytest.raises(PretrainedWeightsError) as missing:
        locate("resnet101", "imagenet", weights_folder)
    assert "model.pretrained_dir" in str(missing.value) and "resnet101.pth" in str(missing.value)
    assert "resnet101-63fe2227.pth" in str(missing.value)  # which file to put there
    status, found, fix = weights_check("resnet101", "imagenet", str(weights_folder))
    assert status == FAIL and "resnet101.pth" in found + fix


def test_the_r50_file_handed_to_an_r101_run_is_refused_up_front_naming_whose_it_is(weights_folder):
    status, found, fix = weights_check("resnet101", str(weights_folder / "resnet50.pth"), "")
    assert status == FAIL and "does not fit backbone resnet101" in found and "resnet50's weights" in found, found
    assert "--pretrained-dir" in fix
    assert weights_check("resnet50", str(weights_folder / "resnet50.pth"), "")[0] == OK
    with pytest.raises(PretrainedWeightsError, match="does not fit backbone resnet101"):
        build_backbone("resnet101", str(weights_folder / "resnet50.pth"))


def test_a_pre_seeded_torchvision_cache_serves_without_a_download(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    cache = torchvision_cache_file("resnet50")
    assert cache == tmp_path / "torch_home" / "hub" / "checkpoints" / "resnet50-0676ba61.pth"
    assert locate("resnet50", "imagenet").source == "download"  # nothing there yet, nothing fetched
    cache.parent.mkdir(parents=True)
    torch.manual_seed(1)
    torch.save(torchvision.models.resnet50().state_dict(), cache)
    assert locate("resnet50", "imagenet").source == "torchvision cache"
    backbone = build_backbone("resnet50", "imagenet")  # would raise if it tried the network (none here)
    assert torch.equal(backbone.conv1.weight, torch.load(cache, weights_only=True)["conv1.weight"])


def test_files_saved_before_batchnorm_counted_batches_still_fit(tmp_path):
    state = {k: v for k, v in torchvision.models.resnet50().state_dict().items()
             if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "resnet50.pth")
    assert weights_check("resnet50", "imagenet", str(tmp_path))[0] == OK


def test_none_warns_that_the_papers_numbers_need_imagenet_weights():
    config = load_config(PAPER / "pcontext_fcn_r50.yaml", ["model.pretrained=none"])
    with pytest.warns(UserWarning, match="cannot come back"):
        build_model_for(config, 59)
    assert "cannot come back without" in NO_IMAGENET
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_model_for(config, 59, backbone_weights=False)  # evaluation: the checkpoint replaces the weights


def test_the_weights_folder_is_not_part_of_the_run_id():
    # Run ids of the paper configs as written. The CIFAR one was computed by the code before model.pretrained_dir
    # existed; the segmentation ones changed once since, with issue 33's data-path version (runs.
    # SEGMENTATION_DATA_PATH; before it: 2d173305, a4f02f90, 5497f68e), and are pinned as that change left them.
    before = {"pcontext_encnet_r50": "seed0-29243f80", "ade20k_encnet_r101": "seed0-9552f154",
              "pcontext_fcn_r50": "seed0-8e535f09", "cifar10_encnet_32k128d": "seed0-f9e7e62b"}
    for stem, run_id in before.items():
        plain = load_config(PAPER / f"{stem}.yaml")
        moved = load_config(PAPER / f"{stem}.yaml", ["model.pretrained_dir=/shared/weights"])
        assert runs.run_id(plain) == runs.run_id(moved) == run_id
