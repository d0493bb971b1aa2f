"""The training/evaluation engine on one process: run folders, resume, stop conditions, evaluation outputs."""

import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import encnet.engine.train as train_module
from encnet.engine import runs
from encnet.engine.config import ConfigError, load_config
from encnet.engine.evaluate import evaluate
from encnet.engine.train import NonFiniteLossError, RunExistsError, train

TIMING_KEYS = {"images_per_s", "epoch_time_s"}

pytestmark = pytest.mark.usefixtures("single_thread")


def without_timings(records):
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records]


def test_run_folder_holds_resolved_config_env_metrics_checkpoint_and_eval(tiny_segmentation_config, tmp_path):
    config = load_config(tiny_segmentation_config)
    run_dir = train(config, output_root=tmp_path / "runs")

    assert run_dir == tmp_path / "runs" / "test" / "tiny_seg" / runs.run_id(config)
    assert runs.run_id(config).startswith("seed0-")
    assert load_config(run_dir / "config.yaml") == config
    env = json.loads((run_dir / "env.json").read_text())
    assert env["world_size"] == 1 and env["torch"] == torch.__version__
    assert {"git_commit", "git_dirty", "device_names", "cpu_model", "hostname", "start_time", "effective_lr"} \
           <= set(env)
    assert env["effective_lr"] == pytest.approx(0.02 / 16 * 4)
    assert env["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    records = runs.read_jsonl(run_dir / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert {"iter", "lr", "loss", "loss_main", "loss_aux", "loss_se", "images_per_s", "epoch_time_s",
            "val_pixAcc", "val_mIoU"} <= set(records[0])
    assert records[-1]["iter"] == 3 * 2  # 8 images / batch 4 per epoch
    eval_record = json.loads((run_dir / "eval.json").read_text())
    assert eval_record["mIoU"] == records[-1]["val_mIoU"] and len(eval_record["IoU"]) == 11
    assert eval_record["settings"]["mode"] == "full_image"
    checkpoint = torch.load(run_dir / runs.CHECKPOINT, weights_only=False)
    assert checkpoint["epoch"] == 3
    assert runs.is_finished(run_dir)
    assert not list(run_dir.glob("*.tmp"))  # atomic writes leave no temporary files behind


def _interrupt_at_iteration_3(monkeypatch, config, run_dir):
    """Train ``config`` into ``run_dir`` and Ctrl-C it at iteration 3; the real schedule is put back after."""
    real_lr_at = train_module.lr_at

    def interrupt(schedule, base, it, *rest):
        if it == 3:
            raise KeyboardInterrupt
        return real_lr_at(schedule, base, it, *rest)

    monkeypatch.setattr(train_module, "lr_at", interrupt)
    with pytest.raises(KeyboardInterrupt):
        train(config, run_dir=run_dir)
    monkeypatch.setattr(train_module, "lr_at", real_lr_at)


def test_stop_and_resume_equals_uninterrupted_run(tiny_segmentation_config, tmp_path, monkeypatch, capsys):
    config = load_config(tiny_segmentation_config)
    whole = train(config, run_dir=tmp_path / "whole")

    # Ctrl-C in the middle of epoch 2 (after one optimizer step of it): the epoch-1 checkpoint stays.
    _interrupt_at_iteration_3(monkeypatch, config, tmp_path / "stopped")
    err = capsys.readouterr().err
    assert "resume with: python -m encnet.train" in err and "--resume" in err
    assert torch.load(tmp_path / "stopped" / runs.CHECKPOINT, weights_only=False)["epoch"] == 1
    assert not runs.is_finished(tmp_path / "stopped")

    with pytest.raises(RunExistsError, match="--resume"):
        train(config, run_dir=tmp_path / "stopped")
    resumed = train(config, run_dir=tmp_path / "stopped", resume=True)

    a = torch.load(whole / runs.CHECKPOINT, weights_only=False)
    b = torch.load(resumed / runs.CHECKPOINT, weights_only=False)
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])
    assert without_timings(runs.read_jsonl(whole / "metrics.jsonl")) == without_timings(
        runs.read_jsonl(resumed / "metrics.jsonl"))
    assert json.loads((whole / "eval.json").read_text()) == json.loads((resumed / "eval.json").read_text())
    assert json.loads((resumed / "env.json").read_text())["resumes"][0]["epoch"] == 1


