"""SyncBatchNorm: a 2-process gloo run equals BatchNorm on the concatenated batch (float64).

The workers are this file run as a script; they report through files, because torch's gloo can abort
at interpreter exit after a successful run.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn

from encnet.nn import SyncBatchNorm, convert_sync_batchnorm
from encnet.nn import syncbn

WORLD = 2
SPLIT = (3, 2)  # uneven shards: the global count must come from the collective, not world × local
SHAPES = {"2d": (5, 3, 4, 4), "1d": (5, 3, 6)}
MODES = ("once", "twice")


def batch(step: int, shape, what: str) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1000 * step + (what == "grad") + 7 * len(shape))
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    # A per-channel offset and scale, so that μ and σ differ between channels.
    view = (1, -1) + (1,) * (len(shape) - 2)
    return x * torch.tensor([0.5, 2.0, 3.0], dtype=torch.float64).view(view) + torch.tensor(
        [1.0, -2.0, 0.25], dtype=torch.float64
    ).view(view)


def affine_params():
    gen = torch.Generator().manual_seed(5)
    weight = torch.randn(3, generator=gen, dtype=torch.float64)
    return weight, torch.randn(3, generator=gen, dtype=torch.float64)


def shard(t: torch.Tensor, rank: int) -> torch.Tensor:
    return t.split(SPLIT)[rank]


def train_two_steps(bn: nn.Module, shape, rank=None):
    """Two forward/backward steps with loss Σ y·g; returns the second step's tensors."""
    weight, bias = affine_params()
    with torch.no_grad():
        bn.weight.copy_(weight)
        bn.bias.copy_(bias)
    for step in (1, 2):
        x, g = batch(step, shape, "x"), batch(step, shape, "grad")
        if rank is not None:
            x, g = shard(x, rank), shard(g, rank)
        x.requires_grad_()
        bn.zero_grad()
        syncbn.reset_collective_counts()
        y = bn(x)
        (y * g).sum().backward()
    return {
        "y": y.detach(),
        "x_grad": x.grad,
        "weight_grad": bn.weight.grad.clone(),
        "bias_grad": bn.bias.grad.clone(),
        "running_mean": bn.running_mean.clone(),
        "running_var": bn.running_var.clone(),
        "num_batches_tracked": int(bn.num_batches_tracked),
        "counts": dict(syncbn.collective_counts),
    }


