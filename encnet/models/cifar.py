"""The paper's CIFAR-10 network (paper §4.4, PAPER.md §7): a 14-layer ResNet with channel attention per block.

Layout: conv3×3 stem (16·w channels) → BN → ReLU → three stages of 2 basic blocks (widths 16w, 32w, 64w;
strides 1, 2, 2) → BN → ReLU → global average pool → FC: 1 + 3·2·2 + 1 = 14 weighted layers. The widen factor w
gives the paper's names: w=4 is "64d", w=8 is "128d".

The basic block is post-activation (torchvision's ``BasicBlock``): conv-BN-ReLU-conv-BN → attention → + shortcut
→ ReLU. The paper puts the attention "after the second BN", which only exists as a distinct point in a
post-activation block; the shortcut is a 1×1 conv + BN projection where the shape changes. The final BN-ReLU
before pooling is kept because PAPER.md §7 lists it (the authors' released network has it); after a
post-activation block it re-normalises the already rectified features rather than being strictly needed.

Attention variants (``attention=``):
- ``"none"``: plain ResNet.
- ``"se"``: squeeze-and-excitation, global average pool → FC C→C/4 → ReLU → FC C/4→C → sigmoid → scale.
  Reduction 4 (not SE's usual 16) so the bottleneck matches the Encoding branch's C/4 and the two models differ
  in how they summarise the map (pooling vs. Encoding), not in bottleneck width; with w=4 the first stage has
  only 64 channels, where r=16 would leave 4.
- ``"encoding"``: conv1×1 C→C/4, BN, ReLU, Encoding(D=C/4, K), flatten K·D, L2-normalise, FC K·D→C, sigmoid,
  channel-wise scale.
- ``"encoding_drop"``: as ``"encoding"`` with :class:`EncodingDrop`, the released best model's variant.

Differences from the authors' release, on purpose: convolutions feeding a BN have no bias (the release's stem
conv had one), so parameter counts are a few hundred lower than the release's; conv weights use He
(fan-out) initialisation as torchvision's ResNets do.
"""

from __future__ import annotations

import re
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, conv1x1, conv3x3
from torchvision.ops import SqueezeExcitation

from encnet.nn.encoding import Encoding

__all__ = [
    "ATTENTIONS",
    "CifarResNet",
    "EncodingAttention",
    "EncodingDrop",
    "build_cifar_model",
    "count_parameters",
    "model_summary",
]

ATTENTIONS = ("none", "se", "encoding", "encoding_drop")
SE_REDUCTION = 4
ENCODING_REDUCTION = 4
STAGE_WIDTHS = (16, 32, 64)
STAGE_STRIDES = (1, 2, 2)
BLOCKS_PER_STAGE = 2


class EncodingDrop(Encoding):
    """Encoding whose smoothing factors are random during training: U(−1, 0) per forward, −0.5 in eval.

    The authors' release kept ``scale`` as an ``nn.Parameter`` and overwrote its ``.data`` before every forward,
    so the optimizer computed gradients, momentum and weight decay for it that the next forward threw away.
    Here ``scale`` is a buffer instead: it is not learnable in this mode, ``parameters()`` (and so the optimizer
    and the parameter count) leave it out, and the state-dict key ``scale`` is unchanged so released checkpoints
    still load. The buffer holds the values the last forward used.

    Sign convention as in :class:`~encnet.nn.encoding.Encoding`: the stored factor is the negated one, so
    U(−1, 0) here means exp(−s‖r‖²) with s ∈ (0, 1) in the paper's notation.
    """

    eval_scale = -0.5

    def __init__(self, channels: int, num_codes: int):
        super().__init__(channels, num_codes)
        del self.scale
        self.register_buffer("scale", torch.full((num_codes,), self.eval_scale))

    def forward(self, x: Tensor) -> Tensor:
        # Rebind the buffer to a new tensor instead of filling it in place: the previous forward's graph saved
        # the old tensor for its backward, and an in-place redraw before that backward would invalidate it.
        if self.training:
            self.scale = torch.empty_like(self.scale).uniform_(-1.0, 0.0)
        else:
            self.scale = torch.full_like(self.scale, self.eval_scale)
        return super().forward(x)


class EncodingAttention(nn.Module):
    """Channel attention with the Encoding Layer in place of SE's global pooling (PAPER.md §7)."""

    def __init__(self, channels: int, num_codes: int, drop: bool = False):
        super().__init__()
        if channels % ENCODING_REDUCTION:
            raise ValueError(f"EncodingAttention needs channels divisible by {ENCODING_REDUCTION}, got {channels}")
        dim = channels // ENCODING_REDUCTION
        self.reduce = nn.Sequential(conv1x1(channels, dim), nn.BatchNorm2d(dim), nn.ReLU(inplace=True))
        self.encoding = (EncodingDrop if drop else Encoding)(dim, num_codes)
        self.fc = nn.Linear(num_codes * dim, channels)

    def forward(self, x: Tensor) -> Tensor:
        encoded = F.normalize(self.encoding(self.reduce(x)).flatten(1), dim=1)
        gamma = torch.sigmoid(self.fc(encoded))
        return x * gamma[:, :, None, None]


