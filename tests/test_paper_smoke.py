"""Paper smoke test: every ``configs/paper/*.yaml`` trains and evaluates, as written, through 2 gloo processes.

Each config runs unchanged except for what makes it small: ``data.root`` (a fixture in the dataset's real
on-disk layout, ``tests/paper_fixtures.py``), ``train.epochs=1`` and ``train.batch_size`` (2 iterations of one
image per process for segmentation, 2 per process for CIFAR-10), and ``model.pretrained`` (a local random
state_dict with the backbone's exact keys in place of the ImageNet download). Backbone, heads, K, SyncBN and the
evaluation protocol are always the config's. Judged by what the workers write (``DONE``, ``metrics.jsonl``,
``env.json``, ``eval*.json``, the checkpoint), not by exit codes (gloo may abort at interpreter exit after a good
run). The logged resolved ``config.yaml`` must equal the paper file except the overridden keys, so a config the
engine silently changes fails here.

The expensive work is spent once per distinct thing it checks, not once per config:

- **Full size** (``FULL_SIZE``, chosen by ``full_size_cover``): the fewest configs that between them hold every
  segmentation backbone, every head and every evaluation protocol of the paper configs; today
  ``ade20k_encnet_r101`` (ResNet-101, EncNet, the 6-scale + flip protocol at base 520 / crop 480) and
  ``ade20k_fcn_r50`` (ResNet-50, FCN). Each trains at the config's own 480² crop with its own 8 loader workers on
  ~500×375 images through ``torchrun -m encnet.train``, then ``torchrun -m encnet.evaluate RUN --ms`` runs the
  config's protocol on one 500×256 image (22 windows of 480² with flips): the real crop-size memory path, the
  window grid at the paper's sizes and both commands as a user types them. The protocol runs once per distinct
  protocol (``FULL_SIZE_MS``, today ``ade20k_encnet_r101``); the other full-size runs are evaluated with
  ``encnet.evaluate RUN`` in one full-image pass, as the grid does not depend on the network.
- **Small size** (every other config: EncNet-R50 and R101 on PASCAL-Context 59/60 and ADE20K, FCN-R50 on
  PASCAL-Context, the VOC chain, the four CIFAR-10 networks): what is the config's own — its file loads and is
  logged unchanged, its dataset's real layout reads, its real network is built and trained with SyncBN over 2
  processes (the checkpoint holds exactly that network's tensors), its run folder is complete, and its protocol
  (scales, flip, crop and base size, sliding window) is the one recorded in ``eval*.json``. Segmentation runs at
  a 64 crop (base 72) on a quarter-side copy of the same fixtures, with ``data.workers=0``; CIFAR-10 at its own
  32×32. All of them train and evaluate in one torchrun process group (``tests/paper_smoke_driver.py``) through
  the engine's ``train`` and ``evaluate``.
- The VOC configs run as the paper's chain (COCO → train_aug → trainval, each stage ``model.init_from`` the
  previous run), and each stage's BatchNorm counters show that it continued the previous stage's weights.

Marked ``slow`` (about 6.5 min on a quiet 2-core machine): ``run_tests.sh -m slow`` and CI run it, plain
``run_tests.sh`` leaves it out; the checks of the test's own logic (cover, overrides, config comparison) are fast.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

import paper_fixtures
from encnet.engine import runs
from encnet.engine.config import load_config, to_dict
from encnet.engine.evaluate import eval_tag

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "configs" / "paper"
DRIVER = Path(__file__).resolve().parent / "paper_smoke_driver.py"
# The paper's VOC recipe (PAPER.md §5): COCO pre-training, then VOC train_aug, then VOC trainval, each stage
# starting from the previous one's weights.
VOC_CHAIN = ("voc_coco_encnet_r101", "voc_aug_encnet_r101", "voc_trainval_encnet_r101")
# Keys the smoke test may set; everything else must be the paper file's value. The small runs also shrink the
# crop (and its base size) and load in the main process: none of these is the network or the protocol.
OVERRIDABLE = {"data.root", "train.epochs", "train.batch_size", "model.pretrained", "model.init_from"}
SMALL_OVERRIDABLE = OVERRIDABLE | {"data.crop_size", "data.base_size", "data.workers"}
SMALL_CROP, SMALL_BASE = 64, 72
TIMEOUT_S = 1200  # per full-size command (~3 min on a quiet 2-core machine): room for a 5x slower one
TIMEOUT_PER_SMALL_JOB_S = 300  # ~10 s each on a quiet machine


def _paper_stems() -> list[str]:
    return sorted(p.stem for p in PAPER.glob("*.yaml"))


def _raw(stem: str) -> dict:
    return yaml.safe_load((PAPER / f"{stem}.yaml").read_text())


def _flat(data: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def full_size_features(stem: str) -> set[str]:
    """What only a full-size run checks: the backbone and the head at the real crop, and the evaluation protocol
    (its scales, flip, stride and window sizes) at the real sizes."""
    config = load_config(PAPER / f"{stem}.yaml")
    if config.task != "segmentation":
        return set()
    protocol = json.dumps({**to_dict(config)["eval"], "data.base_size": config.data.base_size,
                           "data.crop_size": config.data.crop_size}, sort_keys=True)
    return {f"backbone {config.model.backbone}", f"head {config.model.name}", f"protocol {protocol}"}


def full_size_cover(stems: list[str]) -> list[str]:
    """Greedy set cover: the config adding the most unseen features first (ties by name), until every feature of
    every config is held by one chosen config. The VOC stages stay together in the small chain."""
    wanted = set().union(*(full_size_features(s) for s in stems))
    chosen: list[str] = []
    seen: set[str] = set()
    candidates = [s for s in stems if s not in VOC_CHAIN]
    while seen != wanted:
        best = max(candidates, key=lambda s: (len(full_size_features(s) - seen), [-ord(c) for c in s]))
        if not full_size_features(best) - seen:
            raise AssertionError(f"features only the VOC chain has: {sorted(wanted - seen)}")
        chosen.append(best)
        seen |= full_size_features(best)
    return sorted(chosen)


def protocol_holders(stems: list[str]) -> list[str]:
    """The first of ``stems`` to hold each evaluation protocol. Only these run the multi-scale protocol at full
    size; a full-size config whose protocol an earlier one already ran is evaluated in one full-image pass (the
    protocol's windows and scales do not depend on the network, and its own network runs the protocol at small
    size where it is a small-size config, or shares it with the holder here)."""
    held: set[str] = set()
    holders = []
    for stem in stems:
        protocols = {f for f in full_size_features(stem) if f.startswith("protocol ")}
        if protocols - held:
            holders.append(stem)
            held |= protocols
    return holders


FULL_SIZE = full_size_cover(_paper_stems())
FULL_SIZE_MS = protocol_holders(FULL_SIZE)
SMALL_SIZE = [s for s in _paper_stems() if s not in FULL_SIZE]


class Fixtures:
    """Datasets and random backbone weights, each written once per module on first use."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.roots: dict[tuple[str, str], Path] = {}
        self.weights: dict[str, Path] = {}

    def data_root(self, dataset: str, size: str = "full") -> Path:
        if dataset not in paper_fixtures.WRITERS:
            pytest.fail(f"no smoke-test fixture for dataset {dataset!r}: add a writer to tests/paper_fixtures.py")
        writer = paper_fixtures.WRITERS[dataset]
        key = (writer.__name__, size)
        if key not in self.roots:
            sizes = {"full": paper_fixtures.FULL, "small": paper_fixtures.SMALL}[size]
            self.roots[key] = writer(self.folder / "data" / size / writer.__name__, sizes)
        return self.roots[key]

    def pretrained(self, backbone: str) -> Path:
        """A random state_dict with exactly the keys and shapes of ``backbone`` (stands in for ImageNet)."""
        if backbone not in self.weights:
            from encnet.models.backbones import build_backbone

            torch.manual_seed(1)
            path = self.folder / "weights" / f"{backbone}_random.pth"
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(build_backbone(backbone, "none").state_dict(), path)
            self.weights[backbone] = path
        return self.weights[backbone]


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory) -> Fixtures:
    return Fixtures(tmp_path_factory.mktemp("paper_smoke"))


