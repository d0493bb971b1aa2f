"""SE targets on a hand-written label map; SegmentationLoss against the formula written out by hand."""

import math

import pytest
import torch

from encnet.losses import SegmentationLoss, se_targets
from encnet.models import SegmentationOutput

IGNORE = 255


def test_se_targets_on_tiny_label_map():
    target = torch.tensor(
        [
            [[0, 0, 255], [2, 255, 255]],  # classes 0 and 2
            [[255, 255, 255], [255, 255, 255]],  # everything ignored: no class present
            [[3, 3, 1], [1, 1, 3]],  # classes 1 and 3
        ]
    )
    expected = torch.tensor([[1, 0, 1, 0], [0, 0, 0, 0], [0, 1, 0, 1]], dtype=torch.float32)
    got = se_targets(target, num_classes=4, ignore_index=IGNORE)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_se_targets_other_ignore_index():
    target = torch.tensor([[[0, -1], [1, 1]]])
    torch.testing.assert_close(se_targets(target, 3, ignore_index=1), torch.tensor([[1.0, 0.0, 0.0]]))


def hand_cross_entropy(logits, target):
    """Mean over labelled pixels of −log softmax(logits)[label], one pixel at a time."""
    terms = []
    for b in range(target.size(0)):
        for i in range(target.size(1)):
            for j in range(target.size(2)):
                label = int(target[b, i, j])
                if label == IGNORE:
                    continue
                scores = logits[b, :, i, j]
                terms.append(-(scores[label].item() - math.log(sum(math.exp(s) for s in scores.tolist()))))
    return sum(terms) / len(terms)


def hand_bce(logits, present):
    terms = []
    for z, y in zip(logits.flatten().tolist(), present.flatten().tolist()):
        p = 1 / (1 + math.exp(-z))
        terms.append(-(y * math.log(p) + (1 - y) * math.log(1 - p)))
    return sum(terms) / len(terms)


@pytest.fixture
def tiny_case():
    torch.manual_seed(0)
    target = torch.tensor([[[0, 1, 255], [2, 2, 1]], [[255, 0, 0], [0, 255, 0]]])
    out = torch.randn(2, 3, 2, 3, dtype=torch.float64)
    aux = torch.randn(2, 3, 2, 3, dtype=torch.float64)
    se = torch.randn(2, 3, dtype=torch.float64)
    return target, out, aux, se


def test_loss_matches_hand_formula(tiny_case):
    target, out, aux, se = tiny_case
    present = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])  # read off the label map above
    main, aux_term = hand_cross_entropy(out, target), hand_cross_entropy(aux, target)
    se_term = hand_bce(se, present)

    loss = SegmentationLoss(3, se_weight=0.3, aux_weight=0.4)
    total, parts = loss(SegmentationOutput(out, aux, se), target)
    assert set(parts) == {"main", "aux", "se"}
    assert parts["main"].item() == pytest.approx(main, rel=1e-12)
    assert parts["aux"].item() == pytest.approx(aux_term, rel=1e-12)
    assert parts["se"].item() == pytest.approx(se_term, rel=1e-12)
    assert total.item() == pytest.approx(main + 0.4 * aux_term + 0.3 * se_term, rel=1e-12)


def test_components_only_when_used(tiny_case):
    target, out, aux, se = tiny_case
    loss = SegmentationLoss(3)  # defaults 0.2 / 0.2
    total, parts = loss(SegmentationOutput(out, None, None), target)
    assert set(parts) == {"main"}
    assert total.item() == pytest.approx(hand_cross_entropy(out, target), rel=1e-12)
    total, parts = loss(SegmentationOutput(out, None, se), target)
    assert set(parts) == {"main", "se"}
    assert total.item() == pytest.approx(parts["main"].item() + 0.2 * parts["se"].item(), rel=1e-12)
    total, parts = loss(SegmentationOutput(out, aux, None), target)
    assert set(parts) == {"main", "aux"}
    assert total.item() == pytest.approx(parts["main"].item() + 0.2 * parts["aux"].item(), rel=1e-12)


def test_loss_backpropagates(tiny_case):
    target, out, aux, se = (t.requires_grad_() if t.is_floating_point() else t for t in tiny_case)
    total, _ = SegmentationLoss(3)(SegmentationOutput(out, aux, se), target)
    total.backward()
    assert out.grad.abs().sum() > 0 and aux.grad.abs().sum() > 0 and se.grad.abs().sum() > 0
    assert (out.grad[0, :, 0, 2] == 0).all()  # ignored pixel: no gradient


def test_stage3_se_loss_weighs_se_weight_on_the_same_targets(tiny_case):
    """The paper's EncNet (model.aux_head: se): CE + α·BCE(se) + α·BCE(aux_se), no aux CE, aux_weight unused."""
    target, out, _, se = tiny_case
    aux_se = torch.randn(2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    present = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])  # read off the label map, as above
    main, se_term, stage3 = hand_cross_entropy(out, target), hand_bce(se, present), hand_bce(aux_se, present)

    total, parts = SegmentationLoss(3, se_weight=0.3, aux_weight=0.4)(SegmentationOutput(out, None, se, aux_se),
                                                                         target)
    assert set(parts) == {"main", "se", "aux_se"}
    assert parts["aux_se"].item() == pytest.approx(stage3, rel=1e-12)
    assert total.item() == pytest.approx(main + 0.3 * se_term + 0.3 * stage3, rel=1e-12)
    # Without the stage-4 SE head the stage-3 term stands alone, still at α.
    total, parts = SegmentationLoss(3, se_weight=0.3)(SegmentationOutput(out, None, None, aux_se), target)
    assert set(parts) == {"main", "aux_se"}
    assert total.item() == pytest.approx(main + 0.3 * stage3, rel=1e-12)
