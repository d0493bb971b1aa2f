"""A finished run's network and evaluation split, rebuilt from its folder as ``encnet.evaluate`` rebuilds them, for
analyses that need the network itself (its scores under other protocols, its internal activations)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn


@dataclass
class TrainedRun:
    run_dir: Path
    config: object  # encnet.engine.config.Config
    model: nn.Module  # eval mode, last checkpoint's weights
    dataset: object  # the evaluation split with the evaluation preset (normalised tensors)
    epoch: int | None


def load_trained_run(run_dir: str | Path, split: str | None = None, device: str = "cpu") -> TrainedRun:
    """The run's last checkpoint in its network (eval mode) and its ``split`` (default: the validation split)."""
    from encnet.engine import runs
    from encnet.engine.build import build_dataset_for, build_model_for, dataset_num_classes
    from encnet.engine.config import load_config

    run_dir = Path(run_dir)
    checkpoint_path = run_dir / runs.CHECKPOINT
    if not checkpoint_path.is_file():
        raise FileNotFoundError(f"{run_dir} has no {runs.CHECKPOINT}; train it first: python -m encnet.train "
                                f"{run_dir / 'config.yaml'} --run-dir {run_dir}")
    config = load_config(run_dir / "config.yaml")
    dataset = build_dataset_for(config, split or config.data.val_split, train=False)
    model = build_model_for(config, dataset_num_classes(config, dataset))
    checkpoint = runs.load_checkpoint(checkpoint_path)
    model.load_state_dict(checkpoint["model"])
    return TrainedRun(run_dir, config, model.to(device).eval(), dataset, checkpoint.get("epoch"))
