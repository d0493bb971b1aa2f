"""The measurements behind issue 35's diagnosis of the demo's contradicted verdicts, against independent oracles:
hand-computed window grids and pixel sets, pixel-by-pixel loops over random maps, float64 formulas."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from encnet.analysis.ms_views import (MSProtocol, ViewMetrics, combine_scales, cue_window_breakdown, mean_iou,
                                      scale_scores, view_window, window_boxes)
from encnet.analysis.se_gates import gate_statistics, record_se_gates
from encnet.analysis.size_bins import scene_shape_groups, size_bin_breakdown
from encnet.engine.inference import multi_scale_logits
from encnet.metrics import SizeBinMetric, confusion_matrix
from encnet.models.cifar import CifarResNet


class ContextModel(nn.Module):
    """Position- and window-dependent logits (zero-padded conv plus the window's mean), in float64."""

    def __init__(self, classes: int = 4):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, classes, 3, padding=1).double()
        self.context = nn.Linear(3, classes).double()

    def forward(self, x):
        return self.conv(x) + self.context(x.mean(dim=(2, 3)))[:, :, None, None]


DEMO = MSProtocol(scales=(0.75, 1.0, 1.25), base_size=112, crop=(112, 64))


def test_the_demos_windows_at_each_scale_by_hand():
    # 112 × 64 at 1.25 is 140 × 80; stride (⌊112·2/3⌋, ⌊64·2/3⌋) = (74, 42); ceil(28/74) + 1 = ceil(16/42) + 1 = 2.
    assert DEMO.stride == (74, 42)
    assert window_boxes(140, 80, DEMO.crop, DEMO.stride) == [(0, 112, 0, 64), (0, 112, 42, 80),
                                                             (74, 140, 0, 64), (74, 140, 42, 80)]
    assert window_boxes(112, 64, DEMO.crop, DEMO.stride) == [(0, 112, 0, 64)]
    assert window_boxes(84, 48, DEMO.crop, DEMO.stride) == [(0, 112, 0, 64)]  # one window, 44 % of it padding


def test_the_analysis_windows_are_the_ones_the_engine_feeds():
    """A spy network sees each window the engine predicts; a linear ramp survives the bilinear resize with
    align_corners exactly, so each window's top-left value says where it starts in the scaled image."""
    fed = []

    class Spy(nn.Module):
        def forward(self, x):
            for window in x:
                fed.append((round(window[0, 0, 0].item()), round(window[1, 0, 0].item())))
            return torch.zeros(x.shape[0], 2, *x.shape[-2:], dtype=x.dtype)

    rows = torch.arange(112, dtype=torch.float64) * (139 / 111)  # row y of the image is row 139/111·y at 140 rows
    cols = torch.arange(64, dtype=torch.float64) * (79 / 63)
    image = torch.stack([rows[:, None].expand(112, 64), cols[None, :].expand(112, 64),
                         torch.zeros(112, 64, dtype=torch.float64)])[None]
    multi_scale_logits(Spy(), image, [1.25], 112, [112, 64], flip=False, max_batch=1)
    assert fed == [(h0, w0) for h0, _, w0, _ in window_boxes(140, 80, DEMO.crop, DEMO.stride)]


