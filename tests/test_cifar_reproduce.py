"""CIFAR-10 table and curves (encnet.experiments.cifar behind reproduce/table_cifar10.py and figure_cifar_curves.py;
encnet.report.cifar).

The fixtures under tests/fixtures/runs_cifar/ are invented round numbers in the real classification run-folder
format (see its README): means and standard deviations are checked against hand-computed values, the golden
files pin the layout. Regenerate them after an intended layout change with
``ENCNET_UPDATE_GOLDEN=1 pytest tests/test_cifar_reproduce.py`` and review the diff.
"""

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from encnet.engine.config import load_config
from encnet.models.cifar import build_cifar_model, count_parameters
from encnet.report import cifar
from encnet.report.reported import load_reported

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures" / "runs_cifar"
RUNS = FIXTURES / "runs"
GOLDEN = FIXTURES / "golden"
REPORTED = GOLDEN / "reported_fixture.csv"  # frozen: corrections to the live reported.csv leave the goldens alone


from encnet.experiments import cifar as script
FIXTURE_RUNS = {
    "demo": {"EncNet-32k128d": ["cifar10_encnet_32k128d/seed0-fmtenc", "cifar10_encnet_32k128d/seed1-fmtenc"],
             "SE-ResNet-64d": ["cifar10_se_resnet_64d/seed0-fmtse", "cifar10_se_resnet_64d/seed1-fmtse"],
             "ResNet-64d": ["cifar10_resnet_64d/seed0-fmtunfinished"],
             "EncNet-16k64d": ["cifar10_encnet_16k64d/seed0-missing"]},
    # Only EncNet ran; the baselines' folders do not exist.
    "paper": {"EncNet-32k128d": ["cifar10_encnet_32k128d/seed0-fmtenc"],
              "SE-ResNet-64d": ["cifar10_se_resnet_64d/seed0-missing"],
              "ResNet-64d": ["cifar10_resnet_64d/seed0-missing"],
              "EncNet-16k64d": ["cifar10_encnet_16k64d/seed0-missing"]},
}


def build(output, profile, out_dir):
    """The script's outputs from the fixture folders, with each row's config as the fixture run recorded it."""
    run_dirs = {paper: [RUNS / profile / d for d in dirs] for paper, dirs in FIXTURE_RUNS[profile].items()}
    configs = {}
    for paper, config_file, _ in script.MODELS:
        recorded = run_dirs[paper][0] / "config.yaml"
        configs[paper] = (load_config(recorded) if recorded.is_file()
                          else load_config(REPO / "configs" / profile / config_file, ["train.epochs=3"]))
    return script.write_outputs(output, profile, configs, run_dirs, RUNS, out_dir, REPORTED)


def check_golden(path: Path):
    golden = GOLDEN / path.name
    if os.environ.get("ENCNET_UPDATE_GOLDEN"):
        shutil.copy(path, golden)
    assert path.read_text() == golden.read_text(), f"{path} differs from {golden}"


