"""FCN and EncNet segmentation models (paper §3.2, Fig. 2) and ``build_model``.

Both return :class:`SegmentationOutput` with logits upsampled bilinearly (align_corners=False) to the
input size. The auxiliary head reads layer3 (1024 channels on ResNet-50): ``aux_head="fcn"`` (the release)
is an FCN head (conv3×3 1024→256 → per-pixel logits, a CE loss); ``aux_head="se"`` (EncNet only: the
paper's §2.1 and Fig. 3) is a second Context Encoding Module whose only output is SE logits
(:class:`encnet.nn.SEHead`). Heads are the modules outside ``backbone``; the engine trains them with a 10×
learning rate.

Only training needs the outputs beside ``out`` (the losses read them): in eval mode a forward computes the main
head alone and leaves ``aux``, ``se`` and ``aux_se`` None, unless the caller asks with ``all_heads=True`` (the SE
head's presence calls for the notebooks do). The FCN aux head alone is some 6.5 % of an R50 forward.
"""

from __future__ import annotations

from typing import Iterator, NamedTuple

import torch.nn.functional as F
from torch import Tensor, nn

from encnet.models.backbones import build_backbone
from encnet.nn.heads import EncHead, FCNHead, SEHead

__all__ = ["SegmentationOutput", "FCN", "EncNet", "build_model", "MODELS", "AUX_HEADS"]

MODELS = ("fcn", "encnet")
AUX_HEADS = ("fcn", "se")


class SegmentationOutput(NamedTuple):
    out: Tensor  # B×num_classes×H×W logits
    aux: Tensor | None  # auxiliary FCN head's logits, same shape; None unless aux with aux_head="fcn"
    se: Tensor | None  # B×num_classes "class present" logits; None when se_loss is off
    # B×num_classes "class present" logits of the paper's stage-3 module; None unless aux with aux_head="se".
    # Last and defaulted, so three-field constructions and ``out, aux, se = output[:3]`` keep working.
    aux_se: Tensor | None = None


def _upsample(logits: Tensor, size, align_corners: bool = False) -> Tensor:
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=align_corners)


def _all_heads(model: nn.Module, asked: bool | None) -> bool:
    return model.training if asked is None else asked


class _SegmentationModel(nn.Module):
    backbone: nn.Module
    # The release upsampled the heads' logits with align_corners=True; encnet.engine.published_weights sets it for
    # the release's checkpoints. Not a parameter: it does not change the state dict.
    align_corners: bool = False

    def backbone_parameters(self) -> Iterator[nn.Parameter]:
        return self.backbone.parameters()

    def head_parameters(self) -> Iterator[nn.Parameter]:
        return (p for name, p in self.named_parameters() if not name.startswith("backbone."))


class FCN(_SegmentationModel):
    """Dilated FCN baseline: FCNHead (2048→512→num_classes) on c4, optional aux FCNHead on c3.

    The paper's baseline ("dilated ResNet FCN") and the model zoo's FCN have no aux head (ledger: fcn_aux).
    """

    def __init__(self, backbone: nn.Module, num_classes: int, aux: bool = True):
        super().__init__()
        self.backbone = backbone
        channels = backbone.channels
        self.head = FCNHead(channels[3], num_classes)
        self.aux_head = FCNHead(channels[2], num_classes) if aux else None

    def forward(self, x: Tensor, all_heads: bool | None = None) -> SegmentationOutput:
        """``all_heads`` None: every head in training, the main head alone in eval mode."""
        size = x.shape[-2:]
        _, _, c3, c4 = self.backbone(x)
        out = _upsample(self.head(c4), size, self.align_corners)
        aux = None
        if self.aux_head is not None and _all_heads(self, all_heads):
            aux = _upsample(self.aux_head(c3), size, self.align_corners)
        return SegmentationOutput(out, aux, None)


