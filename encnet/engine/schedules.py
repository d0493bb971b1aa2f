"""Learning-rate schedules, stepped once per iteration.

``poly`` is the segmentation schedule of the paper and the released ``LR_Scheduler`` (PAPER.md §5):
lr · (1 − it/total)^0.9. ``cosine`` is the CIFAR-10 schedule of the released recognition code (§7):
lr · ½(1 + cos(π · it/total)). ``it`` counts iterations from 0 over the whole run.
"""

from __future__ import annotations

import math

__all__ = ["cosine_lr", "lr_at", "poly_lr"]


def poly_lr(base_lr: float, it: int, total_iters: int, power: float = 0.9) -> float:
    return base_lr * (1.0 - it / total_iters) ** power


def cosine_lr(base_lr: float, it: int, total_iters: int) -> float:
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * it / total_iters))


def lr_at(schedule: str, base_lr: float, it: int, total_iters: int, power: float = 0.9) -> float:
    """The learning rate at iteration ``it`` of ``total_iters`` for the named schedule."""
    if not 0 <= it <= total_iters:
        raise ValueError(f"iteration {it} outside 0..{total_iters}")
    if schedule == "poly":
        return poly_lr(base_lr, it, total_iters, power)
    if schedule == "cosine":
        return cosine_lr(base_lr, it, total_iters)
    raise ValueError(f"unknown lr_schedule {schedule!r}; expected 'poly' or 'cosine'")