def test_cue_windows_and_the_pixels_only_cueless_windows_cover_by_hand():
    # 14 × 8 image, the cue class (3) on the top 2 rows; base 14, scale 1.25 → 18 × 10; crop 14 × 8, stride (9, 5):
    # windows from rows 0 and 9, columns 0 and 5. The row-9 windows hold no cue pixel (scaled rows 0-2 at most),
    # so scaled rows 14-17 only they cover; original row y maps to scaled row round(17·y/13): rows 11-13.
    protocol = MSProtocol(scales=(1.25,), base_size=14, crop=(14, 8), pad_value=(0.0, 0.0, 0.0))
    target = torch.zeros(14, 8, dtype=torch.long)
    target[:2] = 3
    target[10:12, 2:4] = 1
    image = torch.randn(1, 3, 14, 8, dtype=torch.float64)

    class Constant(nn.Module):
        def forward(self, x):
            out = torch.zeros(x.shape[0], 4, *x.shape[-2:], dtype=x.dtype)
            out[:, 1] = 1.0
            return out

    got = cue_window_breakdown(Constant(), image, target, 1.25, protocol, cue_classes=[3], num_classes=4)
    assert got.boxes == [(0, 14, 0, 8), (0, 14, 5, 10), (9, 18, 0, 8), (9, 18, 5, 10)]
    assert got.has_cue == [True, True, False, False]
    want = np.zeros((14, 8), dtype=bool)
    want[11:] = True
    np.testing.assert_array_equal(got.cueless_only, want)
    # Every pixel predicted class 1: each window's confusion is its own image pixels' label counts in column 1.
    label = F.interpolate(target[None, None].float(), size=(18, 10), mode="nearest")[0, 0].long()
    for (h0, h1, w0, w1), confusion in zip(got.boxes, got.confusions):
        counts = torch.bincount(label[h0:min(h1, 18), w0:min(w1, 10)].flatten(), minlength=4)
        assert confusion[:, 1].tolist() == counts.tolist() and confusion.sum() == counts.sum()


def test_a_scale_predicted_whole_is_one_forward_of_the_resized_image_without_padding():
    model = ContextModel().eval()
    torch.manual_seed(1)
    image = torch.randn(1, 3, 14, 8, dtype=torch.float64)
    protocol = MSProtocol(scales=(0.75,), base_size=14, crop=(14, 8), accumulate="logits")
    scaled = F.interpolate(image, size=(11, 6), mode="bilinear", align_corners=True)  # ceil(10.5), ⌊6·11/14 + .5⌋
    logits = 0.5 * (model(scaled) + model(scaled.flip(-1)).flip(-1))
    want = F.interpolate(logits, size=(14, 8), mode="bilinear", align_corners=True)
    with torch.no_grad():
        got = scale_scores(model, image, 0.75, protocol, flip=True, window="whole")
        padded = scale_scores(model, image, 0.75, protocol, flip=True)
    torch.testing.assert_close(got, want.detach(), rtol=1e-12, atol=1e-12)
    assert not torch.allclose(padded, got)  # the padded window pools the padding: other scores


def test_each_window_kind_by_hand_on_the_demos_sizes():
    # 112 × 64 at 0.75 → 84 × 48, at 1.25 → 140 × 80 (long side ceil(112 · s), the short side rounded).
    assert [view_window(112, 64, s, DEMO, "slide") for s in DEMO.scales] == [(112, 64)] * 3
    assert [view_window(112, 64, s, DEMO, "whole") for s in DEMO.scales] == [(84, 48), (112, 64), (140, 80)]
    assert [view_window(112, 64, s, DEMO, "cover") for s in DEMO.scales] == [(112, 64), (112, 64), (140, 80)]
    # cover takes each side's larger: a scaled image taller but narrower than the crop.
    assert view_window(112, 40, 1.25, DEMO, "cover") == (140, 64)
    with pytest.raises(ValueError, match="window must be one of"):
        view_window(112, 64, 1.0, DEMO, "tiles")


def test_cover_is_the_padded_window_below_the_crop_and_the_whole_image_above_it():
    model = ContextModel().eval()
    torch.manual_seed(7)
    image = torch.randn(1, 3, 14, 8, dtype=torch.float64)
    protocol = MSProtocol(scales=(0.75, 1.25), base_size=14, crop=(14, 8))
    with torch.no_grad():
        for scale, same_as in ((0.75, "slide"), (1.25, "whole")):
            torch.testing.assert_close(scale_scores(model, image, scale, protocol, True, window="cover"),
                                       scale_scores(model, image, scale, protocol, True, window=same_as),
                                       rtol=0, atol=0)


@pytest.mark.parametrize("accumulate", ["release_exp_sum", "logits", "softmax"])
def test_scales_combined_as_the_engine_combines_them(accumulate):
    model = ContextModel().eval()
    torch.manual_seed(2)
    image = torch.randn(1, 3, 14, 8, dtype=torch.float64)
    protocol = MSProtocol(scales=(0.75, 1.0, 1.25), base_size=14, crop=(14, 8), accumulate=accumulate)
    with torch.no_grad():
        per_scale = [scale_scores(model, image, s, protocol, flip=True) for s in protocol.scales]
        engine = multi_scale_logits(model, image, protocol.scales, 14, [14, 8], flip=True, accumulate=accumulate)
    torch.testing.assert_close(combine_scales(per_scale, accumulate), engine, rtol=1e-12, atol=1e-12)


