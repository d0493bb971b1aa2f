"""The paper's CIFAR-10 networks (paper §3.5, Table 6; PAPER.md §7): a 14-layer ResNet with channel attention.

Layout: conv3×3 stem (16·w channels) → BN → ReLU → three stages of 2 basic blocks (widths 16w, 32w, 64w;
strides 1, 2, 2) → BN → ReLU → global average pool → FC: 1 + 3·2·2 + 1 = 14 weighted layers. The widen factor
w gives the paper's names: w=4 is "64d", w=8 is "128d". "<K>k" is the number of codewords.

Blocks (``block=``):
- ``"preact"`` (paper §3.5, the default): BN → ReLU → conv3×3 → BN → ReLU → conv3×3 → attention, plus the
  shortcut. The attention sits where SE-Net puts it, on the residual branch before the addition ("on top of each
  basic block").
- ``"postact"`` (the release's ``EncBasicBlock``, ``experiments/recognition/model/mynn.py``, which trained the
  3.35 % checkpoint): conv3×3 → BN → ReLU → conv3×3 → BN → attention, plus the shortcut, then ReLU.
Where the shape changes the shortcut is a 1×1 convolution with bias and no BN on the block's raw input, as in both
of the release's blocks (the paper does not say).

Attention (``attention=``):
- ``"none"``: plain ResNet.
- ``"se"``: squeeze-and-excitation with reduction 16 (paper §3.5): pool → FC C→C/16 → ReLU → FC → sigmoid.
- ``"encoding"``: the Context Encoding Module of §3.5: conv1×1 C→C/4 → BN → ReLU → Encoding(D=C/4, K) with the
  K encoders concatenated (K·D) → L2 normalisation → FC K·D→C → sigmoid → channel-wise scale. Its smoothing
  factors are not learned: :class:`EncodingDrop` draws them from U(0, 1) at every training forward and fixes them
  at 0.5 for evaluation (§3.5; the release's EncodingDrop).

Convolutions feeding a BN have no bias (the release's stem and 1×1 reduction convs have one, which the BN
cancels); convolutions use MSRA (He, fan-out) initialisation as §3.5 says.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import SqueezeExcitation

from encnet.nn.encoding import Encoding

__all__ = [
    "ATTENTIONS",
    "BLOCKS",
    "CifarResNet",
    "EncodingAttention",
    "EncodingDrop",
    "PostActBlock",
    "PreActBlock",
    "build_cifar_model",
    "count_parameters",
    "model_summary",
]

ATTENTIONS = ("none", "se", "encoding")
BLOCKS = ("preact", "postact")
SE_REDUCTION = 16
ENCODING_REDUCTION = 4
STAGE_WIDTHS = (16, 32, 64)
STAGE_STRIDES = (1, 2, 2)
BLOCKS_PER_STAGE = 2


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class EncodingDrop(Encoding):
    """Encoding whose smoothing factors are random during training (paper §3.5): s_k ~ U(0, 1) redrawn at every
    training forward, s_k = 0.5 for evaluation.

    Stored in the release's negated convention of :class:`~encnet.nn.encoding.Encoding` (``scale`` = −s, so
    U(−1, 0) and −0.5 there); :attr:`smoothing` reads the paper's positive s_k. ``scale`` is a buffer, not a
    parameter: nothing learns it, so the optimizer and the parameter count leave it out (the release kept an
    ``nn.Parameter`` whose ``.data`` it overwrote, so SGD spent momentum and weight decay on values it then threw
    away). The buffer holds the factors the last forward used.
    """

    eval_smoothing = 0.5

    def __init__(self, channels: int, num_codes: int):
        super().__init__(channels, num_codes)
        del self.scale
        self.register_buffer("scale", torch.full((num_codes,), -self.eval_smoothing))

    @property
    def smoothing(self) -> Tensor:
        """The paper's s_k of the last forward (positive)."""
        return -self.scale

    def forward(self, x: Tensor) -> Tensor:
        # Rebind the buffer to a new tensor instead of filling it in place: the previous forward's graph saved
        # the old tensor for its backward, and an in-place redraw before that backward would change it.
        if self.training:
            self.scale = -torch.rand_like(self.scale)
        else:
            self.scale = torch.full_like(self.scale, -self.eval_smoothing)
        return super().forward(x)


class EncodingAttention(nn.Module):
    """The §3.5 Context Encoding Module used as channel attention (SE with the Encoding Layer for the pooling)."""

    def __init__(self, channels: int, num_codes: int):
        super().__init__()
        if channels % ENCODING_REDUCTION:
            raise ValueError(f"EncodingAttention needs channels divisible by {ENCODING_REDUCTION}, got {channels}")
        dim = channels // ENCODING_REDUCTION
        self.reduce = nn.Sequential(nn.Conv2d(channels, dim, 1, bias=False), nn.BatchNorm2d(dim),
                                    nn.ReLU(inplace=True))
        self.encoding = EncodingDrop(dim, num_codes)
        self.fc = nn.Linear(num_codes * dim, channels)

    def forward(self, x: Tensor) -> Tensor:
        encoded = F.normalize(self.encoding(self.reduce(x)).flatten(1), dim=1)  # concatenated encoders, L2
        gamma = torch.sigmoid(self.fc(encoded))
        return x * gamma[:, :, None, None]


