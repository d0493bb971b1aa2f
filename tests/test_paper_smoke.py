"""Paper smoke test: every ``configs/paper/*.yaml`` trains and evaluates, as written, through 2 gloo processes.

Each config runs unchanged except for what makes it small: ``data.root`` (a fixture in the dataset's real
on-disk layout, ``tests/paper_fixtures.py``), ``train.epochs=1`` and ``train.batch_size`` (2 iterations of one
image per process for segmentation, 2 per process for CIFAR-10), and ``model.pretrained`` (a local random
state_dict with the backbone's exact keys in place of the ImageNet download). Backbone, heads, K, base/crop size,
SyncBN and the evaluation protocol are the config's. Then ``encnet.evaluate RUN --ms`` runs the config's
multi-scale + flip protocol on the one validation image. The VOC configs run as the paper's chain
(COCO → train_aug → trainval, each stage ``model.init_from`` the previous run).

Judged by what the workers write (``DONE``, ``metrics.jsonl``, ``env.json``, ``eval*.json``, the checkpoint),
not by exit codes (gloo may abort at interpreter exit after a good run). The logged resolved ``config.yaml`` must
equal the paper file except the overridden keys, so a config the engine silently changes fails here.

Expensive (ResNet-101 at 480² on CPU, about 40 min in all): marked ``slow``; ``run_tests.sh -m slow`` and CI run
it, plain ``run_tests.sh`` leaves it out.
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
# The paper's VOC recipe (PAPER.md §5): COCO pre-training, then VOC train_aug, then VOC trainval, each stage
# starting from the previous one's weights.
VOC_CHAIN = ("voc_coco_encnet_r101", "voc_aug_encnet_r101", "voc_trainval_encnet_r101")
# Keys the smoke test may set; everything else must be the paper file's value.
OVERRIDABLE = {"data.root", "train.epochs", "train.batch_size", "model.pretrained", "model.init_from"}
TIMEOUT_S = 1200  # per command (~3.5 min on a quiet 2-core machine): room for a 5x slower one; a hang ends


def _paper_stems() -> list[str]:
    return sorted(p.stem for p in PAPER.glob("*.yaml"))


def _flat(data: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


class Fixtures:
    """Datasets and random backbone weights, each written once per module on first use."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.roots: dict[str, Path] = {}
        self.weights: dict[str, Path] = {}

    def data_root(self, dataset: str) -> Path:
        if dataset not in paper_fixtures.WRITERS:
            pytest.fail(f"no smoke-test fixture for dataset {dataset!r}: add a writer to tests/paper_fixtures.py")
        writer = paper_fixtures.WRITERS[dataset]
        if writer.__name__ not in self.roots:
            self.roots[writer.__name__] = writer(self.folder / "data" / writer.__name__)
        return self.roots[writer.__name__]

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


def torchrun(args: list[str], cache: Path, threads: int = 1) -> tuple[str, float]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "ENCNET_NO_PROGRESS": "1", "ENCNET_CACHE": str(cache),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, env=env, cwd=ROOT)
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


def overrides_for(stem: str, fixtures: Fixtures, init_from: Path | None = None) -> dict[str, object]:
    raw = yaml.safe_load((PAPER / f"{stem}.yaml").read_text())
    dataset = raw["data"]["dataset"]
    values: dict[str, object] = {"data.root": str(fixtures.data_root(dataset)), "train.epochs": 1}
    if raw["task"] == "classification":
        values["train.batch_size"] = 4  # 2 images per process: 10 training images → 2 iterations
    else:
        values["train.batch_size"] = 2  # 1 image per process: 4 training images → 2 iterations
        pretrained = raw["model"].get("pretrained", "none")
        if pretrained not in ("none", ""):
            values["model.pretrained"] = str(fixtures.pretrained(raw["model"]["backbone"]))
    if init_from is not None:
        values["model.init_from"] = str(init_from)
    assert set(values) <= OVERRIDABLE
    return values


def run_config(stem: str, fixtures: Fixtures, tmp_path: Path, init_from: Path | None = None) -> Path:
    """Train ``stem`` for 2 iterations on 2 processes, then evaluate it with its protocol; check every output."""
    paper_file = PAPER / f"{stem}.yaml"
    overrides = overrides_for(stem, fixtures, init_from)
    run_dir = tmp_path / "runs" / stem
    cache = tmp_path / "cache"
    log, train_s = torchrun(["-m", "encnet.train", str(paper_file), *(f"{k}={v}" for k, v in overrides.items()),
                             "--run-dir", str(run_dir), "--device", "cpu"], cache)
    assert runs.is_finished(run_dir), f"{stem}: training did not finish\n{log}"

    check_logged_config(paper_file, yaml.safe_load((run_dir / "config.yaml").read_text()), overrides)
    config = load_config(run_dir / "config.yaml")
    classification = config.task == "classification"
    env = json.loads((run_dir / "env.json").read_text())
    assert env["world_size"] == 2 and env["iters_per_epoch"] == 2, env
    assert env["per_process_batch"] == config.train.batch_size // 2
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

    if classification:
        eval_args, tag = [], ""
    else:
        eval_args, tag = ["--ms"], eval_tag(config.eval.scales, config.eval.flip, config.data.val_split, config)
        assert env["train_images"] == paper_fixtures.TRAIN_IMAGES and env["val_images"] == 1, env
    eval_file = run_dir / (f"eval_{tag}.json" if tag else "eval.json")
    eval_file.unlink(missing_ok=True)  # training writes eval.json; the evaluate command must write its own
    # One image: rank 0 evaluates it while rank 1 waits in the all-reduce, so rank 0 may use both cores.
    log, eval_s = torchrun(["-m", "encnet.evaluate", str(run_dir), *eval_args, "--device", "cpu"], cache, threads=2)
    assert eval_file.is_file(), f"{stem}: evaluation wrote no {eval_file.name}\n{log}"
    result = json.loads(eval_file.read_text())
    assert result["epoch"] == 1
    if classification:
        assert 0.0 <= result["top1_error"] <= 100.0, result
    else:
        settings = result["settings"]
        assert settings["mode"] == "sliding_window" and settings["scales"] == config.eval.scales, settings
        assert settings["flip"] == config.eval.flip
        assert settings["crop_size"] == (config.eval.crop_size or config.data.crop_size), settings
        assert settings["base_size"] == (config.eval.base_size or config.data.base_size), settings
        assert 0.0 <= result["pixAcc"] <= 100.0 and len(result["IoU"]) == env["num_classes"], result
    print(f"{stem}: train {train_s:.0f} s, evaluate {eval_s:.0f} s")
    return run_dir


def test_every_paper_config_is_covered():
    stems = _paper_stems()
    assert stems, f"no configs under {PAPER}"
    missing = [s for s in VOC_CHAIN if s not in stems]
    assert not missing, f"the VOC chain names configs that do not exist: {missing}"
    datasets = {yaml.safe_load((PAPER / f"{s}.yaml").read_text())["data"]["dataset"] for s in stems}
    assert datasets <= set(paper_fixtures.WRITERS), datasets - set(paper_fixtures.WRITERS)


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
@pytest.mark.parametrize("stem", [s for s in _paper_stems() if s not in VOC_CHAIN])
def test_paper_config_trains_and_evaluates(stem, fixtures, tmp_path):
    run_config(stem, fixtures, tmp_path)


@pytest.mark.slow
def test_voc_chain_trains_and_evaluates(fixtures, tmp_path):
    previous = None
    for stem in VOC_CHAIN:
        previous = run_config(stem, fixtures, tmp_path, init_from=previous)
