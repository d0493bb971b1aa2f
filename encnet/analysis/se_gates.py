"""What the squeeze-and-excitation gates of a trained CIFAR network do (issue 35, the SE-ResNet < ResNet direction):
per block, the sigmoid gates' level, and how much they depend on the image and on its class.

A gate that is the same for every image is a fixed per-channel scale a plain ResNet can learn in its weights, so it
adds parameters without adding attention; a gate that varies with the image (and with its class) is the channel
attention SE-Net is credited with. Gates are read with forward hooks on the output of each block's
``torchvision.ops.SqueezeExcitation.scale_activation`` (the sigmoid), B×C×1×1.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import Tensor, nn
from torchvision.ops import SqueezeExcitation

__all__ = ["gate_statistics", "record_se_gates"]


@torch.no_grad()
def record_se_gates(model: nn.Module, batches: Iterable[Tensor]) -> dict[str, Tensor]:
    """Block name → N×C gates (float64) of every SE unit of ``model`` (eval mode) over the images of ``batches``."""
    units = {name.removesuffix(".attention"): m for name, m in model.named_modules()
             if isinstance(m, SqueezeExcitation)}
    if not units:
        raise ValueError("the model has no SqueezeExcitation unit (model.name SE-ResNet-<C>d)")
    seen: dict[str, list[Tensor]] = {name: [] for name in units}
    hooks = [unit.scale_activation.register_forward_hook(
        lambda _m, _i, out, name=name: seen[name].append(out.flatten(1).double()))
        for name, unit in units.items()]
    try:
        model.eval()
        for images in batches:
            model(images)
    finally:
        for hook in hooks:
            hook.remove()
    return {name: torch.cat(parts) for name, parts in seen.items()}


def gate_statistics(gates: Tensor, labels: Tensor, hidden: int | None = None) -> dict[str, float]:
    """Summary of one block's N×C ``gates`` for images of classes ``labels`` (N).

    ``mean`` / ``std``: over every image and channel. ``image_std``: the std over images of each channel's gate,
    averaged over channels (input dependence). ``class_std``: the std over classes of each channel's class-mean gate,
    averaged over channels (class dependence). ``channel_std``: the std over channels of the image-mean gates (a
    fixed per-channel scale). ``hidden`` is the unit's bottleneck width, recorded alongside.
    """
    gates, labels = torch.as_tensor(gates).double(), torch.as_tensor(labels)
    classes = labels.unique()
    per_class = torch.stack([gates[labels == k].mean(0) for k in classes])  # K×C
    return {
        "channels": gates.shape[1],
        "hidden": math.nan if hidden is None else hidden,
        "mean": gates.mean().item(),
        "std": gates.std().item(),
        "min": gates.min().item(),
        "max": gates.max().item(),
        "image_std": gates.std(0).mean().item(),
        "class_std": per_class.std(0).mean().item() if len(classes) > 1 else math.nan,
        "channel_std": gates.mean(0).std().item(),
    }
