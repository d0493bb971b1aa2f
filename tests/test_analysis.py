"""encnet.analysis: the computing functions against hand-computed tiny cases, the run finder and the report
readers on tiny files written here. The same functions on real trained runs are checked in test_notebooks.py."""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from encnet import analysis

NAMES = ["background", "disc", "square"]
FIXTURE_RUNS = Path(__file__).parent / "fixtures" / "runs"


# ------------------------------------------------------------------------------------------ scores


def test_image_miou_averages_only_the_classes_an_image_has():
    # image 0: class 0 perfect (IoU 100), class 1 predicted where absent (IoU 0), class 2 in neither;
    # image 1: nothing at all (NaN).
    tp = np.array([[4, 0, 0], [0, 0, 0]])
    gt = np.array([[4, 0, 0], [0, 0, 0]])
    pred = np.array([[4, 2, 0], [0, 0, 0]])
    miou = analysis.image_miou(tp, gt, pred)
    assert miou[0] == pytest.approx(50.0)
    assert math.isnan(miou[1])


def test_largest_confusions_names_the_off_diagonal_cells_with_their_share_of_the_truth():
    confusion = np.array([[90, 6, 4], [30, 60, 10], [0, 1, 9]])
    top = analysis.largest_confusions(confusion, NAMES, k=2)
    assert top[["truth", "predicted", "pixels"]].values.tolist() == [["disc", "background", 30],
                                                                     ["disc", "square", 10]]
    assert top["share_of_truth"].tolist() == pytest.approx([30.0, 10.0])
    assert len(analysis.largest_confusions(np.diag([5, 5, 5]), NAMES)) == 0  # a perfect matrix has none


def test_confusion_frame_normalises_rows_to_percent():
    frame = analysis.confusion_frame(np.array([[1, 3, 0], [0, 0, 0], [2, 0, 2]]), NAMES)
    assert frame.loc["background"].tolist() == pytest.approx([25.0, 75.0, 0.0])
    assert frame.loc["square", "background"] == pytest.approx(50.0)
    assert frame.loc["disc"].isna().all()  # no truth pixels: nothing to normalise


# ------------------------------------------------------------------------------------- comparisons


def test_per_class_table_has_the_difference_of_the_second_run_minus_the_first():
    table = analysis.per_class_iou_table({"FCN": [50.0, 10.0, np.nan], "EncNet": [60.0, 5.0, 20.0]}, NAMES)
    assert list(table.columns) == ["FCN", "EncNet", "EncNet − FCN"]
    assert table["EncNet − FCN"].tolist()[:2] == pytest.approx([10.0, -5.0])
    assert math.isnan(table.loc["square", "EncNet − FCN"])


def test_worst_images_and_where_context_helped_and_hurt():
    table = analysis.per_image_table(["a", "b", "c", "d"], {"FCN": [50, 40, 30, 20], "EncNet": [70, 30, 30, 10]})
    assert list(analysis.worst_images(table, "EncNet", 2).index) == ["d", "b"]
    helped, hurt = analysis.context_effect(table, "EncNet − FCN", k=5)
    assert list(helped.index) == ["a"]  # +20
    assert list(hurt.index) == ["b", "d"]  # -10, -10: ties keep table order; "c" (0) is in neither


def test_presence_metrics_by_hand():
    probabilities = np.array([[0.9, 0.8], [0.2, 0.7], [0.6, 0.1]])
    present = np.array([[1, 1], [1, 0], [0, 0]], dtype=bool)
    table = analysis.presence_metrics(probabilities, present, ["a", "b"])
    # a: called in images 0 and 2, present in 0 and 1 → tp 1, fp 1, fn 1.
    # b: called in images 0 and 1, present in 0 → tp 1, fp 1, fn 0.
    assert table.loc["a", ["true_calls", "false_alarms", "misses"]].tolist() == [1, 1, 1]
    assert table.loc["a", "precision"] == pytest.approx(50.0) and table.loc["a", "recall"] == pytest.approx(50.0)
    assert table.loc["b", "precision"] == pytest.approx(50.0) and table.loc["b", "recall"] == pytest.approx(100.0)
    assert table.loc["all classes", "precision"] == pytest.approx(100 * 2 / 4)
    assert table.loc["all classes", "recall"] == pytest.approx(100 * 2 / 3)


