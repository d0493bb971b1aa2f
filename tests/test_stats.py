"""The seed statistics behind every verdict (encnet.report.stats), against hand computations and scipy's
paired t test (an independent implementation of the same interval)."""

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from encnet.report import stats


def test_t_interval_hand_computed():
    # diffs 1..5: mean 3, sd sqrt(2.5), se sqrt(0.5); t(0.975, 4) = 2.776445 from a printed t table.
    got = stats.t_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    half = 2.776445 * math.sqrt(0.5)
    assert got.n == 5 and got.mean == pytest.approx(3.0)
    assert got.low == pytest.approx(3.0 - half, abs=1e-5) and got.high == pytest.approx(3.0 + half, abs=1e-5)
    assert got.half_width == pytest.approx(half, abs=1e-5)


def test_paired_interval_matches_scipy_ttest_rel():
    rng = np.random.default_rng(0)
    a, b = rng.normal(40, 3, size=7), rng.normal(37, 3, size=7)
    got = stats.paired_interval(dict(enumerate(a)), dict(enumerate(b)))
    ci = scipy_stats.ttest_rel(a, b).confidence_interval(0.95)
    assert got.mean == pytest.approx(float(np.mean(a - b)), rel=1e-12)
    assert (got.low, got.high) == (pytest.approx(ci.low, rel=1e-10), pytest.approx(ci.high, rel=1e-10))


def test_pairing_uses_shared_seeds_only():
    better = {0: 10.0, 1: 12.0, 2: 11.0, 7: 99.0}
    worse = {0: 9.0, 1: 10.0, 2: 8.0, 3: 0.0}
    assert stats.paired_differences(better, worse) == {0: 1.0, 1: 2.0, 2: 3.0}
    assert stats.paired_interval(better, worse).n == 3


def test_pairing_differs_from_unpaired_when_seeds_share_noise():
    # A seed effect shared by both arms: unpaired spreads are huge, the paired differences are constant-ish.
    seed_effect = np.array([-10.0, 0.0, 10.0, 5.0, -5.0])
    better = dict(enumerate(50 + seed_effect + np.array([1.0, 1.2, 0.8, 1.1, 0.9])))
    worse = dict(enumerate(50 + seed_effect))
    got = stats.paired_interval(better, worse)
    assert stats.direction_verdict(got) == stats.REPRODUCED
    assert got.half_width < 0.5


def test_one_seed_has_no_interval_and_is_inconclusive():
    got = stats.t_interval([2.0])
    assert got.n == 1 and math.isnan(got.low) and math.isnan(got.high)
    assert stats.direction_verdict(got) == stats.INCONCLUSIVE
    assert stats.t_interval([]).n == 0
    with pytest.raises(ValueError, match="NaN"):
        stats.t_interval([1.0, float("nan")])


@pytest.mark.parametrize("low, high, verdict", [
    (0.1, 3.0, stats.REPRODUCED), (-3.0, -0.1, stats.CONTRADICTED), (-1.0, 2.0, stats.INCONCLUSIVE),
    (0.0, 2.0, stats.INCONCLUSIVE),  # touching 0 does not exclude it
])
def test_direction_verdict(low, high, verdict):
    interval = stats.Interval((low + high) / 2, low, high, 5)
    assert stats.direction_verdict(interval) == verdict


def test_failed_precondition_makes_any_interval_inconclusive():
    assert stats.direction_verdict(stats.Interval(5.0, 4.0, 6.0, 5), preconditions_met=False) == stats.INCONCLUSIVE


@pytest.mark.parametrize("mean, half, reported, verdict", [
    (49.6, 0.2, 49.2, stats.WITHIN),   # |0.4| <= max(0.5, 0.2)
    (49.8, 0.2, 49.2, stats.ABOVE),    # |0.6| > 0.5
    (48.0, 1.5, 49.2, stats.WITHIN),   # |1.2| <= 1.5: the interval widens the tolerance
    (47.5, 1.5, 49.2, stats.BELOW),
    (49.8, float("nan"), 49.2, stats.ABOVE),  # one seed: the 0.5 floor alone
    (float("nan"), 1.0, 49.2, ""),
])
def test_reported_verdict(mean, half, reported, verdict):
    assert stats.reported_verdict(mean, half, reported) == verdict