class EncNet(_SegmentationModel):
    """EncNet: EncHead on c4 (see :class:`encnet.nn.EncHead` for ``lateral``/``attention``) and, with ``aux``,
    an auxiliary head on c3: ``aux_head="fcn"`` the release's FCNHead (output ``aux``), ``aux_head="se"`` the
    paper's stage-3 Context Encoding Module trained by an SE-loss (output ``aux_se``; needs ``se_loss``, since
    the paper's "w/o SE-loss" EncNet has no SE-loss at either stage). ``num_codes`` = 0 replaces the Encoding
    Layer by global average pooling in both modules (the paper's Figure 5 baseline).
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        aux: bool = True,
        se_loss: bool = True,
        lateral: bool = False,
        num_codes: int = 32,
        attention: str = "release",
        aux_head: str = "fcn",
    ):
        super().__init__()
        if aux_head not in AUX_HEADS:
            raise ValueError(f"aux_head must be one of {AUX_HEADS}, got {aux_head!r}")
        if aux and aux_head == "se" and not se_loss:
            raise ValueError("aux_head='se' is the paper's stage-3 SE-loss module, which the paper's EncNet without "
                             "SE-loss does not have; use se_loss=True, or aux=False")
        self.backbone = backbone
        channels = backbone.channels
        self.head = EncHead(
            channels[3], num_classes, se_loss=se_loss, lateral=lateral, num_codes=num_codes,
            attention=attention, lateral_in_channels=(channels[1], channels[2]),
        )
        self.aux_head = None
        if aux:
            self.aux_head = (FCNHead(channels[2], num_classes) if aux_head == "fcn"
                             else SEHead(channels[2], num_classes, num_codes))

    def forward(self, x: Tensor, all_heads: bool | None = None) -> SegmentationOutput:
        """``all_heads`` None: every head in training, the main head alone in eval mode (``se`` too is then None)."""
        size = x.shape[-2:]
        _, c2, c3, c4 = self.backbone(x)
        every = _all_heads(self, all_heads)
        out, se = self.head(c4, c2, c3, with_se=every)
        aux = aux_se = None
        if every and isinstance(self.aux_head, SEHead):
            aux_se = self.aux_head(c3)
        elif every and self.aux_head is not None:
            aux = _upsample(self.aux_head(c3), size, self.align_corners)
        return SegmentationOutput(_upsample(out, size, self.align_corners), aux, se, aux_se)


_ENCNET_ONLY_DEFAULTS = {"se_loss": True, "lateral": False, "num_codes": 32, "attention": "release",
                         "aux_head": "fcn"}


def build_model(
    name: str,
    num_classes: int,
    backbone: str = "resnet50",
    pretrained: str = "none",
    pretrained_dir: str = "",
    aux: bool = True,
    se_loss: bool = True,
    lateral: bool = False,
    num_codes: int = 32,
    attention: str = "release",
    aux_head: str = "fcn",
) -> FCN | EncNet:
    """Build ``"fcn"`` or ``"encnet"`` on a dilated backbone (see ``encnet.models.backbones``).

    ``se_loss``, ``lateral``, ``num_codes``, ``attention`` and ``aux_head`` configure EncNet's Context Encoding
    modules; FCN has none, so for ``"fcn"`` they must stay at their defaults (its aux head is always an FCN head).
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; expected one of {', '.join(MODELS)}")
    if name == "fcn":
        given = {"se_loss": se_loss, "lateral": lateral, "num_codes": num_codes, "attention": attention,
                 "aux_head": aux_head}
        # se_loss=False states the truth for FCN (no SE head), so it is accepted as well as the default.
        changed = {k: v for k, v in given.items()
                   if v != _ENCNET_ONLY_DEFAULTS[k] and not (k == "se_loss" and v is False)}
        if changed:
            raise ValueError(
                f"model fcn has no Context Encoding head, so {changed} mean nothing for it; remove "
                f"these keys from the model config (defaults: {_ENCNET_ONLY_DEFAULTS})"
            )
    features = build_backbone(backbone, pretrained, pretrained_dir)
    if name == "fcn":
        return FCN(features, num_classes, aux=aux)
    return EncNet(features, num_classes, aux, se_loss, lateral, num_codes, attention, aux_head)
