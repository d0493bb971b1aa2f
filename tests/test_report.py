"""Tables and figures from run logs: the committed log-format fixtures give the expected (golden) outputs.

The fixtures under tests/fixtures/runs/ are invented round numbers in the real run-folder format, chosen so that
means and standard deviations can be checked by hand (the oracle below); the golden files pin the layout.
Regenerate the golden files after an intended layout change with ``ENCNET_UPDATE_GOLDEN=1 pytest
tests/test_report.py`` and review the diff.
"""

import math
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from encnet.report import runlogs, tables
from encnet.report.reported import UNVERIFIED_MARK, load_reported
from encnet.reproduce import experiments, write_outputs

FIXTURES = Path(__file__).parent / "fixtures"
RUNS = FIXTURES / "runs"
GOLDEN = FIXTURES / "golden"
DEMO = RUNS / "demo" / "pcontext"
# A frozen copy of reported.csv: corrections to the live file must not change the golden tables.
REPORTED = GOLDEN / "reported_fixture.csv"


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


def build(name, out_dir, profile="demo"):
    experiment = experiments(profile)[name]
    return write_outputs(experiment, profile, fixture_refs(experiment), RUNS, out_dir, REPORTED)


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
    assert line.count("not run") == 2  # pixAcc and mIoU; the unfinished fixture run (no DONE) is not a result
    comparison = pd.read_csv(tmp_path / "tables" / "ablation_demo.csv")
    assert (comparison[comparison["row"] == "EncNet R101 MS+flip"]["n"] == 0).all()


def test_unverified_reported_values_carry_the_dagger_and_the_footnote(tmp_path):
    reported = load_reported(REPORTED)
    build("ablation", tmp_path)
    md = (tmp_path / "tables" / "ablation_demo.md").read_text()
    fcn = reported[(reported["row"] == "FCN") & (reported["metric"] == "mIoU")
                   & (reported["experiment"] == "pcontext_ablation")].iloc[0]
    expected = fcn["value_text"] + (UNVERIFIED_MARK if fcn["verified"] == "no" else "")
    line = next(l for l in md.splitlines() if l.startswith("| FCN "))
    assert expected in line
    assert (UNVERIFIED_MARK in md) == (reported["verified"] == "no").any()
    # A verified value never gets the mark: the pcontext-60 number is verified in reported.csv.
    comparison = tables.compare([tables.TableRow("EncNet", "pcontext_sota", "EncNet")], ["mIoU"], reported,
                                runlogs.collect_results([]), "demo")
    assert comparison["reported_text"].iloc[0] == "51.7"


def test_test_server_rows_are_not_run_by_construction(tmp_path):
    build("ade20k", tmp_path)
    md = (tmp_path / "tables" / "ade20k_demo.md").read_text()
    line = next(l for l in md.splitlines() if l.startswith("| EncNet R101 (test set)"))
    assert "55.67" in line and "not run: test server" in line


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
    assert "| +1.40 " in md.replace("|  ", "| ")  # 50.0 − 48.6
    assert tables.output_name("ablation", "demo") == "ablation_demo"


def test_direction_checks_state_the_sign_against_the_paper(tmp_path):
    build("ablation", tmp_path)
    checks = pd.read_csv(tmp_path / "tables" / "ablation_demo_directions.csv")
    enc_fcn = checks[checks["claim"] == "EncNet > FCN (mIoU)"].iloc[0]
    assert enc_fcn["reproduced_gap"] == pytest.approx(48.25 - 41.0)
    assert bool(enc_fcn["holds"]) is True


def test_sweep_figure_points_match_golden_and_images_are_written(tmp_path):
    paths = build("se_weight", tmp_path)
    assert sorted(p.name for p in paths) == ["se_weight_demo.csv", "se_weight_demo.pdf", "se_weight_demo.png"]
    check_golden(tmp_path / "figures" / "se_weight_demo.csv", "se_weight_demo.csv")
    assert (tmp_path / "figures" / "se_weight_demo.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "figures" / "se_weight_demo.pdf").read_bytes()[:4] == b"%PDF"
    points = pd.read_csv(tmp_path / "figures" / "se_weight_demo.csv")
    missing = points[points["n"] == 0]["x"].unique().tolist()
    assert sorted(missing) == [0.1, 0.8]  # no fixture runs: gaps in the curve, named in the panel title
    codewords = build("codewords", tmp_path)
    assert (tmp_path / "figures" / "codewords_demo.png").is_file() and len(codewords) == 3


def test_reported_csv_errors_name_the_problem(tmp_path):
    bad = tmp_path / "reported.csv"
    text = (Path(load_reported.__globals__["REPORTED_CSV"])).read_text().splitlines()
    bad.write_text("\n".join([text[0], text[1].rsplit(",", 1)[0] + ",maybe"]) + "\n")
    with pytest.raises(ValueError, match="'verified' must be 'yes' or 'no'"):
        load_reported(bad)
    with pytest.raises(FileNotFoundError, match="reinstall"):
        load_reported(tmp_path / "absent.csv")


def test_latex_output_escapes_symbols(tmp_path):
    build("ablation", tmp_path)
    tex = (tmp_path / "tables" / "ablation_demo.tex").read_text()
    assert r"$\pm$" in tex and "±" not in tex and "†" not in tex and r"\begin{tabular}" in tex
