"""Segmentation heads: FCNHead (also the auxiliary head), EncModule, EncHead and the stage-3 SEHead
(paper §3.1–3.2).

All normalisation layers are plain ``nn.BatchNorm1d/2d``; multi-process training swaps them for
:class:`encnet.nn.SyncBatchNorm` with :func:`encnet.nn.convert_sync_batchnorm`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from encnet.nn.encoding import Encoding

__all__ = ["FCNHead", "ContextEncoder", "EncModule", "SEHead", "EncHead", "ATTENTIONS"]

ATTENTIONS = ("release", "paper")


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class FCNHead(nn.Sequential):
    """conv3×3 in→in/4, BN, ReLU, Dropout2d(0.1), conv1×1 → num_classes (FCN head and aux head).

    Dropout2d (whole channels), as the released code; PAPER.md only says "Dropout(0.1)".
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        inter_channels: int | None = None,
        dropout: float = 0.1,
    ):
        inter_channels = inter_channels or in_channels // 4
        super().__init__(
            conv_bn_relu(in_channels, inter_channels, 3),
            nn.Dropout2d(dropout),
            nn.Conv2d(inter_channels, num_classes, 1),
        )


class ContextEncoder(nn.Sequential):
    """The Context Encoding Module's encoder: B×C×H×W → e, B×C (paper §3.1, Fig. 2).

    ``num_codes`` K > 0 (the release's EncModule): conv1×1-BN-ReLU → Encoding(C, K) → BatchNorm1d(K) on
    B×K×C → ReLU → mean over the K codewords.

    ``num_codes = 0`` is the paper's Figure 5 baseline, "global average pooling in place of the Encoding
    Layer": conv1×1-BN-ReLU → mean over H×W. The 1×1 conv-BN-ReLU is kept because it is the module's
    feature transform, not part of the Encoding Layer that K = 0 replaces, so K = 0 differs from K > 0 in
    the pooling alone. BatchNorm1d(K) and the ReLU after it are dropped: BatchNorm1d normalises each of the K
    encoders (over batch and channels), and with pooling there are no codewords to normalise; the ReLU
    would act on a mean of ReLU outputs, which is never negative, so it would be the identity. (The
    paper's CIFAR SE baseline, global pooling → FC with no normalisation in between, is built the same way.)
    """

    def __init__(self, channels: int, num_codes: int):
        if num_codes < 0:
            raise ValueError(f"num_codes must be 0 (global average pooling) or a number of codewords, got {num_codes}")
        layers = [conv_bn_relu(channels, channels, 1)]
        if num_codes > 0:
            layers += [Encoding(channels, num_codes), nn.BatchNorm1d(num_codes), nn.ReLU(inplace=True)]
        super().__init__(*layers)
        self.num_codes = num_codes

    def forward(self, x: Tensor) -> Tensor:
        encoded = super().forward(x)
        # K > 0: B×K×C, averaged over the codewords (the paper's Σ_k, up to the factor K the FC absorbs);
        # K = 0: B×C×H×W, averaged over the positions.
        return encoded.mean(dim=1) if self.num_codes > 0 else encoded.mean(dim=(2, 3))

    def extra_repr(self) -> str:
        return f"num_codes={self.num_codes}" + (" (global average pooling)" if self.num_codes == 0 else "")


class EncModule(nn.Module):
    """Context Encoding Module: returns (reweighted features B×C×H×W, SE logits B×num_classes or None).

    e = :class:`ContextEncoder` (x) (B×C; ``num_codes=0``: global average pooling in place of the Encoding
    Layer). γ = sigmoid(FC(e)) rescales the channels of x:

    - ``attention="release"`` (default, the authors' code): ReLU(x + x⊗γ).
    - ``attention="paper"`` (the paper's Fig. 2): x⊗γ.

    With ``se_loss`` an FC C→num_classes on e predicts which classes are present (SE-loss).
    """

    def __init__(
        self,
        channels: int,
        num_classes: int,
        num_codes: int = 32,
        se_loss: bool = True,
        attention: str = "release",
    ):
        super().__init__()
        if attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {ATTENTIONS}, got {attention!r}")
        self.attention = attention
        self.encoding = ContextEncoder(channels, num_codes)
        self.fc = nn.Sequential(nn.Linear(channels, channels), nn.Sigmoid())
        self.se_layer = nn.Linear(channels, num_classes) if se_loss else None

    def forward(self, x: Tensor, with_se: bool = True) -> tuple[Tensor, Tensor | None]:
        """``with_se`` False: no SE logits (None), as an evaluation that does not read them asks."""
        encoded = self.encoding(x)  # B×C
        gamma = self.fc(encoded)[:, :, None, None]
        if self.attention == "release":
            out = (x + x * gamma).relu()
        else:
            out = x * gamma
        se = self.se_layer(encoded) if self.se_layer is not None and with_se else None
        return out, se


