"""Preflight (issue 36, item 4): before a paper run, every dataset, backbone file, GPU count and the disk are checked
at once, each ✗ with its fix, and the totals say what the runs cost.

The data root is a fixture in the datasets' real layouts (tests/paper_fixtures.py) with ADE20K left out; the official
image counts are set to the fixture's (the counts check itself is encnet.data.check's, tested in
test_data_prepare_check.py). The weights are torch.save files of real torchvision models (random weights).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torchvision

import paper_fixtures
from encnet.data import check as data_check
from encnet.engine.config import load_config
from encnet.experiments import preflight
from encnet.experiments.checks import FAIL, OK, structure
from encnet.experiments.cli import parse_args
from encnet.experiments.planning import plan
from encnet.experiments.segmentation import experiments

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def fixture_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    paper_fixtures.pascal_context(root, paper_fixtures.SMALL)
    return root  # no ADEChallengeData2016: the ADE20K table cannot run


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("weights")
    torch.save(torchvision.models.resnet50().state_dict(), folder / "resnet50.pth")
    torch.save(torchvision.models.resnet101().state_dict(), folder / "resnet101.pth")
    return folder


@pytest.fixture
def fixture_counts(monkeypatch):
    counts = {"pascal_context": {"train": paper_fixtures.TRAIN_IMAGES, "val": 1},
              "ade20k": {"train": paper_fixtures.TRAIN_IMAGES, "val": 1}}
    monkeypatch.setattr(data_check, "OFFICIAL_COUNTS", {**data_check.OFFICIAL_COUNTS, **counts})
    # FLOPs per image of each network, counted once below against a real run of the counter; here a stand-in
    # keeps the table's test from tracing seven ResNets.
    monkeypatch.setattr(preflight, "_structure_flops", lambda key: 1000)
    preflight.dataset_check.cache_clear()


def _plan(args) -> dict:
    exps = experiments("paper")
    return {name: plan(exps[key], "paper", (0,), args.runs_root, args.data_root, args.set)[0]
            for name, key in (("table_ablation", "ablation"), ("table_ade20k", "ade20k"))}


def test_a_missing_dataset_is_a_cross_with_its_prepare_command(fixture_root, weights_dir, fixture_counts, tmp_path,
                                                               capsys):
    args = parse_args("preflight", ["--profile", "paper", "--data-root", str(fixture_root), "--gpus", "8",
                                    "--device", "cpu", "--pretrained-dir", str(weights_dir), "--runs-root",
                                    str(tmp_path / "runs"), "--set", "train.batch_size=2"])
    checks, totals = preflight.preflight(args, _plan(args))
    by_item = {c.item: c for c in checks}
    assert by_item["dataset pascal_context"].status == OK, by_item["dataset pascal_context"]
    ade = by_item["dataset ade20k"]
    assert ade.status == FAIL and ade.needed_by == ("table_ade20k",)
    assert f"python -m encnet.data.prepare ade20k --src DOWNLOADS --root {fixture_root}" in ade.fix
    for backbone in ("resnet50", "resnet101"):
        weights = by_item[f"weights {backbone}"]
        assert weights.status == OK and str(weights_dir / f"{backbone}.pth") in weights.found, weights
    assert by_item["GPUs"].status == OK and "--device cpu" in by_item["GPUs"].found
    assert [c.item for c in checks if c.status == FAIL] == ["dataset ade20k"]
    # Totals: 4 ablation runs (80 epochs) and 3 ADE20K runs (120 epochs, official count 4 here), batch 2 of 4 images.
    assert totals[0] == "runs: 7 planned, 7 to train"
    assert totals[1] == f"iterations: {4 * 80 * 2 + 3 * 120 * 2:,}"
    assert totals[2].startswith(f"training FLOPs: {(4 * 80 * 2 + 3 * 120 * 2) * 2 * 1000:.3g} ")
    assert totals[3].startswith("GPU-hours: not measured")
    text = preflight.render(checks)
    assert "✗" in text and "prepare ade20k" in text


def test_check_exits_non_zero_on_a_cross_and_the_dry_run_shows_the_ledger_once(fixture_root, weights_dir,
                                                                               fixture_counts, tmp_path, monkeypatch,
                                                                               capsys):
    monkeypatch.setattr(preflight, "planned_by_experiment", _plan)
    common = ["--profile", "paper", "--data-root", str(fixture_root), "--device", "cpu", "--pretrained-dir",
              str(weights_dir), "--runs-root", str(tmp_path / "runs")]
    assert preflight.main(common) == 1
    out = capsys.readouterr().out
    assert "preflight: 1 ✗" in out and "ledger sides" not in out
    assert preflight.main([*common, "--dry-run"]) == 0
    assert capsys.readouterr().out.count("ledger sides") == 1


def test_a_script_dry_run_leaves_the_ledger_block_to_run_all_when_asked(capsys, tmp_path):
    from encnet.experiments.cli import main

    assert main("pcontext", ["--profile", "paper", "--dry-run", "--runs-root", str(tmp_path)]) == 0
    assert capsys.readouterr().out.count("ledger sides") == 1
    assert main("pcontext", ["--profile", "paper", "--dry-run", "--no-ledger-block", "--runs-root",
                             str(tmp_path)]) == 0
    assert "ledger sides" not in capsys.readouterr().out
    # run_all.sh passes it to every script but table_published (which has no ledger block) in a dry run.
    text = (REPO / "run_all.sh").read_text()
    assert 'elif [ "$dry_run" = 1 ]; then extra=(--no-ledger-block)' in text


def test_gpu_hours_come_from_a_measured_step_only(tmp_path):
    config = load_config(REPO / "configs" / "paper" / "pcontext_encnet_r50.yaml")
    run = type("Run", (), {"config": config, "finished": False})()
    step = {"model": "encnet", "backbone": "resnet50", "crop": 480, "batch": 16, "precision": "fp32",
            "channels_last": False, "step_s": 0.5, "peak_MiB": 1024.0}
    result = {"benchmark": "train_step", "device": "cuda", "machine": {"device_name": "GPU"}, "rows": [step]}
    found = {("pascal_context", str(config.data.root), "train"): 4998}
    lines = preflight.totals([run], found, results=[result])
    iterations = 80 * (4998 // 16)
    assert lines[1] == f"iterations: {iterations:,}"
    assert lines[3].startswith(f"GPU-hours: {iterations * 0.5 / 3600:,.0f} ")
    assert preflight.totals([run], found, results=[])[3].startswith("GPU-hours: not measured")


def test_training_flops_per_image_equal_the_counter_on_a_real_step():
    """The fake-tensor count (shapes only) against the same counter on a real forward and backward of two images."""
    from torch.utils.flop_counter import FlopCounterMode

    from encnet.engine.build import build_criterion, build_model_for

    config = load_config(REPO / "configs" / "demo" / "context_scenes_encnet.yaml")
    counted = preflight.training_flops_per_image(config)
    crop = structure(config)[-1]
    model = build_model_for(config, 0 or preflight._classes(config)).train()
    criterion = build_criterion(config, preflight._classes(config))
    with FlopCounterMode(display=False) as counter:
        loss, _ = criterion(model(torch.rand(2, 3, *crop)), torch.zeros(2, *crop, dtype=torch.int64))
        loss.backward()
    assert counted == counter.get_total_flops() // 2 > 0
    assert json.dumps(counted)  # an int, as the totals line prints
