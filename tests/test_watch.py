"""Watching a run (encnet/engine/progress.py): the line every ``train.log_every`` iterations, ``progress.jsonl``,
TensorBoard's event files read back with TensorBoard's own reader, and that none of it changes a run id or what
trains."""

import importlib.util
import re
from pathlib import Path

import pytest

import encnet.engine.train as train_module
from encnet.engine import runs
from encnet.engine.config import ConfigError, load_config
from encnet.engine.progress import PROGRESS_FILE, TENSORBOARD_DIR, duration
from encnet.engine.schedules import lr_at
from encnet.engine.train import train

REPO = Path(__file__).resolve().parents[1]
TIMING_KEYS = {"images_per_s", "epoch_time_s"}
HAVE_TENSORBOARD = importlib.util.find_spec("tensorboard") is not None
NEEDS_TENSORBOARD = pytest.mark.skipif(not HAVE_TENSORBOARD, reason="tensorboard is not installed: "
                                       "`pip install -e '.[tensorboard]'` (or '.[test]') runs this test")
LINE = re.compile(r"^epoch (\d+)/3 iter (\d+)/2  loss ([0-9.]+) \(main [0-9.]+ aux [0-9.]+ se [0-9.]+\)  lr \S+  "
                  r"[0-9.]+ img/s  eta epoch \d+:\d\d:\d\d run \d+:\d\d:\d\d  peak RSS [0-9,]+ MiB$", re.M)

pytestmark = pytest.mark.usefixtures("single_thread")


def without_timings(records):
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records]


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar curve of the run's event files, as TensorBoard itself reads them."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / TENSORBOARD_DIR), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_a_line_every_log_every_iterations_and_the_same_records_in_the_run_folder(tiny_segmentation_config,
                                                                                   tmp_path, capsys):
    # tiny: 3 epochs of 2 iterations. log_every=2 puts one line at each epoch's end, whose window is the epoch:
    # its mean loss must be the epoch's mean in metrics.jsonl, summed in the same order.
    config = load_config(tiny_segmentation_config, ["train.log_every=2"])
    run_dir = train(config, run_dir=tmp_path / "run", device="cpu")
    out = capsys.readouterr().out  # not a terminal: the lines are printed all the same
    lines = LINE.findall(out)
    assert [(int(e), int(i)) for e, i, _ in lines] == [(1, 2), (2, 2), (3, 2)], out

    records = runs.read_jsonl(run_dir / PROGRESS_FILE)
    epochs = runs.read_jsonl(run_dir / "metrics.jsonl")
    assert [r["iter"] for r in records] == [2, 4, 6]
    for record, epoch, (_, _, shown) in zip(records, epochs, lines):
        assert record["loss"] == epoch["loss"] and record["loss_se"] == epoch["loss_se"]
        assert record["lr"] == epoch["lr"] == lr_at("poly", 0.02 / 16 * 4, record["iter"] - 1, 6, 0.9, 0)
        assert float(shown) == pytest.approx(record["loss"], abs=5e-5)
        assert record["eta_epoch_s"] == 0.0 and record["memory"] == "cpu_rss" and record["peak_memory_MiB"] > 50
    assert records[-1]["eta_run_s"] == 0.0 and records[0]["eta_run_s"] > 0


def test_eta_is_the_time_per_iteration_times_the_iterations_left(tiny_segmentation_config, tmp_path):
    config = load_config(tiny_segmentation_config, ["train.log_every=1", "train.epochs=2"])
    records = runs.read_jsonl(train(config, run_dir=tmp_path / "run", device="cpu") / PROGRESS_FILE)
    assert [(r["epoch"], r["epoch_iter"], r["iter"]) for r in records] == [(1, 1, 1), (1, 2, 2), (2, 1, 3), (2, 2, 4)]
    first = records[0]  # one iteration done in the epoch: its time per iteration is the window's
    assert first["eta_run_s"] == pytest.approx(3 * first["eta_epoch_s"])
    assert duration(59.6) == "0:01:00" and duration(3 * 86400 + 3723) == "3d 1:02:03"


def test_how_a_run_is_watched_changes_neither_its_id_nor_its_numbers(tiny_segmentation_config, tmp_path):
    watched = ["train.log_every=1"] + (["train.tensorboard=true"] if HAVE_TENSORBOARD else [])
    plain = load_config(tiny_segmentation_config, ["train.log_every=0"])
    loud = load_config(tiny_segmentation_config, watched)
    assert runs.run_id(plain) == runs.run_id(loud) and runs.hash_differences(plain, loud) == []
    a = train(plain, run_dir=tmp_path / "plain", device="cpu")
    b = train(loud, run_dir=tmp_path / "loud", device="cpu")
    read = runs.read_jsonl
    assert without_timings(read(a / "metrics.jsonl")) == without_timings(read(b / "metrics.jsonl"))
    assert not (a / PROGRESS_FILE).exists() and len(runs.read_jsonl(b / PROGRESS_FILE)) == 6
    ca, cb = runs.load_checkpoint(a / runs.CHECKPOINT), runs.load_checkpoint(b / runs.CHECKPOINT)
    assert all((ca["model"][k] == cb["model"][k]).all() for k in ca["model"])