def test_demo_table_matches_golden_files_and_hand_computed_statistics(tmp_path):
    paths = build("table", "demo", tmp_path)
    assert sorted(p.name for p in paths) == ["cifar10_demo.csv", "cifar10_demo.md", "cifar10_demo.tex",
                                             "cifar10_demo_directions.csv"]
    for path in paths:
        check_golden(path)
    table = pd.read_csv(tmp_path / "tables" / "cifar10_demo.csv").set_index("row")
    # Hand oracle: EncNet 40, 42 → 41 ± √2; SE-ResNet 44, 48 → 46 ± √8 (sample std, ddof 1).
    assert table.loc["EncNet-8k16d", "reproduced_mean"] == pytest.approx(41.0)
    assert table.loc["EncNet-8k16d", "reproduced_std"] == pytest.approx(math.sqrt(2), abs=1e-4)
    assert table.loc["SE-ResNet-16d", "reproduced_mean"] == pytest.approx(46.0)
    assert table.loc["SE-ResNet-16d", "reproduced_std"] == pytest.approx(math.sqrt(8), abs=1e-4)
    # The direction check run_all's summary reads, seeds paired: SE-ResNet − EncNet = 44 − 40, 48 − 42 → 4, 6;
    # mean 5, se 1, t(0.975, 1) = 12.7062: the interval [−7.71, +17.71] holds 0 → inconclusive with two seeds.
    checks = pd.read_csv(tmp_path / "tables" / "cifar10_demo_directions.csv").set_index("claim")
    assert checks.loc["EncNet-4k16d < SE-ResNet-16d (test error)", "verdict"] == "not run"
    check = checks.loc["EncNet-8k16d < SE-ResNet-16d (test error)"]
    assert check["reproduced_gap"] == pytest.approx(5.0) and check["n_pairs"] == 2
    assert (check["ci_low"], check["ci_high"]) == (pytest.approx(5 - 12.7062, abs=1e-3),
                                                   pytest.approx(5 + 12.7062, abs=1e-3))
    assert check["verdict"] == "inconclusive"
    # Table 6's order, SE-ResNet < ResNet: the ResNet run stopped, so it is not run.
    assert checks.loc["SE-ResNet-16d < ResNet-16d (test error)", "verdict"] == "not run"
    # The stopped run (no DONE, no eval.json) is "not run", never a number.
    assert table.loc["ResNet-16d", "status"] == "not run" and table.loc["ResNet-16d", "n"] == 0
    # Demo runs measure generated textures, not CIFAR-10: no Δ against the paper.
    assert table[["delta paper", "delta model zoo"]].isna().all().all()
    assert table.loc["EncNet-8k16d", "paper_model"] == "EncNet-32k128d"
    for name in ("EncNet-8k16d", "EncNet-4k16d", "SE-ResNet-16d", "ResNet-16d"):
        assert table.loc[name, "parameters"] == count_parameters(build_cifar_model(name))
    assert list(table.index) == ["ResNet-16d", "SE-ResNet-16d", "EncNet-4k16d", "EncNet-8k16d"]  # Table 6 order
    md = (tmp_path / "tables" / "cifar10_demo.md").read_text()
    assert "| EncNet-8k16d " in md and "41.00 ± 1.41" in md and "not comparable with the CIFAR-10" in md
    # The paper's gaps are Table 6's: EncNet-32k128d 3.45 − SE-ResNet-64d 4.65, EncNet-16k64d 3.96 − 4.65.
    assert ("Direction EncNet-8k16d < SE-ResNet-16d (test error): paper -1.20, reproduced -5.00 [-17.71, +7.71] "
            "(paired t, 95 % over 2 paired seeds) → inconclusive.") in md
    assert "Direction EncNet-4k16d < SE-ResNet-16d (test error): paper -0.69; reproduced: not run." in md
    # Best logged epoch per run (fixtures: the last epoch is every run's best): 40, 42 and 44, 48.
    assert ("Best test error over the logged epochs (the release's reporting; the table shows the last): "
            "SE-ResNet-16d 46.00 ± 2.83; EncNet-8k16d 41.00 ± 1.41.") in md


def test_paper_table_gives_delta_against_paper_and_model_zoo(tmp_path):
    build("table", "paper", tmp_path)
    table = pd.read_csv(tmp_path / "tables" / "cifar10.csv").set_index("row")
    enc = table.loc["EncNet-32k128d"]
    assert (enc["reproduced_mean"], enc["n"]) == (pytest.approx(3.6), 1)
    assert enc["delta paper"] == pytest.approx(3.6 - 3.45) and enc["delta model zoo"] == pytest.approx(3.6 - 3.35)
    assert (table.loc[["SE-ResNet-64d", "ResNet-64d", "EncNet-16k64d"], "status"] == "not run").all()
    md = (tmp_path / "tables" / "cifar10.md").read_text()
    # The whole Table 6: the paper's line, the model zoo's checkpoint, then ours with Δ against both.
    lines = [[c.strip() for c in row.strip("|").split("|")] for row in md.splitlines()
             if row.startswith("| EncNet-32k128d ")]
    params = count_parameters(build_cifar_model("EncNet-32k128d")) / 1e6
    assert lines == [["EncNet-32k128d", "paper", "14", "16.8", "3.45", "—", "—", ""],
                     ["EncNet-32k128d", "authors' model zoo", "—", "—", "3.35", "—", "—", ""],
                     ["EncNet-32k128d", "ours", "—", f"{params:.2f}", "3.60", "+0.15", "+0.25", "1"]]
    assert "stands for" not in md
    assert "Direction EncNet-32k128d < SE-ResNet-64d (test error): paper -1.20; reproduced: not run." in md
    t = load_config(RUNS / "paper" / "cifar10_encnet_32k128d" / "seed0-fmtenc" / "config.yaml").train
    assert f"wd {t.weight_decay:g}, cosine, batch {t.batch_size}, {t.epochs} epochs, pad-4 crop + flip" in md