def test_view_metrics_scene_and_size_bin_iou_against_a_pixel_loop():
    gen = torch.Generator().manual_seed(3)
    num_classes, scene = 6, [1, 2, 3]
    metrics = ViewMetrics(num_classes, scene, {"small": 1, "large": 2}, {"ring": 4})
    truths, preds, regions = [], [], []
    for _ in range(3):
        truth = torch.randint(0, num_classes, (1, 7, 5), generator=gen)
        truth[0, 0, 0] = 255
        pred = torch.randint(0, num_classes, (1, 7, 5), generator=gen)
        region = torch.randint(0, 3, (1, 7, 5), generator=gen)
        metrics.update("p", F.one_hot(pred, num_classes).permute(0, 3, 1, 2).double(), truth, region)
        truths.append(truth.flatten()), preds.append(pred.flatten()), regions.append(region.flatten())
    t, p, r = torch.cat(truths).tolist(), torch.cat(preds).tolist(), torch.cat(regions).tolist()

    def iou(k, keep):
        tp = sum(1 for a, b, g in zip(t, p, r) if keep(g) and a != 255 and a == k and b == k)
        union = sum(1 for a, b, g in zip(t, p, r) if keep(g) and a != 255 and (a == k or b == k))
        return 100 * tp / union if union else math.nan

    got = metrics.compute()["p"]
    assert got["mIoU_scene"] == pytest.approx(np.nanmean([iou(k, lambda g: True) for k in scene]))
    assert got["mIoU_small"] == pytest.approx(np.nanmean([iou(k, lambda g: g == 1) for k in scene]))
    assert got["mIoU_large"] == pytest.approx(np.nanmean([iou(k, lambda g: g == 2) for k in scene]))
    assert got["IoU_ring"] == pytest.approx(iou(4, lambda g: True))
    assert got["mIoU"] == pytest.approx(np.nanmean([iou(k, lambda g: True) for k in range(num_classes)]))


def test_size_bin_metric_equals_a_pixel_loop_on_random_maps():
    gen = torch.Generator().manual_seed(4)
    target = torch.randint(0, 5, (2, 9, 7), generator=gen)
    target[0, :2] = 255
    pred = torch.randint(0, 5, (2, 9, 7), generator=gen)
    regions = torch.randint(0, 3, (2, 9, 7), generator=gen)
    metric = SizeBinMetric(5, {"small": 1, "large": 2}, classes=[1, 2, 3])
    metric.update(pred, target, regions)
    got = metric.compute()
    for name, code in (("small", 1), ("large", 2)):
        ious = []
        for k in (1, 2, 3):
            tp = union = 0
            for a, b, g in zip(target.flatten().tolist(), pred.flatten().tolist(), regions.flatten().tolist()):
                if g != code or a == 255:
                    continue
                tp += a == k and b == k
                union += a == k or b == k
            ious.append(100 * tp / union if union else math.nan)
        assert got[f"mIoU_{name}"] == pytest.approx(np.nanmean(ious))