@pytest.mark.parametrize("profile", ["demo", "paper"])
def test_no_config_changes_its_run_id_with_log_every_or_tensorboard(profile):
    for path in sorted((REPO / "configs" / profile).glob("*.yaml")):
        config = load_config(path)
        for overrides in (["train.log_every=1"], ["train.log_every=0", "train.tensorboard=true"]):
            assert runs.run_id(load_config(path, overrides)) == runs.run_id(config), (path.name, overrides)


@NEEDS_TENSORBOARD
def test_tensorboard_event_files_read_back_hold_the_logged_curves(tiny_segmentation_config, tmp_path):
    config = load_config(tiny_segmentation_config, ["train.log_every=1", "train.tensorboard=true"])
    run_dir = train(config, run_dir=tmp_path / "run", device="cpu")
    curves = scalars(run_dir)
    records = runs.read_jsonl(run_dir / PROGRESS_FILE)
    epochs = runs.read_jsonl(run_dir / "metrics.jsonl")
    for key in ("loss", "loss_main", "loss_aux", "loss_se", "lr", "peak_memory_MiB"):
        assert [s for s, _ in curves[f"train/{key}"]] == [1, 2, 3, 4, 5, 6], key
        assert [v for _, v in curves[f"train/{key}"]] == pytest.approx([r[key] for r in records], rel=1e-6), key
    assert curves["val/mIoU"] == [(2 * e["epoch"], pytest.approx(e["val_mIoU"], rel=1e-6)) for e in epochs]
    assert [s for s, _ in curves["epoch/loss"]] == [2, 4, 6]
    assert "train/loss_aux_se" not in curves  # the stage-3 SE head is off in this config: no flat zero curve


@NEEDS_TENSORBOARD
def test_a_resumed_run_has_one_point_per_iteration_in_tensorboard_and_progress(tiny_segmentation_config, tmp_path,
                                                                                monkeypatch):
    config = load_config(tiny_segmentation_config, ["train.log_every=1", "train.tensorboard=true"])
    whole = train(config, run_dir=tmp_path / "whole", device="cpu")
    real = train_module.lr_at

    def interrupt(schedule, base, it, *rest):
        if it == 3:  # epoch 2's second iteration: iteration 3 is logged, the checkpoint is at iteration 2
            raise KeyboardInterrupt
        return real(schedule, base, it, *rest)

    monkeypatch.setattr(train_module, "lr_at", interrupt)
    with pytest.raises(KeyboardInterrupt):
        train(config, run_dir=tmp_path / "stopped", device="cpu")
    monkeypatch.undo()
    assert [r["iter"] for r in runs.read_jsonl(tmp_path / "stopped" / PROGRESS_FILE)] == [1, 2, 3]
    resumed = train(config, run_dir=tmp_path / "stopped", resume=True, device="cpu")
    timing = TIMING_KEYS | {"eta_epoch_s", "eta_run_s", "peak_memory_MiB", "time"}
    strip = [{k: v for k, v in r.items() if k not in timing} for r in runs.read_jsonl(resumed / PROGRESS_FILE)]
    assert strip == [{k: v for k, v in r.items() if k not in timing} for r in runs.read_jsonl(whole / PROGRESS_FILE)]
    one, two = scalars(whole), scalars(resumed)
    assert [s for s, _ in two["train/loss"]] == [1, 2, 3, 4, 5, 6]  # the first session's iteration 3 purged
    assert [v for _, v in two["train/loss"]] == [v for _, v in one["train/loss"]]


def test_tensorboard_asked_for_but_missing_is_an_error_before_any_folder(tiny_segmentation_config, tmp_path,
                                                                           monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    config = load_config(tiny_segmentation_config, ["train.tensorboard=true"])
    with pytest.raises(ConfigError, match=re.escape("pip install tensorboard")):
        train(config, output_root=tmp_path / "runs", device="cpu")
    assert not (tmp_path / "runs").exists()


def test_a_classification_run_logs_its_training_error(tiny_classification_config, tmp_path, capsys):
    # 16 images in batches of 8: with log_every=2 each epoch's line covers the epoch, as its metrics.jsonl record.
    config = load_config(tiny_classification_config, ["train.log_every=2"])
    run_dir = train(config, run_dir=tmp_path / "run", device="cpu")
    records, epochs = runs.read_jsonl(run_dir / PROGRESS_FILE), runs.read_jsonl(run_dir / "metrics.jsonl")
    assert [r["train_top1_error"] for r in records] == [e["train_top1_error"] for e in epochs]
    assert re.search(r"^epoch 2/2 iter 2/2  loss [0-9.]+  error [0-9.]+%  lr ", capsys.readouterr().out, re.M)