def test_presence_failures_pair_a_wrong_call_with_a_wrong_segmentation_of_that_class():
    probabilities = np.array([[0.1, 0.9, 0.9], [0.1, 0.9, 0.2]])
    present = np.array([[True, False, False], [True, True, True]])
    iou = np.array([[20.0, 0.0, np.nan],  # miss of 0 (IoU 20: wrong), false alarm of 1 segmented (0: wrong),
                    [80.0, 90.0, 10.0]])  # false alarm of 2 not segmented (NaN: not listed); image 1: miss of 0
    # with IoU 80 (segmentation right, not listed), miss of 2 with IoU 10 (listed).
    failures = analysis.presence_failures(probabilities, present, iou, ["i0", "i1"], NAMES)
    assert failures[["image", "class", "call"]].values.tolist() == [
        ["i0", "disc", "false alarm"], ["i1", "square", "miss"], ["i0", "background", "miss"]]
    assert failures["IoU"].tolist() == [0.0, 10.0, 20.0]


# ------------------------------------------------------------------------------------------ drawing


def test_colourize_paints_classes_and_leaves_ignored_pixels_black():
    palette = analysis.class_palette(3)
    rgb = analysis.colourize(np.array([[0, 2], [255, 1]]), palette)
    np.testing.assert_array_equal(rgb[0, 1], palette[2])
    np.testing.assert_array_equal(rgb[1, 0], [0, 0, 0])


@pytest.mark.parametrize("num_classes", [11, 60, 150])
def test_palette_gives_every_class_its_own_colour(num_classes):
    palette = analysis.class_palette(num_classes)
    assert palette.shape == (num_classes, 3) and palette.dtype == np.uint8
    assert len({tuple(c) for c in palette}) == num_classes


def test_overlay_figure_has_a_column_per_mask_and_a_legend_of_the_classes_shown():
    image = np.zeros((4, 4, 3), dtype=np.uint8)
    truth = np.zeros((4, 4), dtype=np.int64)
    truth[0, 0] = 2
    masks = [{"ground truth": truth, "FCN": np.zeros((4, 4)), "EncNet": np.full((4, 4), 255)}] * 2
    fig = analysis.plot_overlays([image, image], masks, ["a", "b"], NAMES)
    assert len(fig.axes) == 2 * 4
    assert [ax.get_title() for ax in fig.axes[:4]] == ["image", "ground truth", "FCN", "EncNet"]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["background", "square"]


# ------------------------------------------------------------------------------------- finding runs


def write_run(root: Path, experiment: str, run_id: str, model: dict, started: str, finished: bool = True,
              seed: int = 0, data_seed: int = 0, train: dict | None = None,
              data: dict | None = None) -> Path:
    run_dir = root / "demo" / experiment / run_id
    run_dir.mkdir(parents=True)
    config = {"experiment": experiment, "profile": "demo", "task": "segmentation", "seed": seed,
              "model": {"backbone": "resnet_tiny", "num_codes": 32, "se_loss": True, **model},
              "data": {"dataset": "context_scenes", "root": None, "val_split": "val", "num_classes": None,
                       "options": {"seed": data_seed, "num_train": 300}, **(data or {})},
              "train": train or {"epochs": 5, "se_weight": 0.2}}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    (run_dir / "env.json").write_text(json.dumps({"start_time": started}))
    if finished:
        (run_dir / "DONE").write_text("x\n")
    return run_dir


