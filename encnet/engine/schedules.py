"""Learning-rate schedules, stepped once per iteration.

``poly`` is the segmentation schedule of the paper and the released ``LR_Scheduler`` (PAPER.md §5):
lr · (1 − it/total)^0.9. ``cosine`` is the CIFAR-10 schedule of the released recognition code (§7):
lr · ½(1 + cos(π · it/total)). ``it`` counts iterations from 0 over the whole run.

``warmup_iters`` > 0 scales the schedule's rate by (it + 1) / warmup_iters over the first ``warmup_iters``
iterations (a linear warm-up, as the authors' later ``LR_Scheduler(warmup_epochs=...)`` offers; theirs starts at
a rate of exactly 0, which spends the first step on nothing). Off (0) by default: the paper does not warm up.

``iterations_per_epoch`` is the length of the trainer's loader, whose ``total_iters`` the schedules run over: the
last incomplete batch is dropped (paper §3.1, and the release's ``DataLoader(drop_last=True)``).
"""

from __future__ import annotations

import math

__all__ = ["cosine_lr", "iterations_per_epoch", "lr_at", "poly_lr"]


def poly_lr(base_lr: float, it: int, total_iters: int, power: float = 0.9) -> float:
    return base_lr * (1.0 - it / total_iters) ** power


def cosine_lr(base_lr: float, it: int, total_iters: int) -> float:
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * it / total_iters))


def lr_at(schedule: str, base_lr: float, it: int, total_iters: int, power: float = 0.9,
          warmup_iters: int = 0) -> float:
    """The learning rate at iteration ``it`` of ``total_iters`` for the named schedule."""
    if not 0 <= it <= total_iters:
        raise ValueError(f"iteration {it} outside 0..{total_iters}")
    if schedule == "poly":
        rate = poly_lr(base_lr, it, total_iters, power)
    elif schedule == "cosine":
        rate = cosine_lr(base_lr, it, total_iters)
    else:
        raise ValueError(f"unknown lr_schedule {schedule!r}; expected 'poly' or 'cosine'")
    if it < warmup_iters:
        rate *= (it + 1) / warmup_iters
    return rate


def iterations_per_epoch(num_images: int, batch_size: int, world_size: int = 1) -> int:
    """SGD steps in one epoch of ``num_images`` at global batch ``batch_size`` over ``world_size`` processes.

    The trainer's ``DistributedSampler(drop_last=True)`` gives each process ⌊num_images / world_size⌋ images and
    its ``DataLoader(drop_last=True)`` batches them by batch_size / world_size, the rest dropped: for a world size
    that divides the batch this is ⌊num_images / batch_size⌋ whatever the world size (PASCAL-Context: 4,998
    images at batch 16 give 312 steps, the last 6 images of each shuffled epoch unused).
    """
    if batch_size % world_size:
        raise ValueError(f"batch_size {batch_size} is not divisible by {world_size} processes")
    return (num_images // world_size) // (batch_size // world_size)