def _attention(kind: str, channels: int, num_codes: int) -> nn.Module:
    if kind == "none":
        return nn.Identity()
    if kind == "se":
        return SqueezeExcitation(channels, channels // SE_REDUCTION)
    return EncodingAttention(channels, num_codes)


def _shortcut(cin: int, cout: int, stride: int) -> nn.Module:
    if stride == 1 and cin == cout:
        return nn.Identity()
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=True)


class PreActBlock(nn.Module):
    """Pre-activation basic block (paper §3.5): x + attention(conv(ReLU(BN(conv(ReLU(BN(x))))))."""

    def __init__(self, cin: int, cout: int, stride: int, attention: nn.Module):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), _conv3x3(cin, cout, stride)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout), _conv3x3(cout, cout)
        self.attention, self.shortcut = attention, _shortcut(cin, cout, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        return self.attention(out) + self.shortcut(x)


class PostActBlock(nn.Module):
    """The release's post-activation block: ReLU(attention(BN(conv(ReLU(BN(conv(x)))))) + shortcut(x))."""

    def __init__(self, cin: int, cout: int, stride: int, attention: nn.Module):
        super().__init__()
        self.conv1, self.bn1 = _conv3x3(cin, cout, stride), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = _conv3x3(cout, cout), nn.BatchNorm2d(cout)
        self.attention, self.shortcut = attention, _shortcut(cin, cout, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.attention(self.bn2(self.conv2(out)))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """14-layer CIFAR ResNet; ``attention`` ∈ ATTENTIONS, ``num_codes`` = K, ``block`` ∈ BLOCKS.

    Each block's attention is ``stageN[i].attention``.
    """

    def __init__(self, widen: int = 4, attention: str = "none", num_codes: int = 32, num_classes: int = 10,
                 block: str = "preact"):
        super().__init__()
        if attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {ATTENTIONS}, got {attention!r}")
        if block not in BLOCKS:
            raise ValueError(f"block must be one of {BLOCKS} (model.cifar_block), got {block!r}")
        if widen < 1:
            raise ValueError(f"widen must be a positive integer, got {widen}")
        self.widen, self.attention, self.num_codes, self.num_classes = widen, attention, num_codes, num_classes
        self.block = block
        block_class = PreActBlock if block == "preact" else PostActBlock

        width = STAGE_WIDTHS[0] * widen
        self.stem = nn.Sequential(_conv3x3(3, width), nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        stages = []
        for base, stride in zip(STAGE_WIDTHS, STAGE_STRIDES):
            out = base * widen
            blocks = []
            for i in range(BLOCKS_PER_STAGE):
                cin, s = (width, stride) if i == 0 else (out, 1)
                blocks.append(block_class(cin, out, s, _attention(attention, out, num_codes)))
            stages.append(nn.Sequential(*blocks))
            width = out
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
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    @property
    def name(self) -> str:
        """The paper-style name that :func:`build_cifar_model` parses back into this configuration."""
        width = STAGE_WIDTHS[0] * self.widen
        if self.attention == "none":
            return f"ResNet-{width}d"
        if self.attention == "se":
            return f"SE-ResNet-{width}d"
        return f"EncNet-{self.num_codes}k{width}d"

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.stage3(self.stage2(self.stage1(self.stem(x)))))


_ENCNET_NAME = re.compile(r"EncNet-(\d+)k(\d+)d")
_RESNET_NAME = re.compile(r"(SE-ResNet|ResNet)-(\d+)d")


def build_cifar_model(name: str, num_classes: int = 10, block: str = "preact") -> CifarResNet:
    """Build from a paper-style name: "EncNet-32k128d", "EncNet-16k64d", "SE-ResNet-64d", "ResNet-64d".

    "<K>k" is the number of codewords and "<C>d" the stem width 16·w; ``block`` is ``model.cifar_block``.
    """
    encnet, resnet = _ENCNET_NAME.fullmatch(name), _RESNET_NAME.fullmatch(name)
    if encnet:
        attention, num_codes, width = "encoding", int(encnet.group(1)), int(encnet.group(2))
    elif resnet:
        attention, num_codes, width = ("se" if resnet.group(1) == "SE-ResNet" else "none"), 32, int(resnet.group(2))
    else:
        raise ValueError(
            f"unknown CIFAR model name {name!r}: expected EncNet-<K>k<C>d, SE-ResNet-<C>d or ResNet-<C>d, "
            f"e.g. 'EncNet-32k128d' or 'SE-ResNet-64d'"
        )
    if width % STAGE_WIDTHS[0] or width == 0 or num_codes == 0:
        raise ValueError(
            f"{name!r}: the width <C>d must be a positive multiple of {STAGE_WIDTHS[0]} (16 × widen) and K positive, "
            f"e.g. 'EncNet-32k128d' (widen 8)"
        )
    return CifarResNet(widen=width // STAGE_WIDTHS[0], attention=attention, num_codes=num_codes,
                       num_classes=num_classes, block=block)


def count_parameters(model: nn.Module) -> int:
    """Number of learnable scalars (``EncodingDrop``'s random smoothing factors are buffers, not counted)."""
    return sum(p.numel() for p in model.parameters())


def model_summary(model: nn.Module) -> str:
    """One line naming the model and its parameter count, e.g. "EncNet-32k128d: 12,345,678 parameters (12.35M)"."""
    n = count_parameters(model)
    name = getattr(model, "name", type(model).__name__)
    return f"{name}: {n:,} parameters ({n / 1e6:.2f}M)"
