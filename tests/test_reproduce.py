"""The reproduce driver: what each experiment would run (dry run), which runs are shared, and a tiny real run."""

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from encnet.experiments.cli import main

from encnet.experiments.outputs import write_outputs

from encnet.experiments.planning import plan

from encnet.experiments.segmentation import CHOSEN_NUM_CODES, CHOSEN_SE_WEIGHT, experiments

REPO = Path(__file__).resolve().parents[1]
NAMES = ["ablation", "se_weight", "codewords", "pcontext", "voc", "ade20k"]


def dry_run_blocks(capsys, name, profile, runs_root, *extra):
    assert main(name, ["--profile", profile, "--dry-run", "--runs-root", str(runs_root), *extra]) == 0
    out = capsys.readouterr().out
    blocks = re.split(r"\n(?=\[(?:to run|done|partial)\] )", out.split("\n", 1)[1].strip())
    return out, [b for b in blocks if b.startswith("[")]  # the ledger's side block comes first


@pytest.mark.parametrize("name", NAMES)
def test_paper_dry_run_lists_the_papers_settings_for_every_run(capsys, tmp_path, name):
    out, blocks = dry_run_blocks(capsys, name, "paper", tmp_path)
    assert blocks, out
    for block in blocks:
        assert "configs/paper/" in block and str(tmp_path / "paper") in block
        for setting in ("crop_size=480", "base_size=520", "batch_size=16", "aux_weight=0.2"):
            assert setting in block, f"{setting} missing from\n{block}"
        # The sweeps vary exactly one of K and α; every other run has the paper's chosen value.
        if name != "codewords":
            assert f"num_codes={CHOSEN_NUM_CODES}" in block, block
        if name != "se_weight":
            assert f"se_weight={CHOSEN_SE_WEIGHT}" in block, block
    if name == "se_weight":
        assert sorted(re.findall(r"(?<![.\w])se_weight=([\d.]+)", out)) == ["0.1", "0.2", "0.2", "0.4", "0.8"]
        assert "se_loss=False" in out  # α = 0: the model without the SE-loss head
    if name == "codewords":
        assert sorted(int(k) for k in re.findall(r"(?<![.\w])num_codes=(\d+)", out)) == [0, 8, 16, 32, 64]
        assert all("se_loss=False" in block for block in blocks)  # Figure 5's K sweep: without SE-loss (inferred)
    if name in ("ablation", "pcontext", "ade20k", "voc"):
        assert "ms_scales=[0.5, 0.75, 1.0, 1.25, 1.5, 1.75] flip=True" in out


def test_dry_runs_show_the_v050_recipe_with_follow_release_and_each_entrys_side(capsys, tmp_path):
    out, blocks = dry_run_blocks(capsys, "ablation", "paper", tmp_path)
    assert re.search(r"scale_side +data\.scale_side +release = short", out)
    assert re.search(r"blur +data\.blur_prob +paper = 0\.0", out)
    assert all("scale_side=short" in b and "blur_prob=0.0" in b and "ledger: " in b for b in blocks)
    out, blocks = dry_run_blocks(capsys, "ablation", "paper", tmp_path, "--follow", "release")
    assert re.search(r"blur +data\.blur_prob +release = 0\.5", out)
    assert all("blur_prob=0.5" in b and "scale_side=short" in b and "miou=all" in b for b in blocks)
    out, blocks = dry_run_blocks(capsys, "ade20k", "paper", tmp_path, "--follow", "release")
    assert all("base_lr=0.01" in b and "epochs=120" in b for b in blocks)
    out, blocks = dry_run_blocks(capsys, "ablation", "paper", tmp_path, "--follow", "paper")
    assert all("scale_side=long" in b and "rotate_degrees=10.0" in b and "blur_prob=0.0" in b for b in blocks)


@pytest.mark.parametrize("profile", ["demo", "paper"])
def test_follow_changes_runs_only_when_asked(tmp_path, profile):
    exp = experiments(profile)["ablation"]
    plain = [r.run_dir for r in plan(exp, profile, (0,), tmp_path)[0]]
    # No --follow: the configs as they are (their sides are the ledger's suite_follows).
    assert [r.run_dir for r in plan(exp, profile, (0,), tmp_path, follow=None)[0]] == plain
    release = [r.run_dir for r in plan(exp, profile, (0,), tmp_path, follow="release")[0]]
    assert len(release) == len(plain) and not set(release) & set(plain)  # blur is on for every run


def test_demo_dry_run_uses_only_demo_configs_and_runs(capsys, tmp_path):
    for name in NAMES:
        out, blocks = dry_run_blocks(capsys, name, "demo", tmp_path)
        assert "configs/paper" not in out and str(tmp_path / "paper") not in out
        assert all("configs/demo/" in b and str(tmp_path / "demo") in b for b in blocks)


