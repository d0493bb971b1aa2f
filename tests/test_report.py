"""Tables and figures from run logs: the committed log-format fixtures give the expected (golden) outputs.

The fixtures under tests/fixtures/runs/ are invented round numbers in the real run-folder format, chosen so that
means and standard deviations can be checked by hand (the oracle below); the golden files pin the layout.
Regenerate the golden files after an intended layout change with ``ENCNET_UPDATE_GOLDEN=1 pytest
tests/test_report.py`` and review the diff.
"""

import io
import json
import math
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from encnet.report import cifar, figures, runlogs, tables
from encnet.report.reported import PLOT_LABEL, REPORTED_CSV, UNVERIFIED_MARK, load_reported
from encnet.experiments.outputs import write_outputs
from encnet.experiments.segmentation import experiments

FIXTURES = Path(__file__).parent / "fixtures"
RUNS = FIXTURES / "runs"
GOLDEN = FIXTURES / "golden"
DEMO = RUNS / "demo" / "pcontext"
# A frozen copy of reported.csv: corrections to the live file must not change the golden tables.
REPORTED = GOLDEN / "reported_fixture.csv"
# CI checks the clone out beside shared/ (../shared from the repository root).
SHARED_REPORTED = Path(__file__).resolve().parents[1].parent / "shared" / "paper" / "reported.csv"


def fixture_refs(experiment):
    """Map every row of the real demo experiment to the fixture run folders that play it."""
    enc_seeds = [DEMO / "seed0-fmtenc", DEMO / "seed1-fmtenc"]
    table = {
        "FCN": [(d, "ss") for d in (DEMO / "seed0-fmtfcn", DEMO / "seed1-fmtfcn")],
        "EncNet w/o SE-loss": [(d, "ss") for d in (DEMO / "seed0-fmtnose", DEMO / "seed1-fmtnose")],
        "EncNet": [(d, "ss") for d in enc_seeds],
        "EncNet R101": [(d, "ss") for d in enc_seeds],
        # The unfinished run stands in for the multi-scale row: it must read as "not run".
        "EncNet R101 MS+flip": [(DEMO / "seed0-fmtunfinished", "ss")],
        "α=0 (no SE-loss)": [(DEMO / "seed0-fmtnose", "ss")],
        "α=0.2": [(d, "ss") for d in enc_seeds],
        "α=0.4": [(DEMO / "seed0-fmtse04", "ss")],
        "K=16": [(DEMO / "seed0-fmtk16", "ss")],
        "K=32": [(DEMO / "seed0-fmtnose", "ss")],  # the K sweep runs without SE-loss
    }
    return [(row.label, d, tag) for row in experiment.rows for d, tag in table.get(row.label, [])]


def build(name, out_dir, profile="demo", reported=REPORTED, refs=None):
    experiment = experiments(profile)[name]
    refs = fixture_refs(experiment) if refs is None else refs
    return write_outputs(experiment, profile, refs, RUNS, out_dir, reported)


def table_lines(md: str) -> list[list[str]]:
    """The body rows of a Markdown table, as lists of stripped cells."""
    rows = [l for l in md.splitlines() if l.startswith("|")][2:]
    return [[c.strip() for c in row.strip("|").split("|")] for row in rows]


def check_golden(path: Path, golden_name: str):
    golden = GOLDEN / golden_name
    if os.environ.get("ENCNET_UPDATE_GOLDEN"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, golden)
    assert path.read_text() == golden.read_text(), f"{path} differs from {golden}"


def test_ablation_table_matches_golden_files(tmp_path):
    paths = build("ablation", tmp_path)
    names = sorted(p.name for p in paths)
    assert names == ["ablation_demo.csv", "ablation_demo.md", "ablation_demo.tex", "ablation_demo_directions.csv"]
    for path in paths:
        check_golden(path, path.name)


def test_reproduced_cells_are_mean_and_sample_std_over_seeds(tmp_path):
    build("ablation", tmp_path)
    csv = pd.read_csv(tmp_path / "tables" / "ablation_demo.csv")
    fcn = csv[(csv["row"] == "FCN") & (csv["metric"] == "mIoU")].iloc[0]
    # Hand oracle: seeds 40.0 and 42.0 → mean 41, sample std sqrt(((−1)² + 1²) / 1) = sqrt(2).
    assert fcn["reproduced_mean"] == pytest.approx(41.0)
    assert fcn["reproduced_std"] == pytest.approx(math.sqrt(2), abs=1e-4)
    assert fcn["n"] == 2
    md = (tmp_path / "tables" / "ablation_demo.md").read_text()
    assert "| FCN " in md and "71.00 ± 1.41" in md and "41.00 ± 1.41" in md


