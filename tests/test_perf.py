"""Issue 16's pieces that are not timings: the decoder choice (equal output), the paper cost table built from
results files, the train.channels_last switch both ways, and the ledger's note on training precision."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from encnet.engine import runs
from encnet.engine.config import load_config, to_dict
from encnet.data.base import read_rgb
from encnet.report.benchmarks import NOT_MEASURED, build_paper_cost_markdown, load_results, paper_cost_frame

REPO = Path(__file__).resolve().parent.parent
FIXTURE = REPO / "tests" / "fixtures" / "bench" / "train_step-fixture-gpu.json"
PAPER_CONFIGS = REPO / "configs" / "paper"


def _load_bench(name: str):
    sys.path.insert(0, str(REPO / "bench"))
    try:
        spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "bench" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(REPO / "bench"))
    return module


# ---------------------------------------------------------------------------------------------- decoders


@pytest.mark.parametrize("mode,subsampling,size", [("RGB", 2, (500, 375)), ("RGB", 0, (333, 251)),
                                                    ("RGB", 1, (17, 9)), ("L", 2, (375, 500))])
def test_torchvision_decode_jpeg_gives_the_pixels_pil_gives(tmp_path, mode, subsampling, size):
    """Both are libjpeg-turbo with the same settings (islow DCT, fancy upsampling): bit-identical, no tolerance."""
    bench = _load_bench("data_pipeline")
    rng = np.random.default_rng(1)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    array = np.clip(rng.normal(128, 60, shape).cumsum(axis=1) / 8 % 256, 0, 255).astype(np.uint8)
    path = tmp_path / "x.jpg"
    Image.fromarray(array, mode=mode).save(path, quality=85, subsampling=subsampling)
    oracle = torch.from_numpy(read_rgb(path)).permute(2, 0, 1)  # the datasets' reader (PIL)
    decoded = bench.decode_torchvision(path)
    assert decoded.dtype == torch.uint8 and decoded.shape == (3, size[1], size[0])
    assert torch.equal(decoded, oracle)


def test_both_v2_paths_give_the_same_samples_and_the_pil_recipe_a_different_one(tmp_path):
    bench = _load_bench("data_pipeline")
    pairs = bench.generate_images(tmp_path, 4, shrink=6)
    paths = bench.make_paths(base_size=90, crop_size=80)
    pil_v2, tv_v2 = (bench.run_path(paths[name], pairs, seed=3) for name in ("pil+v2", "torchvision+v2"))
    for (ia, ma), (ib, mb) in zip(pil_v2, tv_v2):
        assert ia.shape == (3, 80, 80) and ia.dtype == torch.float32 and ma.dtype == torch.int64
        assert torch.equal(ia, ib) and torch.equal(ma, mb)
    assert bench.max_abs_diff(pil_v2, tv_v2) == 0
    # Another seed draws other crops: the equality above is not two constant outputs.
    assert bench.max_abs_diff(pil_v2, bench.run_path(paths["pil+v2"], pairs, seed=4)) > 0
    pil = bench.run_path(paths["pil"], pairs, seed=3)
    assert all(i.shape == (3, 80, 80) for i, _ in pil) and bench.max_abs_diff(pil, pil_v2) > 0


def test_workers_needed_rounds_up():
    bench = _load_bench("data_pipeline")
    assert bench.workers_needed(127.1, 69.46) == 2 and bench.workers_needed(5.0, 69.0) == 1
    assert bench.workers_needed(139.0, 69.5) == 2 and bench.workers_needed(139.1, 69.5) == 3


# -------------------------------------------------------------------------------------------- cost table


def test_paper_cost_table_from_a_fixture_results_file(tmp_path):
    results_dir = tmp_path / "results"
    results_dir.mkdir()
    shutil.copy(FIXTURE, results_dir / FIXTURE.name)
    # A quick run and a CPU run must not fill cells: only non-quick GPU train-step rows do.
    record = json.loads(FIXTURE.read_text())
    for name, change in {"quick": {"quick": True, "device": "quick-gpu"}, "cpu": {"device": "cpu"}}.items():
        other = {**record, **change,
                 "rows": [{**r, "step_s": 99.0, "peak_MiB": 1.0} for r in record["rows"]]}
        (results_dir / f"train_step-{name}.json").write_text(json.dumps(other))
    frame = paper_cost_frame(load_results(results_dir), PAPER_CONFIGS).set_index("experiment")
    assert len(frame) == len(list(PAPER_CONFIGS.glob("*.yaml")))

    r50 = frame.loc["pcontext_encnet_r50"]
    # By hand: 80 epochs × ⌊4,998 / 16⌋ = 80 × 312 iterations; 0.5 s each; 40,960 MiB.
    assert r50["iterations"] == 24_960
    assert r50["step_s"] == 0.5 and r50["gpu_hours"] == round(24_960 * 0.5 / 3600, 1) == 3.5
    assert r50["peak_GiB"] == 40.0 and "Fixture GPU 80GB" in r50["measured_on"]
    # configs/paper/ade20k_encnet_r50.yaml: 120 epochs (paper §3.1 and release v0.5.0; ledger ade_lr)
    assert frame.loc["ade20k_encnet_r50"]["iterations"] == 120 * (20_210 // 16)
    assert frame.loc["ade20k_encnet_r50"]["gpu_hours"] == round(120 * 1263 * 0.5 / 3600, 1)
    assert frame.loc["voc_trainval_encnet_r101"]["iterations"] == 50 * ((1464 + 1449) // 16)
    assert frame.loc["voc_aug_encnet_r101"]["iterations"] == 50 * (10_582 // 16)  # train_aug, paper §3.3
    # The R101 row ran out of memory, FCN was measured at batch 2 only, CIFAR has no step benchmark.
    for name in ("pcontext_encnet_r101", "pcontext_fcn_r50", "cifar10_encnet_32k128d"):
        assert (frame.loc[name][["step_s", "gpu_hours", "peak_GiB", "measured_on"]] == NOT_MEASURED).all(), name
    assert frame.loc["voc_coco_encnet_r101"]["iterations"] == "unknown"
    text = build_paper_cost_markdown(load_results(results_dir), PAPER_CONFIGS)
    n_configs = len(list(PAPER_CONFIGS.glob("*.yaml")))
    assert "| pcontext_encnet_r50 " in text and f"2 of {n_configs} experiments have a measured step" in text


def test_paper_cost_table_without_results_says_not_measured(tmp_path):
    frame = paper_cost_frame([], PAPER_CONFIGS)
    assert (frame["step_s"] == NOT_MEASURED).all() and (frame["gpu_hours"] == NOT_MEASURED).all()


def test_the_paper_profile_page_links_the_generated_cost_table():
    assert "(../tables/paper_cost.md)" in (REPO / "docs" / "paper_profile.md").read_text()
    assert (REPO / "tables" / "paper_cost.md").is_file()


# ------------------------------------------------------------------------------------ train.channels_last


@pytest.mark.usefixtures("single_thread")
def test_channels_last_switch_both_ways(tiny_segmentation_config, tmp_path, monkeypatch):
    from encnet.engine import train as train_module

    seen = {}
    build = train_module.build_model_for

    def spying_build(config, num_classes):
        model = build(config, num_classes)
        forward = model.forward

        def recording_forward(x):
            key = config.train.channels_last
            seen.setdefault(key, set()).add((x.is_contiguous(memory_format=torch.channels_last),
                                             x.is_contiguous(),
                                             model.backbone.conv1.weight.is_contiguous(
                                                 memory_format=torch.channels_last)))
            return forward(x)

        model.forward = recording_forward
        return model

    monkeypatch.setattr(train_module, "build_model_for", spying_build)
    losses = {}
    for on in (False, True):
        config = load_config(tiny_segmentation_config, ["train.epochs=1", "train.val_every=0",
                                                         f"train.channels_last={str(on).lower()}"])
        run_dir = train_module.train(config, output_root=tmp_path / f"runs{on}")
        losses[on] = runs.read_jsonl(run_dir / "metrics.jsonl")[0]["loss"]
    # Training mode: inputs NHWC (not NCHW-contiguous) and weights NHWC only when on.
    assert {(a, b, c) for a, b, c in seen[True] if b is False} == {(True, False, True)}
    assert seen[False] == {(False, True, False)}
    # The same function up to the rounding of another summation order.
    assert losses[True] == pytest.approx(losses[False], rel=1e-4)


def test_switches_off_keep_the_run_id_they_had_before_the_switch(tiny_segmentation_config):
    config = load_config(tiny_segmentation_config)
    # The run id's recipe before train.channels_last existed (encnet/runs.py, now encnet/engine/runs.py, at main): hash
    # of the resolved config without eval, data.root, data.workers, train.checkpoint_every.
    data = to_dict(config)
    data.pop("eval")
    del data["data"]["root"], data["data"]["workers"], data["train"]["checkpoint_every"]
    del data["train"]["checkpoint_every_iters"]  # added later, also where a run checkpoints, not what it trains
    del data["train"]["channels_last"]
    del data["train"]["warmup_epochs"]  # joined the hash the same way: 0 keeps the id
    del data["train"]["log_every"], data["train"]["tensorboard"]  # never hashed: how a run is watched
    del data["model"]["pretrained_dir"]  # never hashed: where the backbone files are, not which
    # Issue 33 changed what every segmentation run trains on (masks at pixel centres, ...) with no config key: the data
    # path's version joined every segmentation id, so runs trained before it are not taken for runs after it.
    assert runs.config_hash(config) != hashlib.sha256(
        json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:8]
    data["data_path"] = 2  # the version since issue 33 (runs.SEGMENTATION_DATA_PATH)
    old = hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:8]
    assert runs.config_hash(config) == old
    assert runs.config_hash(load_config(tiny_segmentation_config, ["train.channels_last=true"])) != old
    assert runs.config_hash(load_config(tiny_segmentation_config, ["train.warmup_epochs=1"])) != old
    # data.workers joined the hash the same way: 0 (every demo config) keeps the id, a worker count changes it
    assert config.data.workers == 0
    assert runs.config_hash(load_config(tiny_segmentation_config, ["data.workers=2"])) != old


def test_the_data_path_version_changes_segmentation_run_ids_only(tiny_segmentation_config,
                                                                 tiny_classification_config):
    segmentation, classification = load_config(tiny_segmentation_config), load_config(tiny_classification_config)
    assert runs._hashed(segmentation)["data_path"] == runs.SEGMENTATION_DATA_PATH
    assert "data_path" not in runs._hashed(classification)  # CIFAR's pad-and-crop never resizes a mask
    assert runs.hash_differences(segmentation, load_config(tiny_segmentation_config)) == []


def test_paper_configs_train_in_float32_nchw_as_the_ledger_says():
    from encnet.experiments.discrepancies import load_ledger

    ledger = load_ledger()
    ids = [e.id for e in ledger]
    assert ids[ids.index("encoding_scale_sign") + 1] == "training_precision"
    entry = ledger.get("training_precision")
    assert entry.suite_follows == "release" and "float32" in entry.release.choice
    assert "f891919" in entry.release.source
    for path in sorted(PAPER_CONFIGS.glob("*.yaml")):
        config = load_config(path)
        assert config.train.amp is False and config.train.channels_last is False, path.name