def _attention(kind: str, channels: int, num_codes: int) -> nn.Module:
    if kind == "none":
        return nn.Identity()
    if kind == "se":
        return SqueezeExcitation(channels, channels // SE_REDUCTION)
    return EncodingAttention(channels, num_codes, drop=kind == "encoding_drop")


class CifarResNet(nn.Module):
    """14-layer CIFAR ResNet; ``attention`` ∈ {"none", "se", "encoding", "encoding_drop"}, ``num_codes`` = K.

    Each block's attention sits at ``stageN[i].bn2.attention`` (``bn2`` is wrapped as BN → attention, which puts
    it after the second BN and before the shortcut addition of torchvision's block).
    """

    def __init__(self, widen: int = 4, attention: str = "none", num_codes: int = 32, num_classes: int = 10):
        super().__init__()
        if attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {ATTENTIONS}, got {attention!r}")
        if widen < 1:
            raise ValueError(f"widen must be a positive integer, got {widen}")
        self.widen, self.attention, self.num_codes, self.num_classes = widen, attention, num_codes, num_classes

        width = STAGE_WIDTHS[0] * widen
        self.stem = nn.Sequential(conv3x3(3, width), nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        stages = []
        for base, stride in zip(STAGE_WIDTHS, STAGE_STRIDES):
            stages.append(self._stage(width, base * widen, stride))
            width = base * widen
        self.stage1, self.stage2, self.stage3 = stages
        self.head = nn.Sequential(
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(width, num_classes),
        )
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def _stage(self, in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
        blocks = []
        for i in range(BLOCKS_PER_STAGE):
            cin, s = (in_channels, stride) if i == 0 else (out_channels, 1)
            shortcut = None
            if s != 1 or cin != out_channels:
                shortcut = nn.Sequential(conv1x1(cin, out_channels, s), nn.BatchNorm2d(out_channels))
            block = BasicBlock(cin, out_channels, s, shortcut)
            block.bn2 = nn.Sequential(
                OrderedDict(bn=block.bn2, attention=_attention(self.attention, out_channels, self.num_codes))
            )
            blocks.append(block)
        return nn.Sequential(*blocks)

    @property
    def name(self) -> str:
        """The paper-style name that :func:`build_cifar_model` parses back into this configuration."""
        width = STAGE_WIDTHS[0] * self.widen
        if self.attention == "none":
            return f"ResNet-{width}d"
        if self.attention == "se":
            return f"SE-ResNet-{width}d"
        prefix = "EncNetDrop" if self.attention == "encoding_drop" else "EncNet"
        return f"{prefix}-{self.num_codes}k{width}d"

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.stage3(self.stage2(self.stage1(self.stem(x)))))


_ENCNET_NAME = re.compile(r"(EncNet|EncNetDrop)-(\d+)k(\d+)d")
_RESNET_NAME = re.compile(r"(SE-ResNet|ResNet)-(\d+)d")
_NAME_TO_ATTENTION = {"EncNet": "encoding", "EncNetDrop": "encoding_drop", "SE-ResNet": "se", "ResNet": "none"}


def build_cifar_model(name: str, num_classes: int = 10) -> CifarResNet:
    """Build from a paper-style name: "EncNet-32k128d", "EncNetDrop-32k128d", "SE-ResNet-64d", "ResNet-64d".

    "<K>k" is the number of codewords and "<C>d" the stem width 16·w.
    """
    encnet, resnet = _ENCNET_NAME.fullmatch(name), _RESNET_NAME.fullmatch(name)
    if encnet:
        kind, num_codes, width = encnet.group(1), int(encnet.group(2)), int(encnet.group(3))
    elif resnet:
        kind, num_codes, width = resnet.group(1), 32, int(resnet.group(2))
    else:
        raise ValueError(
            f"unknown CIFAR model name {name!r}: expected EncNet-<K>k<C>d, EncNetDrop-<K>k<C>d, SE-ResNet-<C>d or "
            f"ResNet-<C>d, e.g. 'EncNet-32k128d' or 'SE-ResNet-64d'"
        )
    if width % STAGE_WIDTHS[0] or width == 0 or num_codes == 0:
        raise ValueError(
            f"{name!r}: the width <C>d must be a positive multiple of {STAGE_WIDTHS[0]} (16 × widen) and K positive, "
            f"e.g. 'EncNet-32k128d' (widen 8)"
        )
    return CifarResNet(
        widen=width // STAGE_WIDTHS[0], attention=_NAME_TO_ATTENTION[kind], num_codes=num_codes, num_classes=num_classes
    )


def count_parameters(model: nn.Module) -> int:
    """Number of learnable scalars (``EncodingDrop``'s random smoothing factors are buffers, not counted)."""
    return sum(p.numel() for p in model.parameters())


def model_summary(model: nn.Module) -> str:
    """One line naming the model and its parameter count, e.g. "EncNet-32k128d: 12,345,678 parameters (12.35M)"."""
    n = count_parameters(model)
    name = getattr(model, "name", type(model).__name__)
    return f"{name}: {n:,} parameters ({n / 1e6:.2f}M)"