def test_missing_and_unfinished_runs_render_not_run(tmp_path):
    build("ablation", tmp_path)
    table = (tmp_path / "tables" / "ablation_demo.md").read_text()
    line = next(l for l in table.splitlines() if l.startswith("| EncNet R101 MS+flip"))
    assert line.count("not run") == 7  # every metric; the unfinished fixture run (no DONE) is not a result
    comparison = pd.read_csv(tmp_path / "tables" / "ablation_demo.csv")
    assert (comparison[comparison["row"] == "EncNet R101 MS+flip"]["n"] == 0).all()


def test_project_reported_csv_is_the_shared_one_byte_for_byte():
    if not SHARED_REPORTED.is_file():
        pytest.skip(f"shared/ is not beside this clone ({SHARED_REPORTED} absent): nothing to compare with")
    assert REPORTED_CSV.read_bytes() == SHARED_REPORTED.read_bytes(), (
        f"{REPORTED_CSV} differs from {SHARED_REPORTED}; copy it: cp {SHARED_REPORTED} {REPORTED_CSV}")


def test_live_reported_csv_has_every_value_checked():
    reported = load_reported()
    assert len(reported) == 518  # rows under the header
    assert set(reported["verified"]) == {"yes", "plot"}
    assert set(reported.loc[reported["verified"] == "plot", "experiment"]) == {"se_weight_curve", "codewords_curve"}


def test_table_1_shows_the_papers_49_2_and_51_7(tmp_path):
    build("ablation", tmp_path, reported=REPORTED_CSV)
    lines = {line[0]: line for line in table_lines((tmp_path / "tables" / "ablation_demo.md").read_text())}
    # Columns: label, pixAcc reported, reproduced, Δ, mIoU reported, reproduced, Δ, n.
    assert (lines["EncNet"][1], lines["EncNet"][4]) == ("79.4", "49.2")
    assert (lines["EncNet R101"][1], lines["EncNet R101"][4]) == ("80.4", "51.7")
    assert UNVERIFIED_MARK not in (tmp_path / "tables" / "ablation_demo.md").read_text()


def test_unverified_reported_values_carry_the_dagger_and_the_footnote(tmp_path):
    # The shipped file has no verified=no row; one added before it is checked must be marked.
    text = REPORTED.read_text().splitlines()
    fcn = next(i for i, l in enumerate(text) if l.startswith("pcontext_ablation,Table 1,FCN,") and ",mIoU," in l)
    text[fcn] = text[fcn].rsplit(",", 1)[0] + ",no"
    unchecked = tmp_path / "reported.csv"
    unchecked.write_text("\n".join(text) + "\n")
    build("ablation", tmp_path, reported=unchecked)
    md = (tmp_path / "tables" / "ablation_demo.md").read_text()
    line = next(l for l in md.splitlines() if l.startswith("| FCN "))
    assert "41.0" + UNVERIFIED_MARK in line and "73.4" + UNVERIFIED_MARK not in line
    assert md.count(UNVERIFIED_MARK) == 2  # the cell and the footnote
    comparison = tables.compare([tables.TableRow("EncNet", "pcontext_sota", "EncNet")], ["mIoU"],
                                load_reported(unchecked), runlogs.collect_results([]), "demo")
    assert comparison["reported_text"].iloc[0] == "51.7"