def worker(rank: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{out_dir}/store", rank=rank, world_size=WORLD)
    results = {}
    for mode in MODES:
        for name, shape in SHAPES.items():
            bn = SyncBatchNorm(3, mode=mode).double()
            results[mode, name] = train_two_steps(bn, shape, rank)
            bn.eval()
            syncbn.reset_collective_counts()
            results[mode, name]["eval_y"] = bn(shard(batch(3, shape, "x"), rank)).detach()
            results[mode, name]["eval_counts"] = dict(syncbn.collective_counts)
    # Half-precision input (what autocast feeds it): statistics must still be reduced in float32.
    bn = SyncBatchNorm(3)
    y = bn(shard(batch(1, SHAPES["2d"], "x"), rank).to(torch.bfloat16))
    results["bf16"] = {"dtype": y.dtype, "running_mean": bn.running_mean.clone()}
    torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    dist.destroy_process_group()
    os._exit(0)


@pytest.fixture(scope="module")
def distributed_results(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("syncbn")
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, str(rank), str(out_dir)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for rank in range(WORLD)
    ]
    logs = [p.communicate(timeout=180)[0] for p in procs]
    files = [out_dir / f"rank{rank}.pt" for rank in range(WORLD)]
    missing = [str(f) for f in files if not f.exists()]
    assert not missing, f"workers did not report {missing}; their output:\n" + "\n".join(logs)
    return [torch.load(f, weights_only=False) for f in files]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", SHAPES)
def test_two_processes_equal_batchnorm_on_whole_batch(distributed_results, mode, name):
    shape = SHAPES[name]
    reference_bn = (nn.BatchNorm2d if len(shape) == 4 else nn.BatchNorm1d)(3).double()
    ref = train_two_steps(reference_bn, shape)
    ranks = [r[mode, name] for r in distributed_results]
    close = dict(rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(torch.cat([r["y"] for r in ranks]), ref["y"], **close)
    torch.testing.assert_close(torch.cat([r["x_grad"] for r in ranks]), ref["x_grad"], **close)
    # Parameter gradients are per-process sums, as for BatchNorm under DDP; together they are the whole.
    torch.testing.assert_close(sum(r["weight_grad"] for r in ranks), ref["weight_grad"], **close)
    torch.testing.assert_close(sum(r["bias_grad"] for r in ranks), ref["bias_grad"], **close)
    for r in ranks:
        torch.testing.assert_close(r["running_mean"], ref["running_mean"], **close)
        torch.testing.assert_close(r["running_var"], ref["running_var"], **close)
        assert r["num_batches_tracked"] == 2

    reference_bn.eval()
    eval_ref = reference_bn(batch(3, shape, "x")).detach()
    torch.testing.assert_close(torch.cat([r["eval_y"] for r in ranks]), eval_ref, **close)

    per_step = {"once": 1, "twice": 2}[mode]
    for r in ranks:
        assert r["counts"]["forward_calls"] == per_step
        assert r["counts"]["backward_calls"] == per_step
        assert r["eval_counts"] == {}


def test_two_processes_reduce_half_precision_in_float32(distributed_results):
    x = batch(1, SHAPES["2d"], "x").to(torch.bfloat16).double()  # what the workers fed, exactly
    expected = 0.1 * x.mean(dim=(0, 2, 3))
    for r in distributed_results:
        assert r["bf16"]["dtype"] == torch.bfloat16
        assert r["bf16"]["running_mean"].dtype == torch.float32
        torch.testing.assert_close(r["bf16"]["running_mean"].double(), expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("momentum", [0.1, None])
def test_without_process_group_is_batchnorm(momentum):
    shape = SHAPES["2d"]
    sync, plain = SyncBatchNorm(3, momentum=momentum).double(), nn.BatchNorm2d(3, momentum=momentum).double()
    assert list(sync.state_dict()) == list(plain.state_dict())
    got, ref = train_two_steps(sync, shape), train_two_steps(plain, shape)
    assert got.pop("counts") == {} and ref.pop("counts") == {}
    for key in ref:
        if isinstance(ref[key], torch.Tensor):
            torch.testing.assert_close(got[key], ref[key], rtol=0, atol=0)
        else:
            assert got[key] == ref[key]
    sync.eval(), plain.eval()
    x = batch(3, shape, "x")
    torch.testing.assert_close(sync(x), plain(x), rtol=0, atol=0)


def test_rejects_unknown_mode():
    with pytest.raises(ValueError, match="once"):
        SyncBatchNorm(3, mode="thrice")


def test_convert_sync_batchnorm_replaces_every_batchnorm():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 1),
        nn.BatchNorm2d(4),
        nn.Sequential(nn.BatchNorm1d(4, affine=False), nn.ReLU()),
        nn.ModuleDict(
            {"bn3d": nn.BatchNorm3d(2, momentum=None), "torch_sync": nn.SyncBatchNorm(5, eps=1e-3)}
        ),
    )
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_()
            m.running_var.uniform_(0.5, 2)
            if m.affine:
                nn.init.normal_(m.weight)
    model[3]["torch_sync"].eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(6, 3, 5, 5)
    model.eval()
    expected = model[1](model[0](x))

    converted = convert_sync_batchnorm(model, mode="twice")
    kinds = [type(m) for m in converted.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert kinds == [SyncBatchNorm] * 4
    assert all(m.mode == "twice" for m in converted.modules() if isinstance(m, SyncBatchNorm))
    after = converted.state_dict()
    assert list(after) == list(before)
    for key, value in before.items():
        torch.testing.assert_close(after[key], value, rtol=0, atol=0)
    assert converted[3]["bn3d"].momentum is None and converted[3]["torch_sync"].eps == 1e-3
    assert not converted[2][0].affine
    torch.testing.assert_close(converted[1](converted[0](x)), expected, rtol=0, atol=0)
    assert isinstance(convert_sync_batchnorm(nn.BatchNorm2d(2)), SyncBatchNorm)


if __name__ == "__main__":
    worker(int(sys.argv[1]), sys.argv[2])