def test_curves_are_per_epoch_means_over_seeds_and_figure_files_are_written(tmp_path):
    paths = build("curves", "demo", tmp_path)
    assert sorted(p.name for p in paths) == ["cifar_curves_demo.csv", "cifar_curves_demo.pdf",
                                             "cifar_curves_demo.png"]
    check_golden(tmp_path / "figures" / "cifar_curves_demo.csv")
    assert (tmp_path / "figures" / "cifar_curves_demo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "figures" / "cifar_curves_demo.pdf").read_bytes()[:5] == b"%PDF-"
    points = pd.read_csv(tmp_path / "figures" / "cifar_curves_demo.csv")
    point = points.set_index(["row", "split", "epoch"])
    # Hand oracle from the fixtures' metrics.jsonl: test error at epoch 2 is 50 and 54 → 52 ± √8.
    assert point.loc[("EncNet-8k16d", "test", 2), "mean"] == pytest.approx(52.0)
    assert point.loc[("EncNet-8k16d", "test", 2), "std"] == pytest.approx(math.sqrt(8), abs=1e-4)
    assert point.loc[("EncNet-8k16d", "train", 3), "mean"] == pytest.approx(49.0)
    # SE-ResNet seed 1 evaluated every second epoch: epoch 1's test point has one seed, its train point two.
    assert point.loc[("SE-ResNet-16d", "test", 1), "n"] == 1 and point.loc[("SE-ResNet-16d", "test", 1), "mean"] == 76
    assert point.loc[("SE-ResNet-16d", "train", 1), "n"] == 2
    assert "ResNet-16d" not in set(points["row"])  # the stopped run draws nothing
    # The last test point of each run is its final evaluation: curves and table read the same runs.
    assert point.loc[("EncNet-8k16d", "test", 3), "mean"] == pytest.approx(41.0)


def test_demo_and_paper_runs_never_share_an_output():
    demo = cifar.collect_errors([("EncNet-8k16d", RUNS / "demo" / "cifar10_encnet_32k128d" / "seed0-fmtenc")], RUNS)
    with pytest.raises(ValueError, match="never share"):
        cifar.compare_errors([cifar.ModelRow("EncNet-8k16d", "EncNet-32k128d")], load_reported(REPORTED), demo,
                             "paper")


def test_error_direction_pairs_seeds_and_prints_lower_minus_higher():
    comparison = pd.DataFrame({"row": ["A", "B"], "reported paper": [3.0, 4.0]})
    results = pd.DataFrame({"row": ["A"] * 5 + ["B"] * 5, "seed": list(range(5)) * 2, "metric": "error",
                            "value": [10.0, 11.0, 12.0, 10.5, 11.5] + [12.0, 13.2, 13.9, 12.4, 13.6]})
    check = cifar.error_direction_check(comparison, "A", "B", results)
    assert check["reported_gap"] == pytest.approx(1.0) and check["reproduced_gap"] == pytest.approx(2.02)
    assert check["verdict"] == "reproduced"
    assert cifar.error_direction_check(comparison, "B", "A", results)["verdict"] == "contradicted"
    note = cifar.error_direction_note(comparison, "A", "B", results)
    assert note.startswith("Direction A < B (test error): paper -1.00, reproduced -2.02 [")
    assert note.endswith("reproduced.")



def test_paper_dry_run_lists_the_papers_recipe(capsys, tmp_path):
    assert script.main("table", ["--profile", "paper", "--dry-run", "--runs-root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    blocks = out.split("\n[")[1:]
    assert len(blocks) == 4
    for block in blocks:
        assert "configs/paper/cifar10_" in block and str(tmp_path / "paper") in block
        for setting in ("task=classification", "dataset=cifar10", "block=preact", "crop_size=32", "hflip=True",
                        "batch_size=128", "base_lr=0.1 (effective lr 0.1)", "momentum=0.9", "weight_decay=0.0005",
                        "lr_schedule=cosine", "epochs=600"):
            assert setting in block, f"{setting} missing from\n{block}"
    counts = {name: count_parameters(build_cifar_model(name)) for name in script.PAPER_NAMES}
    assert f"model=ResNet-64d block=preact attention=none widen=4 parameters={counts['ResNet-64d']:,}" in blocks[0]
    assert "model=SE-ResNet-64d block=preact attention=se widen=4" in blocks[1]
    assert (f"model=EncNet-16k64d block=preact attention=encoding K=16 smoothing=U(0,1)/0.5 widen=4 "
            f"parameters={counts['EncNet-16k64d']:,}") in blocks[2]
    assert "model=EncNet-32k128d block=preact attention=encoding K=32 smoothing=U(0,1)/0.5 widen=8" in blocks[3]
    assert not (tmp_path / "paper").exists()


def test_best_error_is_the_lowest_logged_test_error_of_each_run(tmp_path):
    """Hand oracle: epochs 30, 25, 27 (val every epoch) → best 25, last 27; a run logging only epoch 2 → 31."""
    source = RUNS / "demo" / "cifar10_encnet_32k128d" / "seed0-fmtenc"
    runs = []
    for seed, errors in ((0, [30.0, 25.0, 27.0]), (1, [None, 31.0, 33.0])):
        run = tmp_path / "demo" / "cifar10_encnet_32k128d" / f"seed{seed}-best"
        shutil.copytree(source, run)
        recorded = (source / "config.yaml").read_text()
        (run / "config.yaml").write_text(recorded.replace("\nseed: 0\n", f"\nseed: {seed}\n"))
        lines = [json.dumps({"epoch": e + 1, **({} if v is None else {"val_top1_error": v})})
                 for e, v in enumerate(errors)]
        (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
        runs.append(("EncNet-8k16d", run))
    best = cifar.collect_best_errors(runs, tmp_path).sort_values("seed")
    assert list(best["value"]) == [25.0, 31.0] and set(best["metric"]) == {"best_error"}
    note = script.best_error_note(best, ["ResNet-16d", "EncNet-8k16d"])
    assert note.endswith(f"EncNet-8k16d 28.00 ± {math.sqrt(18):.2f}.") and "ResNet-16d" not in note
    assert "no run logged one" in script.best_error_note(best.iloc[:0], ["EncNet-8k16d"])


def test_figure_script_runs_as_a_command():
    done = subprocess.run([sys.executable, str(REPO / "reproduce" / "figure_cifar_curves.py"), "--dry-run",
                           "--runs-root", "/nonexistent-runs"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "model=EncNet-8k16d block=preact attention=encoding K=8" in done.stdout and "epochs=12" in done.stdout
    assert "model=EncNet-4k16d block=preact attention=encoding K=4" in done.stdout
    assert done.stdout.count("[to run]") == 4 * len(script.DEMO_SEEDS)  # four networks × the demo seeds


def test_from_logs_without_runs_writes_not_run_outputs(tmp_path):
    args = ["--from-logs", "--runs-root", str(tmp_path / "runs"), "--out-dir", str(tmp_path)]
    assert script.main("table", args) == 0 and script.main("curves", args) == 0
    table = pd.read_csv(tmp_path / "tables" / "cifar10_demo.csv")
    assert (table["status"] == "not run").all() and (table["n"] == 0).all()
    assert (tmp_path / "figures" / "cifar_curves_demo.png").is_file()
    assert not (tmp_path / "runs").exists()  # --from-logs never trains


def test_tiny_real_runs_feed_the_table_and_the_curves(tmp_path, monkeypatch, capsys, single_thread):
    """The engine's own logs, not fixtures: train three tiny runs, then table and curves read them back."""
    monkeypatch.setenv("ENCNET_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("ENCNET_NO_PROGRESS", "1")
    args = ["--runs-root", str(tmp_path / "runs"), "--out-dir", str(tmp_path), "--seeds", "0", "--set",
            "train.epochs=2", "train.batch_size=8", "data.options={seed: 0, num_train: 16, num_test: 8}"]
    assert script.main("table", args) == 0
    done = sorted((tmp_path / "runs" / "demo").glob("*/*/DONE"))
    assert len(done) == 4
    stamps = [d.stat().st_mtime_ns for d in done]
    capsys.readouterr()
    assert script.main("curves", args) == 0  # the same runs: nothing trains again
    assert [d.stat().st_mtime_ns for d in done] == stamps
    table = pd.read_csv(tmp_path / "tables" / "cifar10_demo.csv").set_index("row")
    points = pd.read_csv(tmp_path / "figures" / "cifar_curves_demo.csv").set_index(["row", "split", "epoch"])
    for marker in done:
        config = load_config(marker.parent / "config.yaml")
        final = json.loads((marker.parent / "eval.json").read_text())["top1_error"]
        name = config.model.name
        assert table.loc[name, "status"] == "ok" and table.loc[name, "reproduced_mean"] == pytest.approx(final)
        assert points.loc[(name, "test", 2), "mean"] == pytest.approx(final)
        assert (name, "train", 1) in points.index