def test_whole_tables_have_the_papers_rows_in_order(tmp_path):
    reported = load_reported(REPORTED)
    # Oracle: the row counts of the paper's tables (Table 2: ten methods; Table 3: ten without and ten with
    # COCO; Table 4: ten; Table 5: four).
    expected = {"pcontext": {"Table 2": 10}, "voc": {"without COCO": 10, "with COCO": 10},
                "ade20k": {"val (Table 4)": 10, "test (Table 5)": 4}}
    for name, parts in expected.items():
        build(name, tmp_path)
        md = (tmp_path / "tables" / f"{name}_demo.md").read_text()
        header = [c.strip() for c in md.splitlines()[4].strip("|").split("|")]
        body = [dict(zip(header, line)) for line in table_lines(md)]
        papers = [line for line in body if line["source"] == "paper"]
        for part, count in parts.items():
            mine = [line["method"] for line in papers if line.get("part", part) == part]
            experiment = next(s.experiment for s in experiments("demo")[name].sections if s.label == part)
            assert mine == tables.paper_rows(reported, experiment) and len(mine) == count, (name, part)
        ours = [line for line in body if line["source"] == "ours (demo)"]
        assert [line["method"] for line in ours] == [r.label for r in experiments("demo")[name].rows]
    # Our rows follow the paper row they reproduce: EncNet R50 right after the paper's EncNet R50.
    body = table_lines((tmp_path / "tables" / "ade20k_demo.md").read_text())
    at = next(i for i, l in enumerate(body) if l[1] == "EncNet R50" and l[3] == "paper")
    assert body[at + 1][1:4] == ["EncNet R50", "—", "ours (demo)"]


def test_cifar_whole_table_6_has_eight_paper_models_with_depth_and_parameters():
    reported = load_reported(REPORTED)
    rows = [cifar.ModelRow("EncNet-8k16d", "EncNet-32k128d", 200_410, (("paper", "cifar10", "EncNet-32k128d"),))]
    comparison = cifar.compare_errors(rows, reported, cifar.collect_errors([]), "demo")
    table = cifar.display_whole(comparison, reported, "demo")
    paper = table[table["source"] == "paper"]
    assert len(paper) == 8 and paper["model"].tolist() == tables.paper_rows(reported, "cifar10")
    assert paper.set_index("model").loc["EncNet-16k64d", ["depth", "params (M)", "error (%)"]].tolist() == [
        "14", "3.5", "3.96"]
    ours = table[table["source"] == "ours (demo)"].iloc[0]
    assert (ours["params (M)"], ours["error (%)"]) == ("0.20", "not run")
    assert table.index[table["source"] == "ours (demo)"][0] == table.index[table["model"] == "EncNet-32k128d"][0] + 1


def test_voc_per_class_iou_comes_from_our_eval_record(tmp_path):
    voc = RUNS / "paper" / "voc" / "seed0-fmtvoc"
    build("voc", tmp_path, profile="paper", refs=[("train_aug (val)", voc, "ms_flip")])
    md = (tmp_path / "tables" / "voc.md").read_text()
    header = [c.strip() for c in md.splitlines()[4].strip("|").split("|")]
    ours = [dict(zip(header, l)) for l in table_lines(md) if l[3] == "ours"]
    assert [o["method"] for o in ours][:2] == ["train_aug (val)", "train_aug → trainval (test)"]
    # Hand oracle (the fixture's README): class i has IoU 40 + i; cow has no union; mIoU 1050 / 20.
    assert (ours[0]["aeroplane"], ours[0]["tvmonitor"], ours[0]["cow"], ours[0]["mIoU"]) == (
        "41.00", "60.00", "—", "52.50")
    assert ours[1]["mIoU"].startswith("not run: test server") and ours[1]["aeroplane"] == "not run"
    assert "background" not in header  # the paper's table has no background column
    tidy = pd.read_csv(tmp_path / "tables" / "voc.csv")
    assert tidy[(tidy["row"] == "train_aug (val)") & (tidy["metric"] == "IoU_bird")]["reproduced_mean"].iloc[0] == 43


def test_class_ious_need_class_names_and_skip_classes_without_union():
    assert runlogs.class_ious({"IoU": [1.0, 2.0]}) == {}
    assert runlogs.class_ious({"IoU": [1.0, None, float("nan")], "class_names": ["a", "b", "c"]}) == {"IoU_a": 1.0}
    with pytest.raises(ValueError, match="2 IoU values for 3 class names"):
        runlogs.class_ious({"IoU": [1.0, 2.0], "class_names": ["a", "b", "c"]})