def test_size_bin_breakdown_against_a_pixel_loop():
    names = ("background", "field_disc", "beach_disc", "field_square", "beach_square", "ring")
    shapes = scene_shape_groups(names, [1, 2, 3, 4])
    assert shapes == {1: "disc", 2: "disc", 3: "square", 4: "square"}
    gen = torch.Generator().manual_seed(5)
    truth = torch.randint(0, 6, (400,), generator=gen)
    pred = torch.randint(0, 6, (400,), generator=gen)
    got = size_bin_breakdown(confusion_matrix(truth, pred, 6), shapes)
    t, p = truth.tolist(), pred.tolist()
    scene_truth = [(a, b) for a, b in zip(t, p) if a in shapes]
    same_shape = [(a, b) for a, b in scene_truth if b in shapes and shapes[b] == shapes[a]]
    assert got["scene_accuracy"] == pytest.approx(100 * sum(a == b for a, b in same_shape) / len(same_shape))
    assert got["right_class"] == pytest.approx(100 * sum(a == b for a, b in scene_truth) / len(scene_truth))
    assert got["right_shape_wrong_scene"] == pytest.approx(
        100 * sum(a != b for a, b in same_shape) / len(scene_truth))
    assert got["other_shape"] == pytest.approx(
        100 * sum(1 for a, b in scene_truth if b in shapes and shapes[b] != shapes[a]) / len(scene_truth))
    assert got["other"] == pytest.approx(100 * sum(1 for a, b in scene_truth if b not in shapes) / len(scene_truth))

    def merged_iou(shape):
        members = {k for k, s in shapes.items() if s == shape}
        tp = sum(1 for a, b in zip(t, p) if a in members and b in members)
        union = sum(1 for a, b in zip(t, p) if a in members or b in members)
        return 100 * tp / union

    assert got["shape_IoU_disc"] == pytest.approx(merged_iou("disc"))
    assert got["shape_IoU"] == pytest.approx((merged_iou("disc") + merged_iou("square")) / 2)
    assert got["mIoU"] == pytest.approx(mean_iou(confusion_matrix(truth, pred, 6), [1, 2, 3, 4]))


def test_scene_accuracy_is_a_quarter_for_a_uniform_scene_guess_and_full_for_the_right_scene():
    names = ("background",) + tuple(f"{s}_{k}" for k in ("disc", "square") for s in ("a", "b", "c", "d"))
    shapes = scene_shape_groups(names, range(1, 9))
    confusion = torch.zeros(9, 9, dtype=torch.int64)
    for k in range(1, 9):
        for j in range(1, 9):
            if shapes[j] == shapes[k]:
                confusion[k, j] = 10  # right shape, each of the four scenes alike
    assert size_bin_breakdown(confusion, shapes)["scene_accuracy"] == pytest.approx(25.0)
    assert size_bin_breakdown(confusion, shapes)["shape_IoU"] == pytest.approx(100.0)
    diagonal = torch.diag(torch.tensor([0] + [10] * 8))
    assert size_bin_breakdown(diagonal, shapes)["scene_accuracy"] == pytest.approx(100.0)


def test_se_gates_are_the_sigmoid_of_the_squeeze_by_hand_and_their_statistics_by_numpy():
    torch.manual_seed(6)
    model = CifarResNet(widen=1, attention="se").double().eval()
    images = torch.randn(6, 3, 8, 8, dtype=torch.float64)
    seen = {}

    def keep_first_input(module, inputs, output):
        seen.setdefault("input", inputs[0])

    model.stage2[0].attention.register_forward_hook(keep_first_input)
    gates = record_se_gates(model, [images[:4], images[4:]])
    assert set(gates) == {f"stage{s}.{b}" for s in (1, 2, 3) for b in (0, 1)}
    se = model.stage2[0].attention
    squeezed = seen["input"].mean(dim=(2, 3))
    want = torch.sigmoid(torch.relu(squeezed @ se.fc1.weight.flatten(1).T + se.fc1.bias) @ se.fc2.weight.flatten(1).T
                         + se.fc2.bias)
    torch.testing.assert_close(gates["stage2.0"][:4], want)
    labels = torch.tensor([0, 1, 0, 1, 2, 2])
    g = gates["stage3.1"].numpy()
    stats = gate_statistics(gates["stage3.1"], labels, hidden=4)
    assert stats["channels"] == 64 and stats["hidden"] == 4
    assert stats["mean"] == pytest.approx(g.mean()) and stats["std"] == pytest.approx(g.std(ddof=1))
    assert stats["image_std"] == pytest.approx(g.std(0, ddof=1).mean())
    class_means = np.stack([g[labels.numpy() == k].mean(0) for k in (0, 1, 2)])
    assert stats["class_std"] == pytest.approx(class_means.std(0, ddof=1).mean())
    assert stats["channel_std"] == pytest.approx(g.mean(0).std(ddof=1))


def test_recording_gates_needs_se_units():
    with pytest.raises(ValueError, match="SqueezeExcitation"):
        record_se_gates(CifarResNet(widen=1, attention="none"), [torch.randn(1, 3, 8, 8)])
