"""FCN and EncNet segmentation models (paper §3.2, Fig. 2) and ``build_model``.

Both return :class:`SegmentationOutput` with logits upsampled bilinearly (align_corners=False) to the
input size. The auxiliary FCN head reads layer3 (1024 channels on ResNet-50: conv3×3 1024→256). Heads
are the modules outside ``backbone``; the engine trains them with a 10× learning rate.
"""

from __future__ import annotations

from typing import Iterator, NamedTuple

import torch.nn.functional as F
from torch import Tensor, nn

from encnet.models.backbones import build_backbone
from encnet.nn.heads import EncHead, FCNHead

__all__ = ["SegmentationOutput", "FCN", "EncNet", "build_model", "MODELS"]

MODELS = ("fcn", "encnet")


class SegmentationOutput(NamedTuple):
    out: Tensor  # B×num_classes×H×W logits
    aux: Tensor | None  # auxiliary head's logits, same shape; None when aux is off
    se: Tensor | None  # B×num_classes "class present" logits; None when se_loss is off


def _upsample(logits: Tensor, size, align_corners: bool = False) -> Tensor:
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=align_corners)


class _SegmentationModel(nn.Module):
    backbone: nn.Module
    # The release upsampled the heads' logits with align_corners=True; encnet.models.published sets it for
    # the release's checkpoints. Not a parameter: it does not change the state dict.
    align_corners: bool = False

    def backbone_parameters(self) -> Iterator[nn.Parameter]:
        return self.backbone.parameters()

    def head_parameters(self) -> Iterator[nn.Parameter]:
        return (p for name, p in self.named_parameters() if not name.startswith("backbone."))


class FCN(_SegmentationModel):
    """Dilated FCN baseline: FCNHead (2048→512→num_classes) on c4, optional aux FCNHead on c3."""

    def __init__(self, backbone: nn.Module, num_classes: int, aux: bool = True):
        super().__init__()
        self.backbone = backbone
        channels = backbone.channels
        self.head = FCNHead(channels[3], num_classes)
        self.aux_head = FCNHead(channels[2], num_classes) if aux else None

    def forward(self, x: Tensor) -> SegmentationOutput:
        size = x.shape[-2:]
        _, _, c3, c4 = self.backbone(x)
        out = _upsample(self.head(c4), size, self.align_corners)
        aux = _upsample(self.aux_head(c3), size, self.align_corners) if self.aux_head is not None else None
        return SegmentationOutput(out, aux, None)


class EncNet(_SegmentationModel):
    """EncNet: EncHead on c4 (see :class:`encnet.nn.EncHead` for ``lateral``/``attention``)."""

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        aux: bool = True,
        se_loss: bool = True,
        lateral: bool = False,
        num_codes: int = 32,
        attention: str = "release",
    ):
        super().__init__()
        self.backbone = backbone
        channels = backbone.channels
        self.head = EncHead(
            channels[3], num_classes, se_loss=se_loss, lateral=lateral, num_codes=num_codes,
            attention=attention, lateral_in_channels=(channels[1], channels[2]),
        )
        self.aux_head = FCNHead(channels[2], num_classes) if aux else None

    def forward(self, x: Tensor) -> SegmentationOutput:
        size = x.shape[-2:]
        _, c2, c3, c4 = self.backbone(x)
        out, se = self.head(c4, c2, c3)
        aux = _upsample(self.aux_head(c3), size, self.align_corners) if self.aux_head is not None else None
        return SegmentationOutput(_upsample(out, size, self.align_corners), aux, se)


_ENCNET_ONLY_DEFAULTS = {"se_loss": True, "lateral": False, "num_codes": 32, "attention": "release"}


def build_model(
    name: str,
    num_classes: int,
    backbone: str = "resnet50",
    pretrained: str = "none",
    aux: bool = True,
    se_loss: bool = True,
    lateral: bool = False,
    num_codes: int = 32,
    attention: str = "release",
) -> FCN | EncNet:
    """Build ``"fcn"`` or ``"encnet"`` on a dilated backbone (see ``encnet.models.backbones``).

    ``se_loss``, ``lateral``, ``num_codes`` and ``attention`` configure EncNet's head; FCN has none
    of them, so for ``"fcn"`` they must stay at their defaults.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; expected one of {', '.join(MODELS)}")
    if name == "fcn":
        given = {"se_loss": se_loss, "lateral": lateral, "num_codes": num_codes, "attention": attention}
        # se_loss=False states the truth for FCN (no SE head), so it is accepted as well as the default.
        changed = {k: v for k, v in given.items() if v != _ENCNET_ONLY_DEFAULTS[k] and not (k == "se_loss" and v is False)}
        if changed:
            raise ValueError(
                f"model fcn has no Context Encoding head, so {changed} mean nothing for it; remove "
                f"these keys from the model config (defaults: {_ENCNET_ONLY_DEFAULTS})"
            )
    features = build_backbone(backbone, pretrained)
    if name == "fcn":
        return FCN(features, num_classes, aux=aux)
    return EncNet(features, num_classes, aux, se_loss, lateral, num_codes, attention)