def test_test_server_rows_are_not_run_by_construction(tmp_path):
    build("ade20k", tmp_path)
    md = (tmp_path / "tables" / "ade20k_demo.md").read_text()
    lines = {(l[1], l[3]): l for l in table_lines(md)}
    assert lines[("EncNet R101", "paper")][0] == "test (Table 5)" and "55.67" in lines[("EncNet R101", "paper")]
    assert "not run: test server" in lines[("EncNet R101 (test set)", "ours (demo)")]


def test_demo_and_paper_runs_never_share_a_table(tmp_path):
    demo = runlogs.collect_results([("EncNet", DEMO / "seed0-fmtenc", "ss")], RUNS)
    paper = runlogs.collect_results([("EncNet", RUNS / "paper" / "pcontext" / "seed0-fmtenc", "ss")], RUNS)
    rows = [tables.TableRow("EncNet", "pcontext_ablation", "EncNet+SE")]
    with pytest.raises(ValueError, match="never share"):
        tables.compare(rows, ["mIoU"], load_reported(REPORTED), pd.concat([demo, paper]), "demo")
    with pytest.raises(ValueError, match="never share"):
        tables.compare(rows, ["mIoU"], load_reported(REPORTED), demo, "paper")
    # Paper tables keep the plain name and compute Δ; demo tables say "demo" in title and file name.
    written = tables.write_table(tables.compare(rows, ["mIoU"], load_reported(REPORTED), paper, "paper"), "ablation",
                                 "Ablation", "caption", "paper", tmp_path)
    md = written[0].read_text()
    assert written[0].name == "ablation.md" and "demo" not in md
    assert "| +0.80 " in md.replace("|  ", "| ")  # 50.0 − 49.2
    assert tables.output_name("ablation", "demo") == "ablation_demo"


def test_direction_checks_state_the_sign_against_the_paper(tmp_path):
    build("ablation", tmp_path)
    checks = pd.read_csv(tmp_path / "tables" / "ablation_demo_directions.csv")
    enc_fcn = checks[checks["claim"] == "EncNet > FCN (mIoU)"].iloc[0]
    assert enc_fcn["reproduced_gap"] == pytest.approx(48.25 - 41.0)
    # Hand oracle, seeds paired: differences 48 − 40 = 8 and 48.5 − 42 = 6.5; mean 7.25, sd 1.5/√2, se 0.75,
    # t(0.975, 1) = 12.7062 → half-width 9.5297: the interval holds 0, so two seeds cannot decide.
    assert enc_fcn["n_pairs"] == 2
    assert (enc_fcn["ci_low"], enc_fcn["ci_high"]) == (pytest.approx(7.25 - 9.5297, abs=1e-3),
                                                       pytest.approx(7.25 + 9.5297, abs=1e-3))
    assert enc_fcn["verdict"] == "inconclusive"
    # The fixtures' eval records have no per-class IoU, so the demo's control precondition is unmeasured.
    assert "controls not measured" in enc_fcn["note"]
    assert checks.set_index("claim").loc["EncNet R101 MS+flip > EncNet R101 (mIoU)", "verdict"] == "not run"


def _results(rows: dict) -> pd.DataFrame:
    """Per-seed results in ``runlogs.collect_results`` layout from {row: {metric: [values by seed]}}."""
    return pd.DataFrame([{"row": row, "seed": seed, "metric": metric, "value": value, "profile": "demo"}
                         for row, metrics in rows.items() for metric, values in metrics.items()
                         for seed, value in enumerate(values)])


@pytest.mark.parametrize("ring, verdict", [(80.0, "reproduced"), (30.0, "inconclusive")])
def test_a_direction_needs_every_arm_to_learn_the_controls(ring, verdict):
    results = _results({
        "A": {"mIoU": [50, 52, 51, 53, 50], "IoU_ring": [90] * 5, "IoU_cross": [85] * 5},
        "B": {"mIoU": [40, 41, 40, 42, 41], "IoU_ring": [ring] * 5, "IoU_cross": [85] * 5},
    })
    comparison = pd.DataFrame({"row": ["A", "B"], "metric": ["mIoU"] * 2, "reported": [float("nan")] * 2})
    check = tables.direction_checks(comparison, [tables.Direction("A", "B", "mIoU", ("IoU_ring", "IoU_cross"))],
                                    results).iloc[0]
    assert check["verdict"] == verdict and check["controls_min"] == pytest.approx(min(ring, 85.0))
    assert check["reproduced_gap"] == pytest.approx(10.4) and check["ci_low"] > 0
    # Reversed arms: the same interval on the other side of 0 contradicts the claim.
    reverse = tables.direction_checks(comparison, [tables.Direction("B", "A", "mIoU", ("IoU_ring",))], results)
    assert reverse.iloc[0]["verdict"] == ("contradicted" if ring >= 50 else "inconclusive")


