"""Cross-process BatchNorm, "sync once" (EncNet slides 27–29).

Data-parallel training normalises each process's shard with its own statistics; cross-process BN
needs the statistics of the whole batch. "Sync twice" (MegDet/PANet) all-reduces Σx to get μ and then
Σ(x−μ)² to get σ²: two collectives per forward. EncNet's "sync once" all-reduces (Σx, Σx², n) in one
collective (μ = Σx/n, σ² = Σx²/n − μ²), and the backward pass needs one more, of (Σdy, Σdy·x̂).

Why not ``torch.nn.SyncBatchNorm``: it refuses CPU tensors, so it cannot be tested with gloo.

Counting collectives: every all-reduce this module issues goes through :func:`_all_reduce`, which adds
to the module-level :data:`collective_counts` (keys ``forward_calls``, ``backward_calls``,
``forward_bytes``, ``backward_bytes``). A benchmark reads it around a step and calls
:func:`reset_collective_counts` between measurements.

Numerics: statistics are reduced in float32 (or float64 for float64 inputs) even under autocast, so
half-precision activations do not lose Σx² to overflow or rounding. The one-pass variance
Σx²/n − μ² is what the paper describes; it loses precision when |μ| ≫ σ, which BN inputs after a
conv rarely reach.
"""

from __future__ import annotations

from collections import Counter

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = [
    "SyncBatchNorm",
    "convert_sync_batchnorm",
    "collective_counts",
    "reset_collective_counts",
]

MODES = ("once", "twice")

collective_counts: Counter = Counter()


def reset_collective_counts() -> None:
    collective_counts.clear()


def _all_reduce(tensor: Tensor, group, phase: str) -> Tensor:
    collective_counts[f"{phase}_calls"] += 1
    collective_counts[f"{phase}_bytes"] += tensor.numel() * tensor.element_size()
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=group)
    return tensor


def _stat_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)


def _per_channel(t: Tensor, ndim: int) -> Tensor:
    """Reshape a C-vector so that it broadcasts against a B×C×... tensor."""
    return t.view(1, -1, *([1] * (ndim - 2)))


