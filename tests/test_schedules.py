"""LR schedules against their closed forms, evaluated independently in float64 with math."""

import math

import pytest

from encnet.engine.config import TrainConfig, effective_lr
from encnet.engine.schedules import iterations_per_epoch, lr_at, poly_lr


def test_poly_lr_matches_formula_over_a_run():
    base, total = 0.01, 37
    for it in range(total + 1):
        want = base * math.pow(1.0 - float(it) / float(total), 0.9)
        assert lr_at("poly", base, it, total, power=0.9) == pytest.approx(want, rel=1e-15, abs=0)
    assert poly_lr(base, 0, total) == base
    assert poly_lr(base, total, total) == 0.0


def test_cosine_lr_matches_formula_and_endpoints():
    base, total = 0.1, 50
    assert lr_at("cosine", base, 0, total) == pytest.approx(base)
    assert lr_at("cosine", base, total // 2, total) == pytest.approx(base / 2)
    assert lr_at("cosine", base, total, total) == pytest.approx(0.0, abs=1e-15)
    assert lr_at("cosine", base, 7, total) == pytest.approx(base * (1 + math.cos(math.pi * 7 / 50)) / 2)


def test_unknown_schedule_and_out_of_range_are_errors():
    with pytest.raises(ValueError, match="lr_schedule"):
        lr_at("step", 0.1, 0, 10)
    with pytest.raises(ValueError, match="outside"):
        lr_at("poly", 0.1, 11, 10)


def test_effective_lr_scales_linearly_with_batch_as_the_paper():
    # PAPER.md §5: lr = base / 16 · batch; pcontext base 0.001 at batch 16 → 0.001, at batch 32 → 0.002
    assert effective_lr(TrainConfig(base_lr=0.001, batch_size=16)) == pytest.approx(0.001)
    assert effective_lr(TrainConfig(base_lr=0.001, batch_size=32)) == pytest.approx(0.002)
    assert effective_lr(TrainConfig(base_lr=0.004, batch_size=4)) == pytest.approx(0.001)


def test_warmup_ramps_linearly_then_follows_the_schedule():
    # Closed form: rate(it) · (it + 1) / w for it < w, rate(it) after; checked for both schedules.
    base, total, w = 0.2, 40, 10
    for schedule, rate in (("poly", lambda it: base * math.pow(1.0 - it / total, 0.9)),
                           ("cosine", lambda it: 0.5 * base * (1.0 + math.cos(math.pi * it / total)))):
        for it in range(total + 1):
            want = rate(it) * ((it + 1) / w if it < w else 1.0)
            assert lr_at(schedule, base, it, total, warmup_iters=w) == pytest.approx(want, rel=1e-14, abs=0)
    assert lr_at("poly", base, 0, total, warmup_iters=w) == pytest.approx(base / w)  # not 0: no wasted step
    assert lr_at("poly", base, 5, total, warmup_iters=0) == lr_at("poly", base, 5, total)


def test_a_warmup_as_long_as_the_run_is_a_config_error(tmp_path):
    from encnet.engine.config import ConfigError, load_config

    path = tmp_path / "c.yaml"
    path.write_text("task: segmentation\ntrain: {epochs: 4, warmup_epochs: 4}\n")
    with pytest.raises(ConfigError, match="warmup_epochs=4 is not below train.epochs=4.*shorten its warm-up"):
        load_config(path)
    path.write_text("task: segmentation\ntrain: {epochs: 4, warmup_epochs: 3}\n")
    assert load_config(path).train.warmup_epochs == 3


@pytest.mark.parametrize("num_images, batch_size, world_size",
                         [(4998, 16, 1), (4998, 16, 2), (4998, 16, 8), (4998, 16, 16), (10582, 16, 4), (50000, 128, 2),
                          (2913, 16, 8), (17, 4, 2), (15, 16, 1)])
def test_iterations_per_epoch_is_the_length_of_the_trainers_loader(num_images, batch_size, world_size):
    # The oracle is torch's own loader, built as encnet/engine/train.py builds it on every rank.
    from torch.utils.data import DataLoader, DistributedSampler

    data = range(num_images)
    lengths = {len(DataLoader(data, batch_size=batch_size // world_size, drop_last=True,
                              sampler=DistributedSampler(data, num_replicas=world_size, rank=rank, shuffle=True,
                                                         drop_last=True)))
               for rank in range(world_size)}
    assert lengths == {iterations_per_epoch(num_images, batch_size, world_size)}


def test_pascal_context_drops_its_last_partial_batch():
    # Paper §3.1: 4,998 training images, batch 16, the last incomplete mini-batch dropped.
    assert iterations_per_epoch(4998, 16) == 312 and 80 * iterations_per_epoch(4998, 16) == 24_960
    with pytest.raises(ValueError, match="divisible"):
        iterations_per_epoch(4998, 16, 3)