def test_format_interval():
    assert stats.format_interval(stats.Interval(2.171, -0.4, 4.744, 5)) == "+2.17 [-0.40, +4.74]"
    assert "no interval" in stats.format_interval(stats.Interval(1.0, float("nan"), float("nan"), 1))


def test_seeds_needed_hand_computed():
    # sd 3, target 2: t(0.975, 10) = 2.228 gives 2.228 · 3 / √11 = 2.015 > 2; t(0.975, 11) = 2.201 gives
    # 2.201 · 3 / √12 = 1.906 ≤ 2 (printed t table): 12 seeds.
    assert stats.planned_half_width(3.0, 11) == pytest.approx(2.228 * 3 / math.sqrt(11), abs=1e-3)
    assert stats.seeds_needed(3.0, 2.0) == 12
    assert stats.planned_half_width(3.0, 12) <= 2.0 < stats.planned_half_width(3.0, 11)
    # no spread: the smallest interval there is; one that cannot be reached says so
    assert stats.seeds_needed(0.0, 1.0) == 2
    with pytest.raises(ValueError, match="more than 200 seeds"):
        stats.seeds_needed(50.0, 0.5)
    with pytest.raises(ValueError):
        stats.planned_half_width(1.0, 1)


def test_seeds_needed_meets_the_target_on_simulated_pilots():
    # The plan's half-width is the one the t interval then reports for differences of exactly that sd.
    rng = np.random.default_rng(3)
    for sd in (0.5, 1.7, 4.0):
        n = stats.seeds_needed(sd, 1.0)
        diffs = rng.normal(0, 1, size=n)
        diffs = (diffs - diffs.mean()) / diffs.std(ddof=1) * sd + 2.0
        assert stats.t_interval(list(diffs)).half_width == pytest.approx(stats.planned_half_width(sd, n))
        assert stats.t_interval(list(diffs)).half_width <= 1.0


def test_power_plan_from_a_directions_table(capsys):
    from pathlib import Path

    import pandas as pd

    from encnet.report import power_plan

    # Hand-computed: half-width 1 over 5 seeds → sd = √5 / t(0.975, 4) = 2.236068 / 2.776445 = 0.805371; for a
    # 2.0 target, 3 seeds give 4.302653 · 0.805371 / √3 = 2.0006 (> 2), 4 seeds 3.182446 · 0.805371 / 2 = 1.2815.
    pilot = pd.DataFrame([{"claim": "A > B (mIoU)", "metric": "mIoU", "ci_low": 1.0, "ci_high": 3.0, "n_pairs": 5},
                          {"claim": "C < D (test error)", "metric": "error", "ci_low": -0.9, "ci_high": 0.9,
                           "n_pairs": 5},
                          {"claim": "E > F (mIoU)", "metric": "mIoU", "ci_low": None, "ci_high": None, "n_pairs": 1}])
    table = power_plan.plan(pilot)
    assert table.loc[0, "pilot sd"] == pytest.approx(0.805371, abs=1e-6)
    assert table.loc[0, "seeds needed"] == 4 and table.loc[0, "planned half-width"] == pytest.approx(1.2815, abs=1e-4)
    # the error metric's target is 1.0; half-width 0.9 over 5 seeds is sd 0.724834: 4 seeds give
    # 3.182446 · 0.724834 / 2 = 1.1534 > 1, 5 seeds the pilot's own 0.9
    assert table.loc[1, "target half-width"] == 1.0 and table.loc[1, "seeds needed"] == 5
    assert "fewer than 2" in table.loc[2, "note"]
    # the command on the committed run's own directions tables
    tables = sorted(str(p) for p in (Path(__file__).resolve().parents[1] / "tables").glob("*_directions.csv"))
    assert power_plan.main(tables) == 0
    out = capsys.readouterr().out
    assert "EncNet > FCN (mIoU)" in out and "seeds needed" in out
    assert power_plan.main(["/nonexistent_directions.csv"]) == 2