def test_a_resume_at_another_thread_count_says_it_leaves_bitwise_reproducibility(
        tiny_segmentation_config, tmp_path, monkeypatch, capsys):
    config = load_config(tiny_segmentation_config)
    _interrupt_at_iteration_3(monkeypatch, config, tmp_path / "run")
    threads = torch.get_num_threads()
    capsys.readouterr()
    try:
        torch.set_num_threads(threads + 1)
        train(config, run_dir=tmp_path / "run", resume=True)
    finally:
        torch.set_num_threads(threads)
    assert f"cpu_threads {threads} → {threads + 1}" in capsys.readouterr().out
    assert json.loads((tmp_path / "run" / "env.json").read_text())["resumes"][0]["cpu_threads"] == threads + 1


def test_the_loader_worker_count_is_part_of_the_run_and_a_resume_with_another_is_refused(
        tiny_segmentation_config, tmp_path, monkeypatch):
    # Why it must be: the augmentations come from each worker's generator, or from the main process's with 0.
    config = load_config(tiny_segmentation_config, ["train.epochs=1"])
    two = load_config(tiny_segmentation_config, ["train.epochs=1", "data.workers=2"])
    losses = {}
    for name, c in (("0", config), ("2", two)):
        run_dir = train(c, run_dir=tmp_path / f"workers{name}")
        losses[name] = runs.read_jsonl(run_dir / "metrics.jsonl")[-1]["loss"]
    assert losses["0"] != losses["2"]
    assert runs.run_id(config) != runs.run_id(two)
    assert runs.run_id(two) != runs.run_id(load_config(tiny_segmentation_config, ["train.epochs=1", "data.workers=1"]))

    _interrupt_at_iteration_3(monkeypatch, load_config(tiny_segmentation_config), tmp_path / "stopped")
    other = load_config(tiny_segmentation_config, ["data.workers=2"])
    with pytest.raises(ConfigError, match=r"data\.workers: 0 in the run, 2 now"):
        train(other, run_dir=tmp_path / "stopped", resume=True)


def test_a_run_started_by_an_earlier_data_path_is_neither_found_nor_resumed(tiny_segmentation_config, tmp_path,
                                                                            monkeypatch):
    config = load_config(tiny_segmentation_config)
    monkeypatch.setattr(runs, "SEGMENTATION_DATA_PATH", 1)  # the code before masks were resized at pixel centres
    earlier = runs.run_dir_for(config, tmp_path / "runs")
    _interrupt_at_iteration_3(monkeypatch, config, earlier)
    monkeypatch.setattr(runs, "SEGMENTATION_DATA_PATH", 2)
    assert runs.run_dir_for(config, tmp_path / "runs") != earlier  # so `train` starts a new run of its own
    with pytest.raises(ConfigError, match="earlier version of the suite"):
        train(config, run_dir=earlier, resume=True)
    today = runs.run_dir_for(config, tmp_path / "runs")
    _interrupt_at_iteration_3(monkeypatch, config, today)
    assert runs.is_finished(train(config, run_dir=today, resume=True))  # a folder of today's code resumes


def test_same_config_and_seed_give_the_same_numbers_and_a_finished_run_is_not_rerun(
        tiny_segmentation_config, tmp_path):
    config = load_config(tiny_segmentation_config, ["train.epochs=1"])
    first = train(config, output_root=tmp_path / "a")
    second = train(config, output_root=tmp_path / "b")
    assert without_timings(runs.read_jsonl(first / "metrics.jsonl")) == without_timings(
        runs.read_jsonl(second / "metrics.jsonl"))
    stamp = (first / "metrics.jsonl").stat().st_mtime_ns
    assert train(config, output_root=tmp_path / "a") == first
    assert (first / "metrics.jsonl").stat().st_mtime_ns == stamp
    other = load_config(tiny_segmentation_config, ["train.epochs=1", "train.se_weight=0.4"])
    assert runs.run_id(other) != runs.run_id(config)


