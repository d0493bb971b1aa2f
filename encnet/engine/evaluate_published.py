"""Evaluate a published checkpoint without a run folder, under its source's protocol; export ours to mmseg.

    python -m encnet.evaluate --weights encnet_resnet50s_pcontext-4de91d59.pth --source pytorch-encoding \\
        --config configs/paper/pcontext_encnet_r50.yaml --set data.root=/data

writes ``runs/published/<experiment>/<file stem>/eval.json`` (``--out-dir`` to choose) like a run's, plus the
``config.yaml`` it ran (the config's dataset, the file's network, the protocol's ``eval``) and the load report.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Sequence

import torch

from . import distributed, runs
from .config import ConfigError, load_config, to_yaml
from .eval_loop import evaluate_model, write_eval
from .published_weights import export_mmseg, load_published
from .protocols import PROTOCOLS, SOURCE_PROTOCOL, apply_protocol, mmseg_logits

__all__ = ["default_out_dir", "evaluate_published", "export_checkpoint"]


def default_out_dir(experiment: str, weights: str | Path) -> Path:
    return Path("runs") / "published" / experiment / Path(weights).name.split(".")[0]


def evaluate_published(weights: str | Path, config_path: str | Path, source: str | None = None,
                       protocol: str | None = None, out_dir: str | Path | None = None,
                       overrides: Sequence[str] = (), split: str | None = None, device: str | None = None) -> dict:
    """Load ``weights`` strictly (``encnet.models.load_published``), evaluate, write and return ``eval.json``."""
    from .build import build_dataset_for, build_metric, dataset_num_classes

    config = load_config(config_path, list(overrides))
    published = load_published(weights, config, source)
    source = published.report.source
    protocol = protocol or SOURCE_PROTOCOL[source]
    config = apply_protocol(config, protocol)
    config.model = published.model_config
    spec = PROTOCOLS[protocol]
    ctx = distributed.setup(device, gpu_only=config.profile == "paper")
    split = split or config.data.val_split
    dataset = build_dataset_for(config, split, train=False)
    num_classes = dataset_num_classes(config, dataset)
    if num_classes != published.num_classes:
        raise ConfigError(f"{weights} predicts {published.num_classes} classes, {config.data.dataset} {split} has "
                          f"{num_classes}: wrong --config for this file?")
    model = published.model.to(ctx.device)
    if spec.mmseg is not None:
        predict = functools.partial(mmseg_logits, ratios=spec.mmseg["ratios"], flip=spec.mmseg["flip"],
                                    mode=spec.mmseg["mode"], scale=spec.mmseg["scale"])
        scales, flip = spec.mmseg["ratios"], spec.mmseg["flip"]
    else:
        predict, scales, flip = None, config.eval.scales, config.eval.flip
    result = evaluate_model(model, dataset, build_metric(config, num_classes), config, ctx, scales=scales,
                            flip=flip, predict=predict)
    out_dir = Path(out_dir) if out_dir is not None else default_out_dir(config.experiment, weights)
    record = None
    if ctx.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        runs.atomic_write_text(out_dir / "config.yaml", to_yaml(config))
        path = write_eval(out_dir, "", result, config, split, scales, flip, getattr(dataset, "class_names", None))
        record = runs.read_json(path)
        if spec.mmseg is not None:
            record["settings"].update(mode=f"mmseg_{spec.mmseg['mode']}", scale=spec.mmseg["scale"],
                                      crop_size=None, base_size=None, stride_ratio=None, accumulate="softmax",
                                      align_corners=False)
        record["protocol"] = {"name": protocol, "description": spec.description}
        record["weights"] = {"file": str(weights), "source": source, "load_report": published.report.to_dict()}
        runs.write_json(path, record)
    distributed.barrier()
    return record if record is not None else result


def export_checkpoint(weights: str | Path, config_path: str | Path, to: str, out: str | Path) -> Path:
    """Write one of the suite's checkpoints in another framework's layout (``to``: ``mmseg``)."""
    if to != "mmseg":
        raise ValueError(f"--export {to!r}: only 'mmseg' is supported")
    published = load_published(weights, load_config(config_path), "encnet")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(export_mmseg(published.model), out)
    return out