def test_paper_rows_get_a_verdict_against_the_reported_number():
    reported = load_reported(REPORTED)
    rows = [tables.TableRow("EncNet", "pcontext_ablation", "EncNet+SE")]  # reported mIoU 49.2
    for values, verdict in (([49.0, 49.6, 49.3], "within"), ([50.0, 50.1, 49.9], "above"), ([47.0, 47.2], "below")):
        results = _results({"EncNet": {"mIoU": values}}).assign(profile="paper", run_dir="r", eval="ss")
        line = tables.compare(rows, ["mIoU"], reported, results, "paper").iloc[0]
        assert line["vs_reported"] == verdict, values


BEST_NOTE = "Best validation epoch, the release's checkpoint selection"


def test_best_validation_note_gives_the_releases_choice_beside_the_last_epoch(tmp_path):
    build("ablation", tmp_path)
    md = (tmp_path / "tables" / "ablation_demo.md").read_text()
    note = next(l for l in md.splitlines() if BEST_NOTE in l)
    # Hand oracle (fixture README): by (pixAcc + mIoU) / 2, seed 0 peaks at epoch 2 (79 / 50, score 64.5 > 63 at
    # epoch 3), seed 1 at its last epoch 3 (78.5 / 48.5). Mean pixAcc 78.75, sample std 0.5 / sqrt(2) = 0.354;
    # mIoU 49.25, std 1.5 / sqrt(2) = 1.061.
    assert "EncNet pixAcc 78.75 ± 0.35, mIoU 49.25 ± 1.06 (epochs 2–3 of 3)" in note
    # Each seed's epoch goes to the CSV, not the prose.
    csv = pd.read_csv(tmp_path / "tables" / "ablation_demo.csv", keep_default_na=False)
    assert set(csv.loc[csv["row"] == "EncNet", "best_val_epochs"]) == {"0:2;1:3"}
    assert set(csv.loc[csv["row"] == "FCN", "best_val_epochs"]) == {""}
    assert "EncNet R101 pixAcc 78.75 ± 0.35" in note  # the demo's R101 row is the same runs
    # FCN and w/o SE-loss logged no validation; the MS+flip row's only run is unfinished: all left out.
    assert "FCN" not in note and "w/o SE-loss" not in note and "MS+flip" not in note
    # The table's own cells stay the last epoch's (eval.json: 78.0 and 78.5 → 78.25).
    line = next(l for l in table_lines(md) if l[0] == "EncNet")
    assert line[2] == "78.25 ± 0.35"
    best = runlogs.collect_best_validation(
        [("EncNet", DEMO / f"seed{s}-fmtenc", "ss") for s in (0, 1)], RUNS)
    assert best[["seed", "best_val_epoch", "epochs"]].values.tolist() == [[0, 2, 3], [1, 3, 3]]
    assert best["best_val_pixAcc"].tolist() == [79.0, 78.5] and best["best_val_mIoU"].tolist() == [50.0, 48.5]
    assert best["run_dir"].tolist() == ["demo/pcontext/seed0-fmtenc", "demo/pcontext/seed1-fmtenc"]


def test_best_validation_note_for_one_seed_and_none_without_logged_validation():
    best = runlogs.collect_best_validation([("EncNet", DEMO / "seed0-fmtenc", "ss"),
                                            ("FCN", DEMO / "seed0-fmtfcn", "ss"),
                                            ("MS", DEMO / "seed0-fmtenc", "ms_flip"),
                                            ("MS no flip", DEMO / "seed0-fmtenc", "ms")], RUNS)
    # FCN logged no validation and there is no eval_ms.json: as in the table, those rows have nothing to show.
    assert best["row"].tolist() == ["EncNet", "MS"]
    note = tables.best_validation_note(best, ["FCN", "EncNet"])
    assert note.endswith(": EncNet pixAcc 79.00, mIoU 50.00 (epoch 2 of 3).")
    last = best.assign(best_val_epoch=3)
    assert tables.best_validation_note(last, ["EncNet"]).endswith("(the last epoch on every seed).")
    assert tables.best_epochs_by_row(best) == {"EncNet": "0:2", "MS": "0:2"}
    assert tables.best_validation_note(best, ["FCN"]) is None
    assert tables.best_validation_note(runlogs.collect_best_validation([("FCN", DEMO / "seed0-fmtfcn", "ss")]),
                                       ["FCN"]) is None


