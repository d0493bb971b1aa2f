"""Seed statistics behind every verdict: paired differences, a 95 % paired t interval, and the verdicts.

A *direction* of the paper (EncNet > FCN on mIoU) is tested on seeds paired across the two arms: seed ``s`` of
both arms sees the same data and starts from the same generator state, so the per-seed difference
``better_s − worse_s`` removes what the seed does to both. The interval is the paired t interval
``mean ± t(0.975, n − 1) · sd / √n`` over those differences (``sd`` with ddof 1): with 5–10 seeds it is exact
for normal differences and, unlike a bootstrap over 5 values, it widens honestly when n is small.

Verdicts (``direction_verdict``): *reproduced* when the interval excludes 0 on the paper's side, *contradicted*
when it excludes 0 on the other side, *inconclusive* otherwise (or with fewer than 2 paired seeds, where there is
no interval). A verdict also needs its preconditions (the control classes learned by every arm); when they fail
the verdict is *inconclusive* whatever the interval says, and the reason is kept beside it.

Against a reported number (paper profile, ``reported_verdict``): *within* tolerance when
``|mean − reported| ≤ max(0.5, half-width)``, else *above* or *below*, as detectron2 checks its expected results.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

CONFIDENCE = 0.95
REPRODUCED, CONTRADICTED, INCONCLUSIVE = "reproduced", "contradicted", "inconclusive"
WITHIN, ABOVE, BELOW = "within", "above", "below"
REPORTED_TOLERANCE = 0.5  # points: the floor of the tolerance against a reported number
INTERVAL_METHOD = "paired t, 95 %"


@dataclass(frozen=True)
class Interval:
    """Mean of ``n`` values and its two-sided confidence interval (NaN bounds when n < 2)."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


def t_quantile(p: float, dof: int) -> float:
    from scipy.stats import t

    return float(t.ppf(p, dof))


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """``mean ± t((1 + confidence) / 2, n − 1) · sd / √n`` (sd with ddof 1); NaN values are an error."""
    xs = [float(v) for v in values]
    if any(math.isnan(x) for x in xs):
        raise ValueError(f"t_interval got NaN among {xs}: drop the seeds that did not run before pairing")
    n = len(xs)
    if n == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    mean = sum(xs) / n
    if n < 2:
        return Interval(mean, float("nan"), float("nan"), n)
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    half = t_quantile((1 + confidence) / 2, n - 1) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n)


def planned_half_width(sd: float, n: int, confidence: float = CONFIDENCE) -> float:
    """The paired t interval's half-width ``t((1 + confidence) / 2, n − 1) · sd / √n`` that n seeds give when the
    per-seed differences have standard deviation ``sd``."""
    if n < 2:
        raise ValueError(f"a t interval needs at least 2 seeds, asked for {n}")
    return t_quantile((1 + confidence) / 2, n - 1) * sd / math.sqrt(n)


def seeds_needed(sd: float, half_width: float, confidence: float = CONFIDENCE, max_seeds: int = 200) -> int:
    """The fewest paired seeds (≥ 2) whose interval half-width is at most ``half_width`` for differences of
    standard deviation ``sd`` (a pilot's estimate: the plan is as good as that estimate).

    Power planning for a precision target, not for a verdict: it fixes n before the final runs are seen.
    """
    if not (sd >= 0 and half_width > 0):
        raise ValueError(f"need sd >= 0 and half_width > 0, got sd={sd}, half_width={half_width}")
    for n in range(2, max_seeds + 1):
        if planned_half_width(sd, n, confidence) <= half_width:
            return n
    raise ValueError(f"sd {sd:.3g} needs more than {max_seeds} seeds for a half-width of {half_width:.3g}: "
                     "reduce the spread (design, evaluation noise) rather than add seeds")


def paired_differences(better: Mapping[int, float], worse: Mapping[int, float]) -> dict[int, float]:
    """``better[s] − worse[s]`` for every seed ``s`` both arms have (a seed one arm lacks is dropped)."""
    return {s: float(better[s]) - float(worse[s]) for s in sorted(set(better) & set(worse))
            if not (math.isnan(float(better[s])) or math.isnan(float(worse[s])))}


def paired_interval(better: Mapping[int, float], worse: Mapping[int, float],
                    confidence: float = CONFIDENCE) -> Interval:
    """The paired t interval of ``better − worse`` over the shared seeds."""
    return t_interval(list(paired_differences(better, worse).values()), confidence)


def direction_verdict(interval: Interval, preconditions_met: bool = True) -> str:
    """The paper says the difference is positive: is 0 outside the interval, and on which side?"""
    if not preconditions_met or interval.n < 2 or math.isnan(interval.low) or math.isnan(interval.high):
        return INCONCLUSIVE
    if interval.low > 0:
        return REPRODUCED
    if interval.high < 0:
        return CONTRADICTED
    return INCONCLUSIVE


def reported_tolerance(half_width: float, floor: float = REPORTED_TOLERANCE) -> float:
    """``max(floor, half_width)``; a missing interval (one seed) leaves the floor."""
    return floor if math.isnan(half_width) else max(floor, half_width)


def reported_verdict(mean: float, half_width: float, reported: float, floor: float = REPORTED_TOLERANCE) -> str:
    """``within`` when ``|mean − reported| ≤ max(floor, half_width)``, else ``above`` / ``below``; '' if unknown."""
    if math.isnan(mean) or math.isnan(reported):
        return ""
    delta = mean - reported
    if abs(delta) <= reported_tolerance(half_width, floor):
        return WITHIN
    return ABOVE if delta > 0 else BELOW


def format_interval(interval: Interval, digits: int = 2) -> str:
    """``+2.17 [−0.40, +4.74]``, or the mean alone when there is no interval."""
    if interval.n == 0:
        return "—"
    if math.isnan(interval.low):
        return f"{interval.mean:+.{digits}f} (n = {interval.n}: no interval)"
    return f"{interval.mean:+.{digits}f} [{interval.low:+.{digits}f}, {interval.high:+.{digits}f}]"
