"""Learning-rate schedules, stepped once per iteration.

``poly`` is the segmentation schedule of the paper and the released ``LR_Scheduler`` (PAPER.md §5):
lr · (1 − it/total)^0.9. ``cosine`` is the CIFAR-10 schedule of the released recognition code (§7):
lr · ½(1 + cos(π · it/total)). ``it`` counts iterations from 0 over the whole run.

``warmup_iters`` > 0 scales the schedule's rate by (it + 1) / warmup_iters over the first ``warmup_iters``
iterations (a linear warm-up, as the authors' later ``LR_Scheduler(warmup_epochs=...)`` offers; theirs starts at
a rate of exactly 0, which spends the first step on nothing). Off (0) by default: the paper does not warm up.
"""

from __future__ import annotations

import math

__all__ = ["cosine_lr", "lr_at", "poly_lr"]


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
