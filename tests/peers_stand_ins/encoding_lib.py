"""Stands in for ``encoding.lib`` of the authors' torch-encoding 0.5.0, which JIT-compiles C++/CUDA on import.

Only the Encoding Layer's four kernels are provided, each the formula its kernel computes (``lib/cpu/
encoding_cpu.cpp``, ``lib/gpu/encoding_kernel.cu`` at v0.5.0), written out with explicit gradients: the release's
own ``autograd.Function`` classes (``encoding/functions/encoding.py``) call them, so its backward wiring is what
the gradient tests exercise, not autograd through a formula.

One deliberate choice: the release's CPU ``ScaledL2_Backward_CPU`` returns the codewords' gradient with the
wrong sign (``GC = tmp.sum(0).sum(0)`` where d/dc_k s_k‖x_i − c_k‖² = −2 s_k (x_i − c_k)); the GPU kernel, on
which every published model was trained, negates it (``GC[k][d] = - reduceBN(...)``). The stand-in follows the
GPU kernel, on both devices.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import Tensor


def _residuals(X: Tensor, C: Tensor) -> Tensor:
    """B×N×K×D residuals x_i − c_k."""
    return X.unsqueeze(2) - C.unsqueeze(0).unsqueeze(0)


def aggregate_forward(A: Tensor, X: Tensor, C: Tensor) -> Tensor:
    # e_k = Σ_i a_ik (x_i − c_k): B×K×D
    return (A.unsqueeze(3) * _residuals(X, C)).sum(1)


def aggregate_backward(GE: Tensor, A: Tensor, X: Tensor, C: Tensor) -> list[Tensor]:
    grad_a = (GE.unsqueeze(1) * _residuals(X, C)).sum(3)
    grad_x = torch.bmm(A, GE)
    grad_c = (-GE * A.sum(1).unsqueeze(2)).sum(0)
    return [grad_a, grad_x, grad_c]


def scaled_l2_forward(X: Tensor, C: Tensor, S: Tensor) -> Tensor:
    # sl_ik = s_k ‖x_i − c_k‖²: B×N×K
    return S.view(1, 1, -1) * _residuals(X, C).pow(2).sum(3)


def scaled_l2_backward(GSL: Tensor, X: Tensor, C: Tensor, S: Tensor, SL: Tensor) -> list[Tensor]:
    weighted = (2 * GSL * S.view(1, 1, -1)).unsqueeze(3) * _residuals(X, C)
    grad_x = weighted.sum(2)
    grad_c = -weighted.sum(0).sum(0)  # the GPU kernel's sign (see the module docstring)
    grad_s = (GSL * (SL / S.view(1, 1, -1))).sum(0).sum(0)
    return [grad_x, grad_c, grad_s]


_KERNELS = dict(aggregate_forward=aggregate_forward, aggregate_backward=aggregate_backward,
                scaled_l2_forward=scaled_l2_forward, scaled_l2_backward=scaled_l2_backward)
cpu = SimpleNamespace(**_KERNELS)
gpu = SimpleNamespace(**_KERNELS)