def test_non_finite_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(
        tiny_segmentation_config, tmp_path, monkeypatch):
    config = load_config(tiny_segmentation_config)
    real = train_module.build_criterion

    def criterion_that_explodes_in_epoch_2(cfg, num_classes):
        inner = real(cfg, num_classes)
        calls = {"n": 0}

        def forward(output, target):
            calls["n"] += 1
            total, parts = inner(output, target)
            return (total * float("nan"), parts) if calls["n"] == 3 else (total, parts)

        return type("Exploding", (torch.nn.Module,), {"forward": lambda self, o, t: forward(o, t)})()

    monkeypatch.setattr(train_module, "build_criterion", criterion_that_explodes_in_epoch_2)
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at epoch 2.*last good checkpoint: epoch 1"):
        train(config, run_dir=tmp_path / "run")
    checkpoint = torch.load(tmp_path / "run" / runs.CHECKPOINT, weights_only=False)
    assert checkpoint["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in checkpoint["model"].values() if v.is_floating_point())
    assert not runs.is_finished(tmp_path / "run")


def test_evaluate_multi_scale_flip_writes_tagged_eval_and_predictions(tiny_segmentation_config, tmp_path):
    config = load_config(tiny_segmentation_config, ["train.epochs=1"])
    run_dir = train(config, run_dir=tmp_path / "run")
    single = evaluate(run_dir)
    assert single["mIoU"] == json.loads((run_dir / "eval.json").read_text())["mIoU"]

    result = evaluate(run_dir, scales=config.eval.scales, flip=True, save_predictions=True)
    stored = json.loads((run_dir / "eval_ms_flip.json").read_text())
    assert stored == result
    assert stored["settings"] == {"split": "val", "mode": "sliding_window", "scales": [0.75, 1.25], "flip": True,
                                  "crop_size": 24, "base_size": 32, "stride_ratio": pytest.approx(2 / 3),
                                  "accumulate": "release_exp_sum", "align_corners": True}
    pngs = sorted((run_dir / "predictions" / "ms_flip").glob("*.png"))
    assert [p.stem for p in pngs] == ["val_00000", "val_00001", "val_00002"]
    prediction = np.asarray(Image.open(pngs[0]))
    assert prediction.shape == (32, 32) and prediction.max() < 11
    se = json.loads((run_dir / "predictions" / "ms_flip" / "se_probabilities.json").read_text())
    assert sorted(se) == [p.stem for p in pngs] and all(len(v) == 11 and 0 <= min(v) <= max(v) <= 1
                                                        for v in se.values())
    evaluate(run_dir, scales=[1.0], flip=False)
    assert (run_dir / "eval_s1.json").is_file()


def test_size_bin_iou_in_eval_matches_a_recount_from_the_saved_predictions(tiny_segmentation_config, tmp_path,
                                                                           data_cache):
    from encnet.data.context_scenes import AMBIGUOUS_CLASSES, REGION_CODES

    config = load_config(tiny_segmentation_config, ["train.epochs=1", "data.options.sizes=small_large",
                                                    "data.options.num_val=6"])
    run_dir = train(config, run_dir=tmp_path / "run")
    result = evaluate(run_dir, save_predictions=True)
    root = next(p for p in data_cache.glob("*small_large") if (p / "meta.json").is_file())
    for name, code in REGION_CODES.items():
        confusion = np.zeros((11, 11), dtype=np.int64)
        for png in sorted((run_dir / "predictions" / "ss").glob("*.png")):
            pred = np.asarray(Image.open(png)).astype(np.int64)
            truth = np.asarray(Image.open(root / "masks" / png.name)).astype(np.int64)
            near = np.asarray(Image.open(root / "regions" / png.name)) == code
            np.add.at(confusion, (truth[near], pred[near]), 1)
        tp = np.diag(confusion).astype(float)
        union = confusion.sum(0) + confusion.sum(1) - tp
        ious = [100 * tp[c] / union[c] for c in AMBIGUOUS_CLASSES if union[c] > 0]
        assert result[f"mIoU_{name}"] == pytest.approx(float(np.mean(ious)))
    assert json.loads((run_dir / "eval.json").read_text())["mIoU_small"] == pytest.approx(result["mIoU_small"])


def test_classification_task_trains_and_reports_top1_error(tiny_classification_config, tmp_path):
    config = load_config(tiny_classification_config)
    run_dir = train(config, run_dir=tmp_path / "run")
    records = runs.read_jsonl(run_dir / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [1, 2]
    assert 0 <= records[-1]["train_top1_error"] <= 100 and "val_top1_error" in records[-1]
    assert records[0]["lr"] < 0.05  # cosine: lr at the epoch's last iteration is below the base
    eval_record = json.loads((run_dir / "eval.json").read_text())
    assert eval_record["top1_error"] == pytest.approx(100 - eval_record["accuracy"])


def test_cli_reports_config_errors_with_the_key(tiny_segmentation_config, capsys):
    assert train_module.main([str(tiny_segmentation_config), "train.se_wieght=0.4"]) == 2
    assert "train.se_wieght" in capsys.readouterr().err
    data = yaml.safe_load(tiny_segmentation_config.read_text())
    data["model"]["num_codes"] = "many"
    tiny_segmentation_config.write_text(yaml.safe_dump(data))
    assert train_module.main([str(tiny_segmentation_config)]) == 2
    assert "'model.num_codes'" in capsys.readouterr().err