@pytest.mark.parametrize("profile", ["demo", "paper"])
def test_sweeps_share_the_ablation_encnet_run(tmp_path, profile):
    exps = experiments(profile)
    seeds = (0,)
    _, ablation = plan(exps["ablation"], profile, seeds, tmp_path)
    _, alpha = plan(exps["se_weight"], profile, seeds, tmp_path)
    _, codes = plan(exps["codewords"], profile, seeds, tmp_path)
    encnet = ablation[("EncNet", 0)].run_dir
    assert alpha[("α=0.2", 0)].run_dir == encnet
    if profile == "paper":
        assert codes[("K=32", 0)].run_dir == ablation[("EncNet w/o SE-loss", 0)].run_dir  # Table 1's no-SE row
    else:  # claim 2's sweep runs on its own data (cue: mixture): its runs are its own
        assert codes[("K=32", 0)].config.data.options["cue"] == "mixture"
        assert codes[("K=32", 0)].run_dir != ablation[("EncNet w/o SE-loss", 0)].run_dir
    assert alpha[("α=0 (no SE-loss)", 0)].run_dir == ablation[("EncNet w/o SE-loss", 0)].run_dir
    assert len({alpha[(f"α={a:g}", 0)].run_dir for a in (0.1, 0.2, 0.4, 0.8)}) == 4
    # "R101" is a run of its own in both profiles (the demo's is resnet_tiny_deep), evaluated once more multi-scale
    assert ablation[("EncNet R101", 0)].run_dir != encnet
    assert ablation[("EncNet R101 MS+flip", 0)].run_dir == ablation[("EncNet R101", 0)].run_dir
    assert ablation[("EncNet R101 MS+flip", 0)].evals == ["ss", "ms"]
    if profile == "demo":
        assert ablation[("EncNet R101", 0)].config.model.backbone == "resnet_tiny_deep"


@pytest.mark.parametrize("profile", ["demo", "paper"])
def test_codewords_sweep_is_figure5_without_se_loss_plus_marked_extras(tmp_path, profile):
    experiment = experiments(profile)["codewords"]
    paper = {r.x: r for r in experiment.rows if not r.extra}
    extra = {r.x: r for r in experiment.rows if r.extra}
    # The demo runs the paper's K only (the extras would cost 10 runs for no claim).
    assert sorted(paper) == [0.0, 16.0, 32.0] and sorted(extra) == ([8.0, 64.0] if profile == "paper" else [])
    assert all(r.reported == ("codewords_curve", f"K={int(x)}") for x, r in paper.items())
    assert all(r.reported is None and "extra" in r.label for r in extra.values())
    assert not experiment.figure["log2_x"]  # K = 0 must have a place on the axis
    _, by_row = plan(experiment, profile, (0,), tmp_path)
    for row in experiment.rows:
        model = by_row[(row.label, 0)].config.model
        # (the demo keeps SE-loss: without it no demo arm learned the mixture's scene; the caption says so)
        assert (model.num_codes, model.se_loss, model.name) == (int(row.x), profile == "demo", "encnet")
    assert len({by_row[(r.label, 0)].run_dir for r in experiment.rows}) == (5 if profile == "paper" else 3)


def test_codewords_figure_data_marks_the_extra_points(tmp_path):
    experiment = experiments("paper")["codewords"]
    paths = write_outputs(experiment, "paper", [], tmp_path / "runs", tmp_path)
    points = pd.read_csv(next(p for p in paths if p.suffix == ".csv"))
    flags = points.drop_duplicates("row").set_index("row")["extra"].to_dict()
    assert flags == {"K=0": False, "K=8 (extra)": True, "K=16": False, "K=32": False, "K=64 (extra)": True}


@pytest.mark.parametrize("profile", ["demo", "paper"])
def test_voc_stages_start_from_the_previous_stage(tmp_path, profile):
    runs, by_row = plan(experiments(profile)["voc"], profile, (0, 1), tmp_path)
    for seed in (0, 1):
        chain = [("train_aug (val)", "train_aug → trainval (test)"),
                 ("COCO pre-training (COCO val)", "COCO → train_aug (val)"),
                 ("COCO → train_aug (val)", "COCO → train_aug → trainval (test)")]
        for source, stage in chain:
            assert by_row[(stage, seed)].config.model.init_from == str(by_row[(source, seed)].run_dir)
        assert by_row[("train_aug (val)", seed)].config.model.init_from == ""
    # Dependency order: every stage is listed after the run it starts from.
    order = [r.run_dir for r in runs]
    for run in runs:
        if run.config.model.init_from:
            assert order.index(Path(run.config.model.init_from)) < order.index(run.run_dir)


def test_from_logs_with_no_runs_writes_demo_tables_saying_not_run(tmp_path):
    assert main("ablation", ["--from-logs", "--runs-root", str(tmp_path / "runs"), "--out-dir", str(tmp_path)]) == 0
    assert sorted(p.name for p in (tmp_path / "tables").iterdir()) == [
        "ablation_demo.csv", "ablation_demo.md", "ablation_demo.tex", "ablation_demo_directions.csv"]
    table = pd.read_csv(tmp_path / "tables" / "ablation_demo.csv")
    assert (table["status"] == "not run").all()
    assert not (tmp_path / "runs").exists()  # --from-logs never trains


