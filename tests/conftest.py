"""Shared fixtures for the engine tests: tiny generated-data configs written into temporary folders."""

from pathlib import Path

import pytest
import torch
import yaml

from encnet.engine.config import load_config
from encnet.engine.evaluate import evaluate
from encnet.engine.train import train

REPO = Path(__file__).resolve().parents[1]
# Overrides that shrink a demo config to seconds on CPU.
TINY_DEMO = ["data.options={seed: 0, num_train: 16, num_val: 6, image_size: 32}", "data.base_size=32",
             "data.crop_size=32", "train.epochs=1", "train.batch_size=8"]

TINY_SEGMENTATION = {
    "task": "segmentation",
    "seed": 0,
    "model": {"name": "encnet", "backbone": "resnet_tiny", "pretrained": "none", "num_codes": 8},
    "data": {
        "dataset": "context_scenes",
        "base_size": 32,
        "crop_size": 32,
        "scale_min": 0.75,
        "scale_max": 1.25,
        "workers": 0,
        "options": {"seed": 0, "num_train": 8, "num_val": 3, "image_size": 32},
    },
    "train": {"epochs": 3, "batch_size": 4, "base_lr": 0.02, "val_every": 1},
    "eval": {"scales": [0.75, 1.25], "flip": True, "crop_size": 24, "base_size": 32},
}

TINY_CLASSIFICATION = {
    "task": "classification",
    "seed": 0,
    "model": {"name": "SE-ResNet-16d"},
    "data": {
        "dataset": "context_textures",
        "crop_size": 32,
        "workers": 0,
        "val_split": "test",
        "options": {"seed": 0, "num_train": 16, "num_test": 8},
    },
    "train": {"epochs": 2, "batch_size": 8, "base_lr": 0.05, "lr_ref_batch": 8, "lr_schedule": "cosine"},
}


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory) -> Path:
    """One cache folder for the generated demo data of the whole session (built once, on first use)."""
    return tmp_path_factory.mktemp("encnet_cache")


@pytest.fixture()
def single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_config(folder: Path, data: dict, cache: Path, name: str = "tiny") -> Path:
    """Write ``data`` as ``folder/test/<name>.yaml`` with its data root pointing at ``cache``."""
    data = yaml.safe_load(yaml.safe_dump(data))
    data["data"]["root"] = str(cache)
    path = folder / "test" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture()
def tiny_segmentation_config(tmp_path, data_cache) -> Path:
    return write_config(tmp_path / "configs", TINY_SEGMENTATION, data_cache, "tiny_seg")


@pytest.fixture()
def tiny_classification_config(tmp_path, data_cache) -> Path:
    return write_config(tmp_path / "configs", TINY_CLASSIFICATION, data_cache, "tiny_cls")


def train_demo_pair(runs_root: Path, data_cache: Path) -> tuple[Path, Path]:
    """Two tiny demo runs with the real engine, one epoch each on a small context_scenes variant: FCN, evaluated with
    saved predictions, and EncNet, left without them (the failure-case notebook must then make its own)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        made = []
        for name, extra in (("pcontext_fcn_r50", []), ("pcontext_encnet_r50", ["model.num_codes=8"])):
            config = load_config(REPO / "configs" / "demo" / f"{name}.yaml",
                                 [f"data.root={data_cache}", *TINY_DEMO, *extra])
            made.append(train(config, output_root=runs_root, device="cpu"))
        evaluate(made[0], save_predictions=True, device="cpu")
    finally:
        torch.set_num_threads(threads)
    return made[0], made[1]


def pytest_configure(config):
    # Registered here because pyproject.toml is shared. run_tests.sh deselects `slow` (the paper smoke test) unless
    # given -m; CI runs both sets. Plain `pytest` runs every marker, `-m faults` only the fault tests.
    config.addinivalue_line("markers", "slow: minutes on 2 CPU cores (the paper smoke test); -m 'not slow' skips")
    config.addinivalue_line("markers", "faults: slow fault-injection tests with real processes (tests/test_faults.py)")
    config.addinivalue_line("markers", "peers: against the peers' released code in .peers/ (tests/test_peers.py); "
                                       "install it with `bash scripts/install_peers.sh`, run with -m peers")


def pytest_sessionfinish(session, exitstatus):
    # A multiprocessing child still alive here (a DataLoader worker whose iterator a traceback kept) makes the
    # interpreter's exit wait for it, forever if it ignores SIGTERM as our training workers do: the run would hang
    # after printing its summary line. Name them, stop them, and fail the session instead.
    import multiprocessing

    left = multiprocessing.active_children()
    if left:
        names = ", ".join(f"{p.name} (pid {p.pid})" for p in left)
        print(f"\nconftest: child processes left running after the tests: {names}; killed. A test or the engine "
              f"leaks them (an iterator kept alive by a traceback?)")
        for p in left:
            p.kill()
            p.join(timeout=10)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