def _env(cache: Path, threads: int) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "ENCNET_NO_PROGRESS": "1", "ENCNET_CACHE": str(cache),
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def torchrun(args: list[str], cache: Path, threads: int = 1, timeout: float = TIMEOUT_S) -> tuple[str, float]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_env(cache, threads), cwd=ROOT)
    return f"$ {' '.join(cmd)}\n(rc {proc.returncode})\n{proc.stdout}\n{proc.stderr}", time.perf_counter() - start


def check_logged_config(paper_file: Path, logged_config: dict, overrides: dict) -> None:
    """The run is the paper config: its logged resolved config differs from the file only in ``overrides``."""
    stem = paper_file.stem
    logged = _flat(logged_config)
    paper = _flat(to_dict(load_config(paper_file)))
    assert set(logged) == set(paper), f"{stem}: logged keys differ: {set(logged) ^ set(paper)}"
    changed = {k for k in paper if logged[k] != paper[k]}
    assert changed <= set(overrides), f"{stem}: the run changed {sorted(changed - set(overrides))}"
    for key, value in overrides.items():
        assert logged[key] == value, (key, logged[key], value)
    for key, value in _flat(yaml.safe_load(paper_file.read_text())).items():  # the file itself, as written
        if key not in overrides:
            assert logged[key] == value, f"{stem}: {key} is {logged[key]!r} in the run, {value!r} in the file"