def test_tiny_demo_experiment_trains_evaluates_and_reuses_its_run(tmp_path, monkeypatch, capsys):
    """One real run through the whole path: train, multi-scale evaluation, table; a second call trains nothing."""
    import torch

    torch.set_num_threads(1)
    monkeypatch.setenv("ENCNET_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("ENCNET_NO_PROGRESS", "1")
    args = ["--runs-root", str(tmp_path / "runs"), "--out-dir", str(tmp_path), "--set", "train.epochs=1",
            "train.warmup_epochs=0", "train.batch_size=4",
            "data.options={seed: 0, num_train: 4, num_val: 2, image_size: 64}"]
    assert main("pcontext", args) == 0
    (run_dir,) = list((tmp_path / "runs" / "demo").glob("*/*/DONE"))
    run_dir = run_dir.parent
    assert (run_dir / "eval_ms_flip.json").is_file()
    stamp = (run_dir / "checkpoint_last.pt").stat().st_mtime_ns
    table = pd.read_csv(tmp_path / "tables" / "pcontext_demo.csv")
    assert table["status"].tolist() == ["ok", "ok"] and (table["n"] == 1).all()
    evaluation = pd.read_json(run_dir / "eval_ms_flip.json", typ="series")
    assert table.set_index("metric").loc["mIoU", "reproduced_mean"] == pytest.approx(evaluation["mIoU"], abs=1e-4)
    capsys.readouterr()
    assert main("pcontext", args) == 0
    assert (run_dir / "checkpoint_last.pt").stat().st_mtime_ns == stamp
    assert "1 run(s)" in capsys.readouterr().out


def test_scripts_are_thin_entry_points():
    scripts = sorted(p.name for p in (REPO / "reproduce").glob("*.py"))
    for name in ["figure_codewords.py", "figure_se_weight.py", "table_ablation.py", "table_ade20k.py",
                 "table_pcontext.py", "table_voc.py"]:
        assert name in scripts
        assert len((REPO / "reproduce" / name).read_text().splitlines()) <= 30
    done = subprocess.run([sys.executable, str(REPO / "reproduce" / "table_ablation.py"), "--profile", "paper",
                           "--dry-run", "--runs-root", "/nonexistent-runs"], capture_output=True, text=True,
                          cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "crop_size=480" in done.stdout


def test_missing_dataset_is_a_one_block_error_with_the_data_root_hint(tmp_path, capsys):
    from encnet.experiments.cli import main

    rc = main("ablation", ["--profile", "paper", "--runs-root", str(tmp_path / "runs"), "--out-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2
    assert "PASCAL-Context root not found" in err and "python -m encnet.data.prepare pascal_context" in err
    assert "--data-root" in err and "Traceback" not in err
    assert not (tmp_path / "tables").exists()  # nothing written as if the experiment had run


def test_each_demo_seed_trains_on_its_own_draw_shared_by_every_arm(tmp_path):
    """The unit of replication is (data draw, initialisation): seed s draws the config's data seed + s."""
    exps = experiments("demo")
    seeds = (0, 3)
    _, ablation = plan(exps["ablation"], "demo", seeds, tmp_path)
    _, codes = plan(exps["codewords"], "demo", seeds, tmp_path)
    _, voc = plan(exps["voc"], "demo", seeds, tmp_path)
    for seed in seeds:
        arms = [r for (label, s), r in ablation.items() if s == seed] + [r for (_, s), r in codes.items() if s == seed]
        assert {r.config.data.options["seed"] for r in arms} == {seed}
        assert {r.config.seed for r in arms} == {seed}
        # VOC's "COCO" stage draws other images (its config's data seed 1000), again one draw per seed
        assert voc[("COCO pre-training (COCO val)", seed)].config.data.options["seed"] == 1000 + seed
    assert ablation[("EncNet", 0)].run_dir != ablation[("EncNet", 3)].run_dir
    # The paper profile's datasets are fixed: nothing is drawn
    _, paper = plan(experiments("paper")["ablation"], "paper", seeds, tmp_path)
    assert all("seed" not in r.config.data.options for r in paper.values())


def test_a_row_with_fewer_seeds_runs_the_first_ones_and_its_direction_pairs_those(tmp_path):
    from dataclasses import replace

    experiment = experiments("demo")["ablation"]
    rows = tuple(replace(r, num_seeds=2) if r.label == "FCN" else r for r in experiment.rows)
    experiment = replace(experiment, rows=rows)
    runs, by_row = plan(experiment, "demo", (5, 6, 7), tmp_path)
    assert {s for (label, s) in by_row if label == "FCN"} == {5, 6}
    assert {s for (label, s) in by_row if label == "EncNet"} == {5, 6, 7}
    from encnet.experiments.outputs import result_refs

    refs = result_refs(experiment, by_row, (5, 6, 7))
    assert sum(label == "FCN" for label, _, _ in refs) == 2 and sum(label == "EncNet" for label, _, _ in refs) == 3