def test_latest_fcn_is_paired_with_its_sibling_encnet_run_of_the_same_recipe(tmp_path):
    write_run(tmp_path, "pcontext_fcn_r50", "old", {"name": "fcn"}, "2025-01-01T00:00:00+00:00")
    fcn = write_run(tmp_path, "pcontext_fcn_r50", "new", {"name": "fcn", "aux": False}, "2025-01-02T00:00:00+00:00")
    # A later FCN with the aux head (the ledger's fcn_aux release side) is not the suite's baseline.
    write_run(tmp_path, "pcontext_fcn_r50", "fcnaux", {"name": "fcn", "aux": True}, "2025-01-02T01:00:00+00:00")
    write_run(tmp_path, "pcontext_fcn_r50", "unfinished", {"name": "fcn"}, "2025-01-09T00:00:00+00:00",
              finished=False)
    encnet = write_run(tmp_path, "pcontext_encnet_r50", "plain", {"name": "encnet"}, "2025-01-03T00:00:00+00:00")
    # Later runs that must not win: a K sweep, an SE-weight sweep, no SE-loss, another experiment, other data.
    write_run(tmp_path, "pcontext_encnet_r50", "k8", {"name": "encnet", "num_codes": 8}, "2025-01-04T00:00:00+00:00")
    write_run(tmp_path, "pcontext_encnet_r50", "alpha", {"name": "encnet"}, "2025-01-05T00:00:00+00:00",
              train={"epochs": 5, "se_weight": 0.8})
    write_run(tmp_path, "pcontext_encnet_r50", "nose", {"name": "encnet", "se_loss": False},
              "2025-01-06T00:00:00+00:00")
    write_run(tmp_path, "ade20k_encnet_r50", "other", {"name": "encnet"}, "2025-01-07T00:00:00+00:00")
    write_run(tmp_path, "pcontext_encnet_r50", "otherdata", {"name": "encnet"}, "2025-01-08T00:00:00+00:00",
              data_seed=1)
    # Ledger switches flipped on the same data: rotation augmentation, the paper's attention, lateral paths.
    write_run(tmp_path, "pcontext_encnet_r50", "rotate", {"name": "encnet"}, "2025-01-08T01:00:00+00:00",
              data={"rotate_degrees": 10.0})
    write_run(tmp_path, "pcontext_encnet_r50", "paperatt", {"name": "encnet", "attention": "paper"},
              "2025-01-08T02:00:00+00:00")
    write_run(tmp_path, "pcontext_encnet_r50", "lateral", {"name": "encnet", "lateral": True},
              "2025-01-08T03:00:00+00:00")
    write_run(tmp_path, "pcontext_encnet_r50", "stage3se", {"name": "encnet", "aux_head": "se"},
              "2025-01-08T04:00:00+00:00")

    assert analysis.find_latest_pair(tmp_path, "demo") == (fcn, encnet)
    listed = analysis.list_runs(tmp_path, "demo")
    assert "unfinished" not in {Path(p).name for p in listed["run_dir"]}
    assert listed["started"].is_monotonic_decreasing


def test_missing_runs_are_an_error_that_says_how_to_train_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m encnet.train configs/demo/pcontext_fcn_r50.yaml"):
        analysis.find_latest_pair(tmp_path, "demo")
    write_run(tmp_path, "pcontext_fcn_r50", "a", {"name": "fcn"}, "2025-01-01T00:00:00+00:00")
    with pytest.raises(FileNotFoundError, match="no finished demo-profile EncNet run"):
        analysis.find_latest_pair(tmp_path, "demo")


def test_ensure_predictions_without_a_checkpoint_says_what_is_missing(tmp_path):
    fcn = write_run(tmp_path, "pcontext_fcn_r50", "a", {"name": "fcn"}, "2025-01-01T00:00:00+00:00")
    with pytest.raises(FileNotFoundError, match="checkpoint_last.pt"):
        analysis.ensure_predictions(fcn)


# ------------------------------------------------------------------------------------ report readers