def overrides_for(stem: str, fixtures: Fixtures, init_from: Path | None = None,
                  size: str = "full") -> dict[str, object]:
    raw = _raw(stem)
    dataset = raw["data"]["dataset"]
    values: dict[str, object] = {"data.root": str(fixtures.data_root(dataset, size)), "train.epochs": 1}
    if raw["task"] == "classification":
        values["train.batch_size"] = 4  # 2 images per process: 10 training images → 2 iterations
    else:
        values["train.batch_size"] = 2  # 1 image per process: 4 training images → 2 iterations
        pretrained = raw["model"].get("pretrained", "none")
        if pretrained not in ("none", ""):
            values["model.pretrained"] = str(fixtures.pretrained(raw["model"]["backbone"]))
        if size == "small":
            values.update({"data.crop_size": SMALL_CROP, "data.base_size": SMALL_BASE})
    if size == "small":
        values["data.workers"] = 0
    if init_from is not None:
        values["model.init_from"] = str(init_from)
    assert set(values) <= (SMALL_OVERRIDABLE if size == "small" else OVERRIDABLE)
    return values


def check_run(stem: str, run_dir: Path, overrides: dict, log: str = "") -> None:
    """Training's outputs: finished, the paper config logged, 2 iterations on 2 processes, the config's network."""
    paper_file = PAPER / f"{stem}.yaml"
    assert runs.is_finished(run_dir), f"{stem}: training did not finish\n{log}"
    check_logged_config(paper_file, yaml.safe_load((run_dir / "config.yaml").read_text()), overrides)
    config = load_config(run_dir / "config.yaml")
    classification = config.task == "classification"
    env = json.loads((run_dir / "env.json").read_text())
    assert env["world_size"] == 2 and env["iters_per_epoch"] == 2, env
    assert env["per_process_batch"] == config.train.batch_size // 2
    if not classification:
        assert env["train_images"] == paper_fixtures.TRAIN_IMAGES and env["val_images"] == 1, env
    records = runs.read_jsonl(run_dir / "metrics.jsonl")
    assert [r["iter"] for r in records] == [2], records
    assert math.isfinite(records[0]["loss"]) and records[0]["loss"] > 0, records
    assert ("val_top1_error" if classification else "val_mIoU") in records[0], records

    # The checkpoint holds the network the paper config builds (same tensors, same shapes).
    from encnet.engine.build import build_model_for

    checkpoint = torch.load(run_dir / runs.CHECKPOINT, map_location="cpu", weights_only=False)
    assert checkpoint["iteration"] == 2
    architecture = load_config(paper_file, ["model.pretrained=none"] if not classification else [])
    expected = build_model_for(architecture, env["num_classes"]).state_dict()
    assert {k: tuple(v.shape) for k, v in checkpoint["model"].items()} == {
        k: tuple(v.shape) for k, v in expected.items()}


def check_eval(stem: str, run_dir: Path, log: str = "", ms: bool = True) -> dict:
    """The evaluation's record: the config's protocol (multi-scale + flip, sliding window) for segmentation, or
    with ``ms=False`` the single-scale full-image pass."""
    config = load_config(run_dir / "config.yaml")
    classification = config.task == "classification"
    tag = "" if classification or not ms else eval_tag(config.eval.scales, config.eval.flip, config.data.val_split,
                                                       config)
    eval_file = run_dir / (f"eval_{tag}.json" if tag else "eval.json")
    assert eval_file.is_file(), f"{stem}: evaluation wrote no {eval_file.name}\n{log}"
    result = json.loads(eval_file.read_text())
    assert result["epoch"] == 1
    if classification:
        assert 0.0 <= result["top1_error"] <= 100.0, result
        return result
    settings = result["settings"]
    num_classes = json.loads((run_dir / "env.json").read_text())["num_classes"]
    assert 0.0 <= result["pixAcc"] <= 100.0 and len(result["IoU"]) == num_classes, result
    if not ms:
        assert settings["mode"] == "full_image" and not settings["flip"], settings
        return result
    assert settings["mode"] == "sliding_window" and settings["scales"] == config.eval.scales, settings
    assert settings["flip"] == config.eval.flip
    assert settings["crop_size"] == (config.eval.crop_size or config.data.crop_size), settings
    assert settings["base_size"] == (config.eval.base_size or config.data.base_size), settings
    return result


