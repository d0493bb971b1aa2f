"""The Encoding Layer (paper §3.1): a learnable residual-encoding dictionary.

Given descriptors x_i ∈ R^D (the H·W positions of a feature map), codewords c_k ∈ R^D and smoothing
factors s_k, the layer outputs e_k = Σ_i a_ik (x_i − c_k) with a_ik = softmax_k(s_k ‖x_i − c_k‖²).

Sign convention: the paper writes exp(−s_k‖r_ik‖²) with s_k > 0; the authors' released code stores the
*negated* factor (``scale`` initialised uniform(−1, 0)) and multiplies it in directly. We keep the
release's convention so that its checkpoints' ``codewords``/``scale`` tensors load unchanged.

Why matrix products: the released code needs hand-written CUDA kernels and a naive PyTorch version
materialises the B×N×K×D residual tensor (≈ 1.9 GB in float32 for one 60×60×512 map with K=32, B=8).
Expanding ‖x−c‖² = ‖x‖² − 2x·c + ‖c‖² and Σ_i a_ik (x_i − c_k) = (AᵀX)_k − (Σ_i a_ik) c_k needs only
B×N×K and B×K×D intermediates, and autograd differentiates it without custom backward code.
Half-precision inputs (autocast) are computed in float32 and give a float32 output.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["Encoding", "scaled_l2", "aggregate"]


def scaled_l2(x: Tensor, codewords: Tensor, scale: Tensor) -> Tensor:
    """s_k · ‖x_i − c_k‖² for x of shape B×N×D, codewords K×D, scale K → B×N×K."""
    x_sq = x.pow(2).sum(dim=2, keepdim=True)  # B×N×1
    c_sq = codewords.pow(2).sum(dim=1)  # K
    cross = torch.matmul(x, codewords.t())  # B×N×K
    return scale * (x_sq - 2.0 * cross + c_sq)


def aggregate(assign: Tensor, x: Tensor, codewords: Tensor) -> Tensor:
    """Σ_i a_ik (x_i − c_k) for assignments B×N×K, x B×N×D, codewords K×D → B×K×D."""
    weighted = torch.matmul(assign.transpose(1, 2), x)  # B×K×D
    return weighted - assign.sum(dim=1).unsqueeze(2) * codewords


class Encoding(nn.Module):
    """Encoding Layer: input B×D×H×W or B×D×N, output B×K×D.

    Parameters ``codewords`` (K×D) and ``scale`` (K) are named and initialised as in the authors'
    release: codewords ~ U(−1/√(K·D), 1/√(K·D)), scale ~ U(−1, 0).
    """

    def __init__(self, channels: int, num_codes: int):
        super().__init__()
        self.channels, self.num_codes = channels, num_codes
        self.codewords = nn.Parameter(torch.empty(num_codes, channels))
        self.scale = nn.Parameter(torch.empty(num_codes))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.num_codes * self.channels)
        nn.init.uniform_(self.codewords, -bound, bound)
        nn.init.uniform_(self.scale, -1.0, 0.0)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() not in (3, 4) or x.size(1) != self.channels:
            raise ValueError(
                f"Encoding expects B×{self.channels}×H×W or B×{self.channels}×N, got {tuple(x.shape)}"
            )
        # ‖x‖² − 2x·c + ‖c‖² cancels badly in half precision (‖x‖² ~ 10³ for D = 512), so under
        # autocast the layer still computes in float32.
        dtype = torch.promote_types(x.dtype, torch.float32)
        with torch.autocast(x.device.type, enabled=False):
            x = x.flatten(2).transpose(1, 2).to(dtype)  # B×N×D
            codewords, scale = self.codewords.to(dtype), self.scale.to(dtype)
            assign = torch.softmax(scaled_l2(x, codewords, scale), dim=2)
            return aggregate(assign, x, codewords)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, num_codes={self.num_codes}"