def write_tables(out: Path) -> None:
    """Real tables and a figure, written by encnet.report from the committed run-log format fixtures."""
    from encnet.report.figures import plot_sweep, sweep_points
    from encnet.report.reported import load_reported
    from encnet.report.runlogs import collect_results
    from encnet.report.tables import Direction, TableRow, compare, write_table

    rows = [TableRow("FCN", "pcontext_ablation", "FCN"), TableRow("EncNet+SE", "pcontext_ablation", "EncNet+SE")]
    for profile, refs in {
        "demo": [("FCN", FIXTURE_RUNS / "demo/pcontext/seed0-fmtfcn", "ss"),
                 ("FCN", FIXTURE_RUNS / "demo/pcontext/seed1-fmtfcn", "ss"),
                 ("EncNet+SE", FIXTURE_RUNS / "demo/pcontext/seed0-fmtenc", "ss")],
        "paper": [("EncNet+SE", FIXTURE_RUNS / "paper/pcontext/seed0-fmtenc", "ss")],
    }.items():
        results = collect_results(refs, FIXTURE_RUNS)
        comparison = compare(rows, ["pixAcc", "mIoU"], load_reported(), results, profile)
        write_table(comparison, "table_ablation", "Table 1", "PASCAL-Context ablation", profile, out,
                    directions=[Direction("EncNet+SE", "FCN", "mIoU")], results=results)
        points = sweep_points(results, {"FCN": 0.0, "EncNet+SE": 0.2}, ["mIoU"], profile)
        plot_sweep(points, "figure_se_weight", "SE weight", "alpha", 0.2, "paper", profile, out)
    (out / "tables" / "benchmarks.md").write_text("# Benchmarks\n\nno profile\n")
    (out / "tables" / "discrepancies_demo.md").write_text("# Paper vs release — demo profile\n")
    pd.DataFrame({"entry": ["x"], "paper_mean": [1.0]}).to_csv(out / "tables" / "discrepancies_demo.csv")


def test_report_gathers_the_tables_and_figures_of_one_profile_only(tmp_path):
    write_tables(tmp_path)
    tables = analysis.find_tables(tmp_path / "tables", "demo")
    assert [t.name for t in tables] == ["benchmarks", "discrepancies_demo", "table_ablation_demo"]
    ablation = tables[-1]
    assert ablation.directions is not None and analysis.table_title(ablation).endswith("demo profile")
    assert [t.name for t in analysis.find_tables(tmp_path / "tables", "paper")] == ["benchmarks", "table_ablation"]
    assert [p.name for p in analysis.find_figures(tmp_path / "figures", "demo")] == ["figure_se_weight_demo.png"]

    numbers = analysis.reported_vs_reproduced(tables)  # discrepancies_demo.csv has another shape: skipped
    assert set(numbers["table"]) == {"table_ablation_demo"}
    fcn_miou = numbers[(numbers["row"] == "FCN") & (numbers["metric"] == "mIoU")].iloc[0]
    tidy = pd.read_csv(tmp_path / "tables" / "table_ablation_demo.csv")
    expected = tidy[(tidy["row"] == "FCN") & (tidy["metric"] == "mIoU")].iloc[0]
    assert fcn_miou["n"] == 2 and fcn_miou["reproduced_mean"] == pytest.approx(expected["reproduced_mean"])
    assert fcn_miou["reported"] == pytest.approx(41.0)
    directions = analysis.direction_summary(tables)
    assert directions["claim"].tolist() == ["EncNet+SE > FCN (mIoU)"]


def test_table_profile_reads_the_file_name_suffix():
    assert analysis.table_profile("table_ablation_demo") == "demo"
    assert analysis.table_profile("table_ablation") == "paper"
    assert analysis.table_profile("benchmarks") is None


def test_size_bins_show_each_runs_small_and_large_iou_and_the_controls_iou():
    names = ["background", "disc", "ring", "cross"]
    # Confusion [truth, prediction]: ring 3 right of 3 truth + 1 false → 3/4; cross 1 of 2, none extra → 1/2.
    confusion = np.array([[10, 0, 1, 0], [0, 4, 0, 0], [0, 0, 3, 0], [1, 0, 0, 1]])
    runs = {"EncNet": analysis.RunSummary(Path("r"), "EncNet", {}, {"mIoU_small": 12.5, "mIoU_large": 60.0}, True),
            "FCN": analysis.RunSummary(Path("f"), "FCN", {}, {}, True)}
    comparison = analysis.RunComparison(runs, "ss", [], names, {"EncNet": confusion, "FCN": confusion}, {}, None, {})
    table = comparison.size_bins()
    assert table.loc["EncNet", "mIoU_small"] == 12.5 and table.loc["EncNet", "mIoU_large"] == 60.0
    assert np.isnan(table.loc["FCN", "mIoU_small"])  # data without size bins
    assert table.loc["EncNet", "IoU_ring"] == pytest.approx(75.0)
    assert table.loc["EncNet", "IoU_cross"] == pytest.approx(50.0)