def run_full_size(stem: str, fixtures: Fixtures, tmp_path: Path) -> Path:
    """Train ``stem`` at its own crop for 2 iterations on 2 processes with the commands a user types, then
    evaluate it with its protocol; check every output."""
    paper_file = PAPER / f"{stem}.yaml"
    overrides = overrides_for(stem, fixtures)
    run_dir = tmp_path / "runs" / stem
    cache = tmp_path / "cache"
    log, train_s = torchrun(["-m", "encnet.train", str(paper_file), *(f"{k}={v}" for k, v in overrides.items()),
                             "--run-dir", str(run_dir), "--device", "cpu"], cache)
    check_run(stem, run_dir, overrides, log)
    (run_dir / "eval.json").unlink(missing_ok=True)  # training writes eval.json; the evaluate command its own
    ms = stem in FULL_SIZE_MS
    # One image: rank 0 evaluates it while rank 1 waits in the all-reduce, so rank 0 may use both cores.
    log, eval_s = torchrun(["-m", "encnet.evaluate", str(run_dir), *(["--ms"] if ms else []), "--device", "cpu"],
                           cache, threads=2)
    result = check_eval(stem, run_dir, log, ms=ms)
    if ms:
        assert result["settings"]["crop_size"] == load_config(paper_file).data.crop_size  # the paper's own crop
    print(f"{stem}: train {train_s:.0f} s, evaluate {eval_s:.0f} s")
    return run_dir


@pytest.fixture(scope="module")
def small_runs(fixtures, tmp_path_factory) -> dict:
    """Every small-size config, trained and evaluated by the driver in one torchrun process group, in the
    order of ``SMALL_SIZE`` with the VOC chain in its stage order."""
    folder = tmp_path_factory.mktemp("paper_smoke_small")
    order = [s for s in SMALL_SIZE if s not in VOC_CHAIN] + [s for s in VOC_CHAIN if s in SMALL_SIZE]
    jobs, planned, previous = [], {}, None
    for stem in order:
        run_dir = folder / "runs" / stem
        init_from = previous if stem in VOC_CHAIN[1:] else None
        overrides = overrides_for(stem, fixtures, init_from, size="small")
        jobs.append({"stem": stem, "config": str(PAPER / f"{stem}.yaml"), "run_dir": str(run_dir),
                     "overrides": [f"{k}={v}" for k, v in overrides.items()],
                     "multi_scale": _raw(stem)["task"] == "segmentation"})
        planned[stem] = (run_dir, overrides)
        previous = run_dir if stem in VOC_CHAIN else previous
    results = folder / "results"
    results.mkdir()
    (folder / "jobs.json").write_text(json.dumps(jobs, indent=1))
    log, seconds = torchrun([str(DRIVER), str(folder / "jobs.json"), str(results)], folder / "cache",
                            timeout=TIMEOUT_PER_SMALL_JOB_S * len(jobs))
    errors = {p.stem: p.read_text() for p in results.glob("*.error")}
    times = {p.stem: json.loads(p.read_text()) for p in results.glob("*.json")}
    print(f"small-size jobs: {len(times)} of {len(jobs)} in {seconds:.0f} s: "
          + ", ".join(f"{s} {t['train_s']:.0f}+{t['evaluate_s']:.0f} s" for s, t in times.items()))
    return {"planned": planned, "errors": errors, "times": times, "log": log}


def _small_run(stem: str, small_runs: dict) -> tuple[Path, dict]:
    if stem not in small_runs["times"]:
        failed = "; ".join(f"{s}: {e.strip().splitlines()[-1]}" for s, e in small_runs["errors"].items())
        detail = "\n".join(small_runs["errors"].values()) or small_runs["log"][-6000:]
        pytest.fail(f"{stem}: the driver did not finish it ({failed or 'no error file'})\n{detail}")
    return small_runs["planned"][stem]


