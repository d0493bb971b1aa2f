"""What a config builds: datasets with their presets, the model, the loss, the metric, the optimizer.

Shared by ``encnet.train`` and ``encnet.evaluate`` so that evaluation rebuilds exactly the network and
the data pipeline that trained.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from .config import Config, effective_lr

__all__ = [
    "build_criterion",
    "build_dataset_for",
    "build_monitor_dataset",
    "build_metric",
    "build_model_for",
    "build_optimizer",
    "dataset_num_classes",
    "load_model_weights",
]

# ImageNet statistics (torchvision's pretrained ResNets and the released code).
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def build_dataset_for(config: Config, split: str, train: bool, view: str = "full"):
    """The dataset of ``split`` with the training (augmenting) or evaluation preset: the full image, or with
    ``view="centre_crop"`` release v0.5.0's validation view (``presets.SegmentationCentreCropPreset``)."""
    from encnet.data import build_dataset, presets

    data = config.data
    if config.task == "segmentation" and not train and view == "centre_crop":
        transform = presets.SegmentationCentreCropPreset(data.crop_size, mean=MEAN, std=STD)
    elif config.task == "segmentation":
        transform = (
            presets.SegmentationTrainPreset(
                base_size=data.base_size,
                crop_size=data.crop_size,
                scale_range=(data.scale_min, data.scale_max),
                rotate_degrees=data.rotate_degrees,
                hflip=data.hflip,
                ignore_index=255,
                mean=MEAN,
                std=STD,
                scale_side=data.scale_side,
                blur_prob=data.blur_prob,
                pad_label=0 if data.pad_label == "background" else 255,
            )
            if train
            else presets.SegmentationEvalPreset(mean=MEAN, std=STD)
        )
    else:
        transform = (
            presets.ClassificationTrainPreset(crop_size=data.crop_size, hflip=data.hflip)
            if train
            else presets.ClassificationEvalPreset()
        )
    kwargs = dict(data.options)
    if data.num_classes is not None:
        kwargs["num_classes"] = data.num_classes  # PASCAL-Context: 59 (background ignored) or 60
    return build_dataset(data.dataset, data.root, split, transform=transform, **kwargs)


def build_monitor_dataset(config: Config):
    """The validation split as the training's monitor scores it (``eval.monitor_view``): whole images, or release
    v0.5.0's centre crop of each image resized to cover the crop (``BaseDataset._val_sync_transform``)."""
    return build_dataset_for(config, config.data.val_split, train=False, view=config.eval.monitor_view)


def dataset_num_classes(config: Config, dataset) -> int:
    found = int(getattr(dataset, "num_classes", 0) or len(getattr(dataset, "classes", [])))
    if config.data.num_classes is not None and config.data.num_classes != found:
        raise ValueError(
            f"data.num_classes={config.data.num_classes} but dataset {config.data.dataset!r} has {found} "
            f"classes; remove the key or set data.num_classes={found}"
        )
    return found


def build_model_for(config: Config, num_classes: int, backbone_weights: bool = True) -> nn.Module:
    """The config's network; its backbone starts from ``model.pretrained`` unless ``backbone_weights`` is False
    (evaluation loads a whole checkpoint over it, and must not need the ImageNet files on an offline node)."""
    m = config.model
    if config.task == "classification":
        from encnet.models.cifar import build_cifar_model

        return build_cifar_model(m.name, num_classes=num_classes, block=m.cifar_block)
    from encnet.models import build_model
    from encnet.models.pretrained import IMAGENET_BACKBONES, NO_IMAGENET

    pretrained = m.pretrained if backbone_weights else "none"
    if backbone_weights and pretrained in ("none", "") and m.backbone in IMAGENET_BACKBONES:
        warnings.warn(NO_IMAGENET, stacklevel=2)
    return build_model(
        m.name, num_classes, backbone=m.backbone, pretrained=pretrained, pretrained_dir=m.pretrained_dir, aux=m.aux,
        se_loss=m.se_loss, lateral=m.lateral, num_codes=m.num_codes, attention=m.attention, aux_head=m.aux_head,
    )


def load_model_weights(model: nn.Module, source: str | Path) -> None:
    """Load full-model weights from a run folder (its last checkpoint) or a checkpoint / state_dict file.

    Used for the VOC stages (COCO pre-training → train_aug → trainval, PAPER.md §5): a stage starts from the
    previous stage's weights. The classifier layers are kept only when their shapes match.
    """
    path = Path(source)
    if path.is_dir():
        path = path / "checkpoint_last.pt"
    if not path.is_file():
        raise FileNotFoundError(
            f"model.init_from: no checkpoint at {path}; train the previous stage first or fix the path"
        )
    from encnet.engine.runs import load_checkpoint

    state = load_checkpoint(path)  # weights_only: a downloaded checkpoint cannot run code
    state = state.get("model", state)
    own = model.state_dict()
    kept = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    missing = [k for k in own if k not in kept]
    if len(kept) < len(own) // 2:
        raise ValueError(f"{path} does not match this model: only {len(kept)} of {len(own)} tensors fit")
    model.load_state_dict(kept, strict=False)
    if missing:
        print(f"init_from {path}: {len(missing)} tensors left at their initialisation (shape differs): "
              f"{', '.join(missing[:4])}{' …' if len(missing) > 4 else ''}")


def build_criterion(config: Config, num_classes: int) -> nn.Module:
    if config.task == "classification":
        return nn.CrossEntropyLoss()
    from encnet.losses import SegmentationLoss

    return SegmentationLoss(num_classes, se_weight=config.train.se_weight, aux_weight=config.train.aux_weight,
                            ignore_index=255)


def build_metric(config: Config, num_classes: int):
    from encnet import metrics

    if config.task == "classification":
        return metrics.ClassificationMetric()
    return metrics.SegmentationMetric(num_classes, ignore_index=255, miou=config.eval.miou)


def build_optimizer(model: nn.Module, config: Config) -> torch.optim.SGD:
    """SGD with the paper's groups: backbone at lr, heads at ``head_lr_mult`` × lr (PAPER.md §5).

    Each group carries ``lr_mult`` so the per-iteration schedule can set ``lr = schedule(it) · lr_mult``.
    """
    t = config.train
    lr = effective_lr(t)
    if config.task == "segmentation":
        groups = [
            {"params": list(model.backbone_parameters()), "lr_mult": 1.0},
            {"params": list(model.head_parameters()), "lr_mult": t.head_lr_mult},
        ]
        counted = sum(p.numel() for g in groups for p in g["params"])
        total = sum(p.numel() for p in model.parameters() if p.requires_grad)
        if counted != total:
            raise RuntimeError(f"backbone + head parameter groups hold {counted} of {total} parameters")
    else:
        groups = [{"params": [p for p in model.parameters() if p.requires_grad], "lr_mult": 1.0}]
    for g in groups:
        g["lr"] = lr * g["lr_mult"]
    return torch.optim.SGD(groups, lr=lr, momentum=t.momentum, weight_decay=t.weight_decay)
