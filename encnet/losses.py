"""EncNet's training loss (paper §3.1): CE + aux_weight·CE(aux) + se_weight·BCE(SE) [+ se_weight·BCE(aux_se)].

The last term is the paper's stage-3 SE-loss (``model.aux_head: se``, §2.1 and Fig. 3). It takes the same
weight α = ``se_weight`` as the stage-4 SE-loss: the paper adds "SE-losses ... to both stage 3 and 4" and
names one weight α for the SE-loss, never a second one; ``aux_weight`` is the release's weight for its FCN
auxiliary head's cross-entropy and weighs nothing else. Both SE-losses have the same targets.

The released code applies ``nn.BCELoss`` to ``sigmoid(se)``; we use the numerically safer
``binary_cross_entropy_with_logits``, which is the same function of the logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["se_targets", "SegmentationLoss"]


def se_targets(target: Tensor, num_classes: int, ignore_index: int = 255) -> Tensor:
    """B×num_classes float tensor: 1 where class c occurs in image b's label map, else 0.

    Pixels equal to ``ignore_index`` (and any label outside 0..num_classes−1) count for no class.
    Vectorised over the batch, without a host synchronisation.
    """
    labels = target.flatten(1)
    outside = (labels < 0) | (labels >= num_classes) | (labels == ignore_index)
    # Ignored pixels are sent to an extra column that is dropped afterwards.
    labels = labels.masked_fill(outside, num_classes)
    present = torch.zeros(labels.size(0), num_classes + 1, device=target.device)
    present.scatter_(1, labels, 1.0)
    return present[:, :num_classes]


class SegmentationLoss(nn.Module):
    """``forward(output, target) -> (total, parts)``.

    ``output`` is an :class:`encnet.models.SegmentationOutput`; ``parts`` holds the unweighted
    ``"main"``, ``"aux"``, ``"se"`` and ``"aux_se"`` terms, each only when the model produced that output.
    """

    def __init__(
        self,
        num_classes: int,
        se_weight: float = 0.2,
        aux_weight: float = 0.2,
        ignore_index: int = 255,
    ):
        super().__init__()
        self.num_classes = num_classes
        self.se_weight, self.aux_weight = se_weight, aux_weight
        self.ignore_index = ignore_index

    def forward(self, output, target: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        parts = {"main": F.cross_entropy(output.out, target, ignore_index=self.ignore_index)}
        total = parts["main"]
        if output.aux is not None:
            parts["aux"] = F.cross_entropy(output.aux, target, ignore_index=self.ignore_index)
            total = total + self.aux_weight * parts["aux"]
        for key in ("se", "aux_se"):
            logits = getattr(output, key)
            if logits is not None:
                present = se_targets(target, self.num_classes, self.ignore_index).to(logits.dtype)
                parts[key] = F.binary_cross_entropy_with_logits(logits, present)
                total = total + self.se_weight * parts[key]
        return total, parts

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, se_weight={self.se_weight}, "
            f"aux_weight={self.aux_weight}, ignore_index={self.ignore_index}"
        )