def test_tables_without_logged_validation_have_no_best_note_and_the_same_layout(tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(RUNS, runs)
    for seed in (0, 1):  # the same runs, as logged before training recorded best_val_*
        path = runs / "demo" / "pcontext" / f"seed{seed}-fmtenc" / "metrics.jsonl"
        records = [json.loads(l) for l in path.read_text().splitlines()]
        path.write_text("".join(json.dumps({k: v for k, v in r.items() if not k.startswith("best_val_")}) + "\n"
                                for r in records))
    experiment = experiments("demo")["ablation"]
    refs = [(label, runs / Path(d).relative_to(RUNS), tag) for label, d, tag in fixture_refs(experiment)]
    write_outputs(experiment, "demo", refs, runs, tmp_path / "without", REPORTED)
    build("ablation", tmp_path / "with")
    for suffix in ("md", "tex", "csv"):
        without = (tmp_path / "without" / "tables" / f"ablation_demo.{suffix}").read_text()
        with_ = (tmp_path / "with" / "tables" / f"ablation_demo.{suffix}").read_text()
        assert "Best validation" not in without
        if suffix == "csv":  # the tidy numbers are the last epoch's either way; with validation, each seed's best
            assert pd.read_csv(io.StringIO(without)).equals(
                pd.read_csv(io.StringIO(with_)).drop(columns="best_val_epochs"))
        elif suffix == "md":
            assert without.splitlines() == [l for l in with_.splitlines() if BEST_NOTE not in l]
        else:  # the note is the first footnote under the tabular
            note = next(l for l in (tmp_path / "with" / "tables" / "ablation_demo.md").read_text().splitlines()
                        if BEST_NOTE in l)[2:]
            assert with_.replace(tables._latex_text(note) + r" \\ ", "") == without != with_


def test_sweep_figure_points_match_golden_and_images_are_written(tmp_path):
    paths = build("se_weight", tmp_path)
    assert sorted(p.name for p in paths) == ["se_weight_demo.csv", "se_weight_demo.pdf", "se_weight_demo.png",
                                             "se_weight_demo_directions.csv"]
    check_golden(tmp_path / "figures" / "se_weight_demo.csv", "se_weight_demo.csv")
    assert (tmp_path / "figures" / "se_weight_demo.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "figures" / "se_weight_demo.pdf").read_bytes()[:4] == b"%PDF"
    points = pd.read_csv(tmp_path / "figures" / "se_weight_demo.csv")
    missing = points[points["n"] == 0]["x"].unique().tolist()
    assert sorted(missing) == [0.1, 0.8]  # no fixture runs: gaps in the curve, named in the panel title
    codewords = build("codewords", tmp_path)
    assert (tmp_path / "figures" / "codewords_demo.png").is_file() and len(codewords) == 4
    assert (tmp_path / "tables" / "codewords_demo_directions.csv") in codewords  # K = 16, 32 against K = 0


def test_reported_csv_errors_name_the_problem(tmp_path):
    bad = tmp_path / "reported.csv"
    text = (Path(load_reported.__globals__["REPORTED_CSV"])).read_text().splitlines()
    bad.write_text("\n".join([text[0], text[1].rsplit(",", 1)[0] + ",maybe"]) + "\n")
    with pytest.raises(ValueError, match="'verified' must be one of"):
        load_reported(bad)
    with pytest.raises(FileNotFoundError, match="reinstall"):
        load_reported(tmp_path / "absent.csv")


def test_latex_output_escapes_symbols(tmp_path):
    build("ablation", tmp_path)
    tex = (tmp_path / "tables" / "ablation_demo.tex").read_text()
    assert r"$\pm$" in tex and "±" not in tex and "†" not in tex and r"\begin{tabular}" in tex


def test_sweep_figures_carry_the_papers_curve_read_from_the_plot(tmp_path):
    build("se_weight", tmp_path)
    points = pd.read_csv(tmp_path / "figures" / "se_weight_demo.csv")
    paper = points[points["source"] == "paper"]
    # reported.csv's Figure 5 (left) curve, five α values per metric.
    assert paper[paper["metric"] == "mIoU"].set_index("x")["mean"].to_dict() == {
        0.0: 47.6, 0.1: 49.01, 0.2: 49.22, 0.4: 49.18, 0.8: 49.05}
    assert PLOT_LABEL == "paper, read from Fig. 5"


def test_log2_axis_places_k0_one_step_left_as_gap():
    assert figures.positions([32, 0, 8, 16, 64], log2_x=True) == {0.0: 2.0, 8.0: 3.0, 16.0: 4.0, 32.0: 5.0, 64.0: 6.0}
    assert figures.positions([0, 0.2], log2_x=False) == {0.0: 0.0, 0.2: 0.2}


@pytest.mark.parametrize("profile", ["demo", "paper"])
def test_codewords_figure_handles_gap_and_marks_extra_points(tmp_path, profile):
    reported = load_reported(REPORTED)
    results = pd.DataFrame({"experiment": "pcontext", "row": ["K=0", "K=8", "K=32"], "seed": 0, "profile": profile,
                            "eval": "ss", "metric": "mIoU", "value": [40.0, 41.0, 42.0], "run_dir": ["a", "b", "c"]})
    points = figures.sweep_points(results, {"K=0": 0, "K=8": 8, "K=16": 16, "K=32": 32}, ["mIoU"], profile)
    paper = figures.paper_points(reported, "codewords_curve", ["mIoU"])
    assert paper["x"].tolist() == [0.0, 16.0, 32.0] and paper["value"].tolist() == [45.9, 47.3, 47.6]
    paths = figures.plot_sweep(points, "codewords", "K", "K", 32.0, "paper: K = 32", profile, tmp_path, log2_x=True,
                               paper=paper, zero_label="GAP")
    assert paths[0].read_bytes()[:4] == b"\x89PNG"
    data = pd.read_csv(paths[2])
    ours = data[data["source"] == "reproduced"].set_index("x")
    assert ours["extra"].to_dict() == {0.0: False, 8.0: True, 16.0: False, 32.0: False}  # 8 is not in Fig. 5
    assert ours.loc[16.0, "n"] == 0  # not run: a gap, named in the panel title


def test_a_pipe_inside_a_benchmark_cell_does_not_split_the_row():
    import re

    from encnet.report.benchmarks import markdown_table

    frame = pd.DataFrame({"target": ["decoded pixels: max |diff|", "plain"], "measured": [0.0, 1.5]})
    rows = markdown_table(frame).splitlines()
    unescaped = [len(re.findall(r"(?<!\\)\|", row)) for row in rows]
    assert unescaped == [3, 3, 3, 3]  # header, rule, two rows: two columns each
    assert "max \\|diff\\|" in rows[2]


def test_learning_note_counts_the_seeds_that_learned_and_names_required_arms_that_did_not():
    results = _results({
        "EncNet": {"mIoU_scene": [70, 65, 49.9, 72, 80, 66, 71, 69, 75, 68]},  # 9 of 10: meets a 90 % share
        "EncNet R101": {"mIoU_scene": [70, 20, 30]},  # 1 of 3
        "FCN": {"mIoU_scene": [5, 8, 7]},  # not required: it cannot see the scene by design
    })
    criterion = tables.Learned("mIoU_scene", 50.0, 0.9, ("EncNet", "EncNet R101"), "reads the scene")
    note = tables.learning_note(results, ["FCN", "EncNet", "EncNet R101", "absent"], criterion)
    assert "an arm reads the scene on a seed when mIoU_scene ≥ 50;" in note
    assert "— not met by EncNet R101. " in note  # EncNet's 9 of 10 meets the share, so only R101 is named
    assert note.endswith("Seeds that did: FCN 0/3; EncNet 9/10; EncNet R101 1/3.")
    met = tables.learning_note(results[results["row"] != "EncNet R101"], ["EncNet"], criterion)
    assert "— met." in met
    assert tables.learning_note(results, ["absent"], criterion) is None