class _SyncBatchNormFunction(torch.autograd.Function):
    """y = (x − μ)/σ · w + b with global μ, σ; gradients use global Σdy and Σdy·x̂."""

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, eps, momentum, group, mode):
        dims = [0] + list(range(2, x.dim()))
        xf = x.to(_stat_dtype(x.dtype))
        local_count = float(x.numel() // x.size(1))
        if mode == "once":
            packed = torch.cat(
                [xf.sum(dims), (xf * xf).sum(dims), xf.new_full((1,), local_count)]
            )
            _all_reduce(packed, group, "forward")
            total_sum, total_sq, count = packed.split([x.size(1), x.size(1), 1])
            count = count.item()
            mean = total_sum / count
            var = (total_sq / count - mean * mean).clamp_min(0.0)
        else:
            packed = torch.cat([xf.sum(dims), xf.new_full((1,), local_count)])
            _all_reduce(packed, group, "forward")
            total_sum, count = packed.split([x.size(1), 1])
            count = count.item()
            mean = total_sum / count
            centred_sq = (xf - _per_channel(mean, x.dim())).pow(2).sum(dims)
            var = _all_reduce(centred_sq, group, "forward") / count
        if count <= 1:
            raise ValueError(
                f"SyncBatchNorm needs more than 1 value per channel across all processes in "
                f"training, got {int(count)} (input shape {tuple(x.shape)} on this process)"
            )

        if running_mean is not None:
            with torch.no_grad():
                unbiased = var * (count / (count - 1))
                running_mean.mul_(1 - momentum).add_(mean.to(running_mean.dtype), alpha=momentum)
                running_var.mul_(1 - momentum).add_(unbiased.to(running_var.dtype), alpha=momentum)

        invstd = torch.rsqrt(var + eps)
        x_hat = (xf - _per_channel(mean, x.dim())) * _per_channel(invstd, x.dim())
        y = x_hat
        if weight is not None:
            y = y * _per_channel(weight.to(xf.dtype), x.dim()) + _per_channel(
                bias.to(xf.dtype), x.dim()
            )
        ctx.save_for_backward(x_hat, invstd, weight)
        ctx.count, ctx.group, ctx.mode, ctx.input_dtype = count, group, mode, x.dtype
        return y.to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        x_hat, invstd, weight = ctx.saved_tensors
        ndim = x_hat.dim()
        dims = [0] + list(range(2, ndim))
        dy = grad_out.to(x_hat.dtype)
        sum_dy = dy.sum(dims)
        sum_dy_xhat = (dy * x_hat).sum(dims)
        # Parameter gradients stay local: DDP (or the caller) sums/averages them across processes,
        # exactly as for an ordinary BatchNorm.
        grad_weight = sum_dy_xhat.to(weight.dtype) if weight is not None else None
        grad_bias = sum_dy.to(weight.dtype) if weight is not None else None

        grad_input = None
        if ctx.needs_input_grad[0]:
            if ctx.mode == "once":
                packed = _all_reduce(torch.cat([sum_dy, sum_dy_xhat]), ctx.group, "backward")
                global_dy, global_dy_xhat = packed.split(x_hat.size(1))
            else:
                # Mirrors the forward's two collectives: one through the variance, one through μ.
                global_dy_xhat = _all_reduce(sum_dy_xhat.clone(), ctx.group, "backward")
                global_dy = _all_reduce(sum_dy.clone(), ctx.group, "backward")
            scale = invstd if weight is None else invstd * weight.to(invstd.dtype)
            grad_input = _per_channel(scale, ndim) * (
                dy
                - _per_channel(global_dy / ctx.count, ndim)
                - x_hat * _per_channel(global_dy_xhat / ctx.count, ndim)
            )
            grad_input = grad_input.to(ctx.input_dtype)
        return grad_input, grad_weight, grad_bias, None, None, None, None, None, None


class SyncBatchNorm(_BatchNorm):
    """BatchNorm whose training statistics are those of the batch across all processes.

    Same parameters, buffers and ``state_dict`` keys as ``nn.BatchNorm{1,2,3}d``; accepts any
    B×C×... input. Outside distributed training (no process group, world size 1, or eval mode) it
    *is* BatchNorm: it calls ``F.batch_norm``. In training under ``torch.distributed`` it syncs with
    ``mode="once"`` (the paper's: one all-reduce forward, one backward) or ``mode="twice"`` (kept
    for the benchmark: two forward, two backward). Works with gloo on CPU and nccl on CUDA.
    ``running_var`` is updated with the unbiased variance over the *global* count, as BatchNorm
    does for a single-process batch.
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        process_group=None,
        mode: str = "once",
        device=None,
        dtype=None,
    ):
        if mode not in MODES:
            raise ValueError(f"SyncBatchNorm mode must be one of {MODES}, got {mode!r}")
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype)
        self.process_group = process_group
        self.mode = mode

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"SyncBatchNorm expects a B×C×... input, got shape {tuple(input.shape)}")

    def _world_size(self) -> int:
        if not (dist.is_available() and dist.is_initialized()):
            return 1
        return dist.get_world_size(self.process_group)

    def forward(self, input: Tensor) -> Tensor:
        if not self.training or self._world_size() == 1:
            return super().forward(input)
        self._check_input_dim(input)
        if input.size(1) != self.num_features:
            raise ValueError(
                f"SyncBatchNorm expects {self.num_features} channels, got input {tuple(input.shape)}"
            )

        # Same momentum bookkeeping as _BatchNorm.forward (momentum=None → cumulative average).
        factor = 0.0 if self.momentum is None else self.momentum
        if self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                factor = 1.0 / float(self.num_batches_tracked)
        running_mean = self.running_mean if self.track_running_stats else None
        running_var = self.running_var if self.track_running_stats else None
        return _SyncBatchNormFunction.apply(
            input, self.weight, self.bias, running_mean, running_var,
            self.eps, factor, self.process_group, self.mode,
        )

    def extra_repr(self) -> str:
        return super().extra_repr() + f", mode={self.mode!r}"


def convert_sync_batchnorm(module: nn.Module, process_group=None, mode: str = "once") -> nn.Module:
    """Return ``module`` with every BatchNorm (1d/2d/3d, torch's SyncBatchNorm, ours) replaced.

    The new layers share the old ones' parameters and buffers (no copy), so an optimizer or a
    checkpoint built on either refers to the same tensors.
    """
    converted = module
    if isinstance(module, _BatchNorm):
        converted = SyncBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine,
            module.track_running_stats, process_group, mode,
        )
        if module.affine:
            converted.weight = module.weight
            converted.bias = module.bias
        converted.running_mean = module.running_mean
        converted.running_var = module.running_var
        converted.num_batches_tracked = module.num_batches_tracked
        converted.train(module.training)
    for name, child in module.named_children():
        converted.add_module(name, convert_sync_batchnorm(child, process_group, mode))
    return converted