class SEHead(nn.Module):
    """The paper's stage-3 Context Encoding Module, trained only by an SE-loss (§2.1, Fig. 3).

    The paper builds a second, light Context Encoding Module on stage 3 whose only job is an SE-loss, as a
    regulariser "similar to but much cheaper than the auxiliary loss of PSPNet" (PAPER.md §2; the release has
    no such module at any tag). The paper gives no layer list for it, so it is the suite's
    Context Encoding Module read at stage 3's width (1024 channels on ResNet-50/101): :class:`ContextEncoder`
    (its own 1×1 conv-BN-ReLU, Encoding with the same K, BatchNorm1d, ReLU, mean) → FC C→num_classes,
    returning B×num_classes "class present" logits.

    No featuremap attention: in Fig. 3 stage 3's features flow on to stage 4 unchanged, so a γ would have no
    consumer; its FC would get no gradient (and DistributedDataParallel refuses parameters without one). No
    3×3 reduction either: that is what would make it as expensive as PSPNet's auxiliary FCN head (a 3×3 conv
    1024→256 at every position), which the paper says it is much cheaper than.
    """

    def __init__(self, channels: int, num_classes: int, num_codes: int = 32):
        super().__init__()
        self.encoding = ContextEncoder(channels, num_codes)
        self.se_layer = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.se_layer(self.encoding(x))


class EncHead(nn.Module):
    """EncNet head: conv3×3 in→in/4, BN, ReLU → [lateral fusion] → EncModule → Dropout2d(0.1) → conv1×1.

    ``lateral=True`` is the authors' later release (used for PASCAL datasets), absent from the CVPR
    paper: layer2 and layer3 features (``lateral_in_channels``) each pass a 1×1 conv-BN-ReLU to in/4
    channels, are concatenated with the main branch and fused by a 3×3 conv-BN-ReLU. At output
    stride 8 all three maps have the same size.

    ``forward(c4, c2=None, c3=None, with_se=True)`` returns (logits B×num_classes×h×w, SE logits or None).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        se_loss: bool = True,
        lateral: bool = False,
        num_codes: int = 32,
        attention: str = "release",
        lateral_in_channels: tuple[int, int] | None = None,
    ):
        super().__init__()
        mid = in_channels // 4
        self.conv5 = conv_bn_relu(in_channels, mid, 3)
        self.lateral = lateral
        if lateral:
            if lateral_in_channels is None:
                raise ValueError("EncHead(lateral=True) needs lateral_in_channels=(c2, c3)")
            self.connect = nn.ModuleList(conv_bn_relu(c, mid, 1) for c in lateral_in_channels)
            self.fusion = conv_bn_relu(3 * mid, mid, 3)
        self.enc_module = EncModule(mid, num_classes, num_codes, se_loss, attention)
        # Dropout2d as in the released EncHead (conv6); PAPER.md says only "Dropout(0.1)".
        self.classifier = nn.Sequential(nn.Dropout2d(0.1), nn.Conv2d(mid, num_classes, 1))

    def forward(
        self, c4: Tensor, c2: Tensor | None = None, c3: Tensor | None = None, with_se: bool = True
    ) -> tuple[Tensor, Tensor | None]:
        feat = self.conv5(c4)
        if self.lateral:
            if c2 is None or c3 is None:
                raise ValueError("EncHead(lateral=True) needs the layer2 and layer3 features c2, c3")
            laterals = [conv(c) for conv, c in zip(self.connect, (c2, c3))]
            feat = self.fusion(torch.cat([feat, *laterals], dim=1))
        feat, se = self.enc_module(feat, with_se)
        return self.classifier(feat), se
