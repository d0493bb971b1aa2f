"""train_all: every reproduce script's runs, planned by the scripts' own ``plan``, trained once each in one pool."""

from pathlib import Path

import pytest

from encnet.experiments import cifar, discrepancies_table, train_all
from encnet.experiments.cli import parse_args
from encnet.experiments.experiment import REPO
from encnet.experiments.planning import plan
from encnet.experiments.segmentation import experiments


def every_scripts_runs(profile, runs_root):
    dirs = set()
    for experiment in [*experiments(profile).values(), cifar.experiment(profile)]:
        runs, _ = plan(experiment, profile, experiment.seeds, runs_root)
        dirs |= {r.run_dir for r in runs}
    # The ledger table's runs, less those that need weights a test machine lacks (their script reports them).
    args = parse_args("discrepancies", ["--profile", profile, "--runs-root", str(runs_root)])
    *_, runs, _, blocked = discrepancies_table.planned(args)
    return dirs | {r.run_dir for r in runs if r.run_dir not in blocked}


@pytest.mark.parametrize("profile", ["demo", "paper"])
def test_pool_holds_each_scripts_runs_once_with_chain_heads_first(tmp_path, profile):
    runs = train_all.planned_runs(parse_args("train_all", ["--profile", profile, "--runs-root", str(tmp_path)]))
    dirs = [r.run_dir for r in runs]
    assert len(dirs) == len(set(dirs))  # shared runs (the ablation's EncNet is the α = 0.2 point) once
    assert set(dirs) == every_scripts_runs(profile, tmp_path)
    # A stage that starts from another run comes after it, so the pool never waits on an unplanned source.
    for run in runs:
        if run.config.model.init_from:
            assert dirs.index(Path(run.config.model.init_from)) < dirs.index(run.run_dir)


def test_pool_trains_the_unfinished_runs_only_and_leaves_evaluations_to_the_scripts(tmp_path, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(train_all, "execute", lambda runs, gpus, root, **kw: calls.append((list(runs), kw)))
    args = ["--profile", "demo", "--runs-root", str(tmp_path), "--jobs", "2", "--seeds", "0"]
    everything = train_all.planned_runs(parse_args("train_all", args))
    finished = everything[0].run_dir
    finished.mkdir(parents=True)
    (finished / "DONE").write_text("")
    assert train_all.main(args) == 0
    (runs, kw), = calls
    assert [r.run_dir for r in runs] == [r.run_dir for r in everything[1:]]
    assert kw["jobs"] == 2 and kw["evaluate_ms"] is False
    assert train_all.main([*args, "--dry-run"]) == 0 and len(calls) == 1  # a dry run trains nothing
    assert f"{len(everything)} planned run(s)" in capsys.readouterr().out


def test_run_all_trains_the_demo_pool_before_the_scripts():
    text = (Path(REPO) / "run_all.sh").read_text()
    assert 'scripts=(train_all "${scripts[@]}")' in text
    assert len((Path(REPO) / "reproduce" / "train_all.py").read_text().splitlines()) <= 30