def test_every_paper_config_is_covered():
    stems = _paper_stems()
    assert stems, f"no configs under {PAPER}"
    missing = [s for s in VOC_CHAIN if s not in stems]
    assert not missing, f"the VOC chain names configs that do not exist: {missing}"
    datasets = {_raw(s)["data"]["dataset"] for s in stems}
    assert datasets <= set(paper_fixtures.WRITERS), datasets - set(paper_fixtures.WRITERS)
    assert sorted(FULL_SIZE + SMALL_SIZE) == stems and not set(FULL_SIZE) & set(SMALL_SIZE)


def test_full_size_runs_hold_every_backbone_head_and_protocol_and_the_docstring_names_them():
    held = set().union(*(full_size_features(s) for s in FULL_SIZE))
    for stem in _paper_stems():
        assert full_size_features(stem) <= held, f"{stem}: {full_size_features(stem) - held} runs at no full size"
    assert {f.split()[0] for f in held} == {"backbone", "head", "protocol"}
    doc = " ".join(__doc__.split())
    for stem in FULL_SIZE:
        assert f"``{stem}``" in doc, f"the docstring does not name the full-size run {stem}"
    # Every protocol of every config runs at full size in a multi-scale evaluation, each once.
    protocols = [{f for f in full_size_features(s) if f.startswith("protocol ")} for s in FULL_SIZE_MS]
    assert set().union(*protocols) == {f for f in held if f.startswith("protocol ")}
    assert sum(map(len, protocols)) == len(set().union(*protocols))
    assert f"today ``{'``, ``'.join(FULL_SIZE_MS)}``" in doc


def test_full_size_cover_is_the_smallest_cover_of_a_known_case(monkeypatch):
    features = {"a": {"b50", "enc"}, "b": {"b101", "enc", "p"}, "c": {"b50", "fcn"}, "d": {"b50"}}
    monkeypatch.setattr(sys.modules[__name__], "full_size_features", features.__getitem__)
    assert full_size_cover(sorted(features)) == ["b", "c"]


@pytest.mark.parametrize("stem", _paper_stems())
def test_config_check_accepts_the_overrides_and_catches_any_other_change(stem):
    paper_file = PAPER / f"{stem}.yaml"
    overrides = {"data.root": "/fixture", "train.epochs": 1, "train.batch_size": 2}
    resolved = to_dict(load_config(paper_file, [f"{k}={v}" for k, v in overrides.items()]))
    check_logged_config(paper_file, resolved, overrides)
    for section, key, value in [("data", "crop_size", 320), ("train", "base_lr", 0.5), ("model", "name", "x"),
                                ("eval", "flip", False)]:
        if key not in resolved[section]:
            continue
        changed = yaml.safe_load(yaml.safe_dump(resolved))
        changed[section][key] = value
        with pytest.raises(AssertionError, match=f"{section}.{key}"):
            check_logged_config(paper_file, changed, overrides)
    with pytest.raises(AssertionError, match="logged keys differ"):
        check_logged_config(paper_file, {**resolved, "extra": 1}, overrides)


@pytest.mark.slow
@pytest.mark.parametrize("stem", FULL_SIZE)
def test_paper_config_trains_and_evaluates_at_full_size(stem, fixtures, tmp_path):
    run_full_size(stem, fixtures, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("stem", SMALL_SIZE)
def test_paper_config_trains_and_evaluates_at_small_size(stem, small_runs):
    run_dir, overrides = _small_run(stem, small_runs)
    check_run(stem, run_dir, overrides, small_runs["log"])
    check_eval(stem, run_dir, small_runs["log"])


@pytest.mark.slow
def test_voc_chain_stages_continue_the_previous_stages_weights(small_runs):
    # BatchNorm's num_batches_tracked counts every training step a tensor has seen and travels with the weights:
    # a stage that started from its predecessor's weights has 2 more steps on every BatchNorm than it.
    stems = [s for s in VOC_CHAIN if s in SMALL_SIZE]
    assert stems == list(VOC_CHAIN), "the VOC chain must run as one chain"
    counts = []
    for stage, stem in enumerate(stems, start=1):
        run_dir, overrides = _small_run(stem, small_runs)
        if stage > 1:
            assert overrides["model.init_from"] == str(_small_run(stems[stage - 2], small_runs)[0])
        state = torch.load(run_dir / runs.CHECKPOINT, map_location="cpu", weights_only=False)["model"]
        tracked = {k: int(v) for k, v in state.items() if k.endswith("num_batches_tracked")}
        assert tracked, f"{stem}: no BatchNorm counters in its checkpoint"
        counts.append(set(tracked.values()))
    assert counts == [{2}, {4}, {6}], f"steps seen per stage: {counts}"
