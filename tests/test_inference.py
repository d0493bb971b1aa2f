"""Multi-scale + flip sliding-window inference against a naive, pixel-by-pixel re-implementation and against
hand computations (padding colour, each accumulation mode, align_corners)."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from encnet.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from encnet.engine.inference import IMAGENET_BLACK, predict_logits, window_starts

NUM_CLASSES = 3


class WindowSensitiveModel(nn.Module):
    """Logits that depend on position (zero-padded conv) and on the whole window (its mean), like a real
    segmentation net with global context: a wrong window layout or averaging gives different numbers."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, NUM_CLASSES, 3, padding=1).double()
        self.context = nn.Linear(3, NUM_CLASSES).double()

    def forward(self, x):
        return self.conv(x) + self.context(x.mean(dim=(2, 3)))[:, :, None, None]


def naive_prediction(model, image, scales, base_size, crop, stride_ratio, flip, accumulate="logits",
                     align_corners=False, pad=IMAGENET_BLACK):
    """Explicit loops over scales, windows, views and pixels; float64 numpy accumulation."""
    _, channels, height, width = image.shape
    ch, cw = (crop, crop) if isinstance(crop, int) else crop
    sh, sw = int(ch * stride_ratio), int(cw * stride_ratio)
    fill = torch.tensor(pad, dtype=torch.float64).view(1, channels, 1, 1)
    result = np.zeros((NUM_CLASSES, height, width))
    for scale in scales:
        long_side = math.ceil(base_size * scale)
        if height > width:
            h, w = long_side, int(width * long_side / height + 0.5)
        else:
            h, w = int(height * long_side / width + 0.5), long_side
        resized = F.interpolate(image, size=(h, w), mode="bilinear", align_corners=align_corners)
        ph, pw = max(h, ch), max(w, cw)
        canvas = fill.expand(1, channels, ph, pw).clone()
        canvas[:, :, :h, :w] = resized

        def starts(length, crop, stride):
            out, s = [], 0
            while True:
                out.append(s)
                if s + crop >= length:
                    return out
                s += stride

        n_views = 2 if flip and accumulate == "softmax" else 1
        sums = np.zeros((n_views, NUM_CLASSES, ph, pw))
        counts = np.zeros((ph, pw))
        for h0 in starts(ph, ch, sh):
            for w0 in starts(pw, cw, sw):
                window = fill.expand(1, channels, ch, cw).clone()
                part = canvas[:, :, h0:h0 + ch, w0:w0 + cw]
                window[:, :, : part.shape[2], : part.shape[3]] = part
                with torch.no_grad():
                    views = [model(window)[0].numpy()]
                    if flip:
                        views.append(torch.flip(model(torch.flip(window, [3])), [3])[0].numpy())
                if accumulate == "logits":
                    views = [sum(views) / len(views)]
                elif accumulate == "release_exp_sum":
                    views = [np.exp(sum(views))]
                for v, out in enumerate(views):
                    for i in range(ch):
                        for j in range(cw):
                            if h0 + i < ph and w0 + j < pw:
                                sums[v, :, h0 + i, w0 + j] += out[:, i, j]
                                counts[h0 + i, w0 + j] += 1 / len(views)
        score = np.zeros((NUM_CLASSES, height, width))
        for v in range(n_views):
            mean = torch.from_numpy(sums[v] / counts)[None, :, :h, :w]
            back = F.interpolate(mean, size=(height, width), mode="bilinear", align_corners=align_corners)[0]
            score += (back.softmax(0) if accumulate == "softmax" else back).numpy() / n_views
        result += score
    # the suite returns the release's exp-sum scores as their logarithm
    return np.log(result) if accumulate == "release_exp_sum" else result / len(scales)


@pytest.mark.parametrize("accumulate", ["logits", "release_exp_sum", "softmax"])
def test_multi_scale_flip_equals_naive_loops(accumulate):
    model = WindowSensitiveModel().eval()
    torch.manual_seed(1)
    image = torch.randn(1, 3, 10, 7, dtype=torch.float64)
    # base 12 · {0.5 … 1.75}: long sides 6 (one padded window), 9, 12, 15, 18, 21 (several windows,
    # a short side below the crop for some of them, a partial last window)
    scales = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
    got = predict_logits(model, image, scales=scales, flip=True, base_size=12, crop_size=8, stride_ratio=2 / 3,
                         accumulate=accumulate)
    want = naive_prediction(model, image, scales, 12, 8, 2 / 3, flip=True, accumulate=accumulate,
                            align_corners=True)
    assert got.shape == (1, NUM_CLASSES, 10, 7)
    np.testing.assert_allclose(got[0].numpy(), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("accumulate", ["logits", "release_exp_sum", "softmax"])
def test_a_tall_window_on_tall_images_equals_naive_loops(accumulate):
    model = WindowSensitiveModel().eval()
    torch.manual_seed(3)
    image = torch.randn(1, 3, 14, 8, dtype=torch.float64)  # the demo's far layout in miniature (112 × 64)
    # base 14 · {0.75, 1, 1.25}: 11×6 (padded), 14×8 (exactly one window), 18×10 (2 × 2 windows)
    got = predict_logits(model, image, scales=[0.75, 1.0, 1.25], flip=True, base_size=14, crop_size=[14, 8],
                         stride_ratio=2 / 3, accumulate=accumulate)
    want = naive_prediction(model, image, [0.75, 1.0, 1.25], 14, (14, 8), 2 / 3, flip=True, accumulate=accumulate,
                            align_corners=True)
    np.testing.assert_allclose(got[0].numpy(), want, rtol=1e-12, atol=1e-12)
    # At scale 1 the tall window is the whole image: the single-scale full-image logits, to rounding.
    one = predict_logits(model, image, scales=[1.0], flip=False, base_size=14, crop_size=[14, 8],
                         accumulate="logits")
    np.testing.assert_allclose(one.numpy(), model(image).detach().numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("accumulate", ["logits", "release_exp_sum", "softmax"])
def test_landscape_without_flip_equals_naive_loops(accumulate):
    model = WindowSensitiveModel().eval()
    torch.manual_seed(2)
    image = torch.randn(1, 3, 6, 11, dtype=torch.float64)
    got = predict_logits(model, image, scales=[1.0, 2.0], flip=False, base_size=11, crop_size=7,
                         stride_ratio=2 / 3, accumulate=accumulate, align_corners=False)
    want = naive_prediction(model, image, [1.0, 2.0], 11, 7, 2 / 3, flip=False, accumulate=accumulate)
    np.testing.assert_allclose(got[0].numpy(), want, rtol=1e-12, atol=1e-12)


def test_accumulation_modes_give_different_predictions():
    """Guards the oracle tests: on this input the three modes disagree on some pixels' argmax."""
    model = WindowSensitiveModel().eval()
    torch.manual_seed(1)
    image = 3 * torch.randn(1, 3, 10, 7, dtype=torch.float64)
    preds = {mode: predict_logits(model, image, scales=[0.5, 1.0, 1.75], flip=True, base_size=12, crop_size=8,
                                  accumulate=mode).argmax(1) for mode in ("logits", "release_exp_sum", "softmax")}
    assert not torch.equal(preds["logits"], preds["release_exp_sum"])
    assert not torch.equal(preds["logits"], preds["softmax"])


def test_window_layout_differs_from_a_single_pass():
    """Guards the oracle test: the dummy model must be sensitive to how the image is windowed."""
    model = WindowSensitiveModel().eval()
    image = torch.randn(1, 3, 20, 20, dtype=torch.float64)
    windowed = predict_logits(model, image, scales=[1.0], flip=False, base_size=20, crop_size=8,
                              accumulate="logits")
    with torch.no_grad():
        whole = model(image)
    assert not torch.allclose(windowed, whole)


def test_full_image_single_scale_is_one_forward_pass():
    model = WindowSensitiveModel().eval()
    image = torch.randn(2, 3, 9, 5, dtype=torch.float64)
    with torch.no_grad():
        want = model(image)
        want_flip = (want + torch.flip(model(torch.flip(image, [3])), [3])) / 2
    assert torch.equal(predict_logits(model, image), want)
    torch.testing.assert_close(predict_logits(model, image, flip=True), want_flip, rtol=0, atol=1e-12)


def test_window_starts_cover_the_axis():
    assert window_starts(8, 8, 5) == [0]
    assert window_starts(18, 8, 5) == [0, 5, 10]
    assert window_starts(19, 8, 5) == [0, 5, 10, 15]


class TransposeSymmetric(nn.Module):
    """A conv with kernels symmetric in (row, column) plus the window's mean: transposing the input transposes the
    logits, so a [height, width] window on X must give the transpose of a [width, height] window on Xᵀ."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(4)
        self.conv = nn.Conv2d(3, NUM_CLASSES, 3, padding=1).double()
        with torch.no_grad():
            self.conv.weight.copy_(0.5 * (self.conv.weight + self.conv.weight.transpose(-1, -2)))
        self.context = nn.Linear(3, NUM_CLASSES).double()

    def forward(self, x):
        return self.conv(x) + self.context(x.mean(dim=(2, 3)))[:, :, None, None]


@pytest.mark.parametrize("accumulate", ["logits", "release_exp_sum", "softmax"])
def test_a_rectangular_window_is_the_transpose_of_its_transposed_twin(accumulate):
    """The [height, width] path against an independent computation: the same path with the axes swapped. Rows
    and columns have separate strides, window counts, remainders and padding; mixing them up breaks the symmetry."""
    model = TransposeSymmetric().eval()
    assert torch.allclose(model(torch.ones(1, 3, 5, 4, dtype=torch.float64)).transpose(-1, -2),
                          model(torch.ones(1, 3, 4, 5, dtype=torch.float64)))
    torch.manual_seed(5)
    image = torch.randn(1, 3, 14, 8, dtype=torch.float64)
    pad = (0.1, -0.2, 0.3)
    # 0.75: 11×6, padded up to the window; 1.25: 18×10, 2×2 windows with remainders; 1.5: 21×12, 3×2 windows.
    settings = dict(scales=[0.75, 1.0, 1.25, 1.5], flip=False, base_size=14, stride_ratio=2 / 3,
                    accumulate=accumulate, pad_value=pad)
    tall = predict_logits(model, image, crop_size=[14, 8], **settings)
    wide = predict_logits(model, image.transpose(-1, -2), crop_size=[8, 14], **settings)
    np.testing.assert_allclose(tall.numpy(), wide.transpose(-1, -2).numpy(), rtol=1e-12, atol=1e-12)
    # A square window given as [c, c] is the square path.
    square = predict_logits(model, image, crop_size=[9, 9], **settings)
    np.testing.assert_array_equal(square.numpy(), predict_logits(model, image, crop_size=9, **settings).numpy())


# --------------------------------------------------------------------------------------------- padding colour


class GlobalMean(nn.Module):
    """Two classes scored +mean / −mean of the whole input, like EncNet's global context in the extreme."""

    def forward(self, x):
        m = x.mean(dim=(1, 2, 3))[:, None, None, None]
        return torch.cat([m, -m], 1).expand(-1, -1, *x.shape[-2:])


def test_padding_is_black_like_training_not_the_mean_grey():
    # A 4×4 image of normalised value 0.5 at scale 1 in an 8×8 window: 48 of 64 positions are padding.
    image = torch.full((1, 3, 4, 4), 0.5, dtype=torch.float64)
    got = predict_logits(GlobalMean(), image, scales=[1.0], flip=False, base_size=4, crop_size=8,
                         accumulate="logits")
    black = [(-m / s) for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)]  # what a uint8 0 becomes after Normalize
    want = (0.5 * 16 * 3 + 48 * sum(black)) / (64 * 3)
    assert want < 0  # black padding: class 1; the old grey padding (0) gave +0.125: class 0
    torch.testing.assert_close(got[:, 0], torch.full((1, 4, 4), want, dtype=torch.float64), rtol=0, atol=1e-12)
    assert (got.argmax(1) == 1).all()
    grey = predict_logits(GlobalMean(), image, scales=[1.0], flip=False, base_size=4, crop_size=8,
                          accumulate="logits", pad_value=(0.0, 0.0, 0.0))
    torch.testing.assert_close(grey[:, 0], torch.full((1, 4, 4), 0.125, dtype=torch.float64), rtol=0, atol=1e-12)


def test_pad_value_must_match_the_channels():
    with pytest.raises(ValueError, match="pad value has 3 channels, the image 1"):
        predict_logits(GlobalMean(), torch.zeros(1, 1, 2, 2), scales=[1.0], base_size=2, crop_size=4)


# ------------------------------------------------------------------------ hand computation: 2 scales, 2 windows


class HandModel(nn.Module):
    """One channel in, two classes out: l0 = x, l1 = window mean + 0.5 · column index (flip-sensitive)."""

    def forward(self, x):
        cols = torch.arange(x.shape[-1], dtype=x.dtype).view(1, 1, 1, -1)
        return torch.cat([x, x.mean(dim=(1, 2, 3))[:, None, None, None] + 0.5 * cols.expand_as(x)], 1)


def hand_expected(accumulate: str, align_corners: bool) -> np.ndarray:
    """Image row [1, 2, 4] (1×3), crop 2, stride 1, pad −1, base 4, scales 0.75 and 0.5, with flip.

    Scale 0.75: 1×3 (no resize), canvas rows [1 2 4] / [−1 −1 −1]; window A = columns 0-1 (mean 1/4),
    window B = columns 1-2 (mean 1). Per window, class 0 is x in both views; class 1 is m + 0.5·j unflipped
    and m + 0.5·(1 − j) after the mirror is mirrored back.
    Scale 0.5: 1×2, b = [1, 4] (align_corners: the end pixels) or [1.25, 3.5] (half-pixel centres:
    0.75·1 + 0.25·2, 0.25·2 + 0.75·4); one window [b0 b1] / [−1 −1], mean m = (b0 + b1 − 2) / 4.
    Resizing 1×2 back to 1×3 gives [v0, (v0 + v1) / 2, v1] in both corner modes.
    """
    e = math.exp
    b = [1.0, 4.0] if align_corners else [1.25, 3.5]
    m = (b[0] + b[1] - 2) / 4
    # views[v][k] = the class-k row of view v (0: plain, 1: flipped back) after the window step
    a_views = [[[1, 2], [0.25, 0.75]], [[1, 2], [0.75, 0.25]]]  # window A (columns 0, 1)
    b_views = [[[2, 4], [1.0, 1.5]], [[2, 4], [1.5, 1.0]]]  # window B (columns 1, 2)
    s_views = [[b, [m, m + 0.5]], [b, [m + 0.5, m]]]  # the 0.5 scale's single window

    def combine(views):
        if accumulate == "logits":
            return [[[(views[0][k][j] + views[1][k][j]) / 2 for j in range(2)] for k in range(2)]]
        if accumulate == "release_exp_sum":
            return [[[e(views[0][k][j] + views[1][k][j]) for j in range(2)] for k in range(2)]]
        return views

    def overlap(wa, wb):  # windows at columns 0-1 and 1-2: column 1 is the mean of the two
        return [[wa[k][0], (wa[k][1] + wb[k][0]) / 2, wb[k][1]] for k in range(2)]

    def upsample(row2):
        return [[r[0], (r[0] + r[1]) / 2, r[1]] for r in row2]

    def finish(maps):
        if accumulate != "softmax":
            return np.array(maps[0])
        probs = []
        for v in maps:  # softmax over the two classes, per column; then the mean over views
            z = [e(v[0][j]) + e(v[1][j]) for j in range(3)]
            probs.append([[e(v[k][j]) / z[j] for j in range(3)] for k in range(2)])
        return (np.array(probs[0]) + np.array(probs[1])) / 2

    scale_075 = finish([overlap(wa, wb) for wa, wb in zip(combine(a_views), combine(b_views))])
    scale_05 = finish([upsample(v) for v in combine(s_views)])
    total = scale_075 + scale_05
    return (np.log(total) if accumulate == "release_exp_sum" else total / 2)[:, None, :]


@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("accumulate", ["logits", "release_exp_sum", "softmax"])
def test_each_accumulation_mode_against_a_hand_computation(accumulate, align_corners):
    image = torch.tensor([[[[1.0, 2.0, 4.0]]]], dtype=torch.float64)
    got = predict_logits(HandModel(), image, scales=[0.75, 0.5], flip=True, base_size=4, crop_size=2,
                         stride_ratio=0.5, accumulate=accumulate, align_corners=align_corners, pad_value=(-1.0,))
    np.testing.assert_allclose(got[0].numpy(), hand_expected(accumulate, align_corners), rtol=1e-13, atol=0)


def test_align_corners_changes_the_scores():
    image = torch.tensor([[[[1.0, 2.0, 4.0]]]], dtype=torch.float64)
    kwargs = dict(scales=[0.75, 0.5], flip=True, base_size=4, crop_size=2, stride_ratio=0.5, pad_value=(-1.0,))
    assert not torch.allclose(predict_logits(HandModel(), image, align_corners=True, **kwargs),
                              predict_logits(HandModel(), image, align_corners=False, **kwargs))


def test_unknown_accumulation_is_an_error_naming_the_key():
    with pytest.raises(ValueError, match="eval.accumulate"):
        predict_logits(HandModel(), torch.zeros(1, 1, 2, 2), scales=[1.0], base_size=2, crop_size=2,
                       accumulate="mean", pad_value=(0.0,))


# ------------------------------------------------------------------------------------------ the ledger's sides


@pytest.mark.parametrize("entry_id", ["ms_accumulate", "align_corners"])
def test_ledger_sides_select_the_protocol_they_describe(entry_id):
    """Each side of the ledger entry, resolved on its paper config, gives the hand-computed scores."""
    from encnet.engine.config import load_config
    from encnet.experiments.discrepancies import REPO_ROOT, load_ledger, measurements, switch_override

    ledger = load_ledger()
    entry = ledger.get(entry_id)
    base = REPO_ROOT / "configs" / "paper" / f"{entry.paper_configs[0]}.yaml"
    plain = load_config(base)
    image = torch.tensor([[[[1.0, 2.0, 4.0]]]], dtype=torch.float64)
    scores = {}
    for side in ("paper", "release"):
        e = load_config(base, [switch_override(entry, side, plain)]).eval
        scores[side] = predict_logits(HandModel(), image, scales=[0.75, 0.5], flip=True, base_size=4, crop_size=2,
                                      stride_ratio=0.5, accumulate=e.accumulate, align_corners=e.align_corners,
                                      pad_value=(-1.0,))
        np.testing.assert_allclose(scores[side][0].numpy(), hand_expected(e.accumulate, e.align_corners),
                                   rtol=1e-13, atol=0)
    assert not torch.allclose(scores["paper"], scores["release"])
    # The suite's defaults are the release's protocol.
    assert (plain.eval.accumulate, plain.eval.align_corners) == ("release_exp_sum", True)
    # Both sides are one trained run: the planner leaves protocol entries to this test.
    assert entry_id not in {m.entry for profile in ("demo", "paper") for m in measurements(ledger, profile)}


# ------------------------------------------------------------------------------------------------- batching


@pytest.mark.parametrize("flip", [True, False])
@pytest.mark.parametrize("accumulate", ["logits", "release_exp_sum", "softmax"])
def test_batched_windows_equal_the_one_window_path(accumulate, flip):
    """A real EncNet (tiny backbone, eval mode, float64): any max_batch gives the one-window path's scores."""
    from encnet.models import build_model

    torch.manual_seed(3)
    model = build_model("encnet", 4, backbone="resnet_tiny", num_codes=8).double().eval()
    image = torch.randn(2, 3, 27, 19, dtype=torch.float64)
    # base 24 · {0.5, 1, 1.5} with a 16 crop: one padded window, 2 windows, 2×3 windows; 13 in all
    kwargs = dict(scales=[0.5, 1.0, 1.5], flip=flip, base_size=24, crop_size=16, accumulate=accumulate)
    one = predict_logits(model, image, max_batch=1, **kwargs)
    for max_batch in (3, 100):
        got = predict_logits(model, image, max_batch=max_batch, **kwargs)
        torch.testing.assert_close(got, one, rtol=1e-5, atol=1e-5 * one.abs().max().item())


def test_max_batch_bounds_every_forward_and_is_checked():
    sizes = []

    class Recording(WindowSensitiveModel):
        def forward(self, x):
            sizes.append(x.shape[0])
            return super().forward(x)

    model = Recording().eval()
    image = torch.randn(1, 3, 10, 7, dtype=torch.float64)
    kwargs = dict(scales=[0.5, 1.0, 1.75], flip=True, base_size=12, crop_size=8)
    for max_batch in (1, 3, 4, 64):
        sizes.clear()
        predict_logits(model, image, max_batch=max_batch, **kwargs)
        # 10×7 at base 12, crop 8, stride 5: 6×4 one window; 12×8 2×1 windows; 21×15 4×3; ×2 for the mirrors
        assert sum(sizes) == 2 * (1 + 2 + 12) and max(sizes) <= max_batch, (max_batch, sizes)
    assert sizes == [30]  # max_batch 64: every window of every scale and its mirror in one forward
    with pytest.raises(ValueError, match="eval.max_batch"):
        predict_logits(model, image, max_batch=0, **kwargs)


def test_ms_eval_benchmark_quick_runs_and_finds_the_paths_equal(tmp_path):
    """bench/ms_eval.py --quick (tiny sizes) writes its result with every path and the equality target."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    proc = subprocess.run([sys.executable, str(repo / "bench" / "ms_eval.py"), "--quick", "--device", "cpu",
                           "--results-dir", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((tmp_path / "ms_eval-cpu.json").read_text())
    assert record["quick"] is True and [r["path"] for r in record["rows"]] == [
        "one_window", "window_and_mirror", "batched", "batched/one_window"]
    one, pair, batched = record["rows"][:3]
    assert one["forwards_per_image"] == one["window_views_per_image"] == 18  # 1 + 2 + 6 windows, × 2 mirrors
    assert pair["forwards_per_image"] == 9  # a window and its mirror per forward
    assert batched["forwards_per_image"] == 3  # 9 windows, 4 (with their mirrors) per forward of ≤ 8
    (equal,) = record["targets"]
    assert equal["pass"] and equal["measured"] <= 1e-5


def test_release_exp_sum_stays_finite_where_float32_overflows():
    """l + l_flipped = 120 > 88: the release's float32 exp overflows; the suite's log scores are finite, exact and
    float32, with nothing float64 beyond the resize's one-axis tap positions."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Confident(nn.Module):
        def forward(self, x):
            return torch.cat([torch.full_like(x[:, :1], 60.0), torch.full_like(x[:, :1], 59.0)], 1)

    class Float64Sizes(TorchDispatchMode):
        sizes: list[int] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else [out]:
                if isinstance(t, torch.Tensor) and t.dtype == torch.float64:
                    self.sizes.append(t.numel())
            return out

    image = torch.zeros(1, 3, 5, 4)  # float32, as the evaluation feeds it
    with Float64Sizes() as mode:
        got = predict_logits(Confident(), image, scales=[1.0, 2.0], flip=True, base_size=5, crop_size=6)
    assert got.dtype == torch.float32 and max(mode.sizes, default=0) <= max(image.shape[-2:])
    # log(exp(120) + exp(120)) and log(exp(118) + exp(118)): both scales see the same constant logits
    torch.testing.assert_close(got[0, :, 0, 0], torch.tensor([120 + math.log(2), 118 + math.log(2)]),
                               rtol=1e-6, atol=0)


class Ramp(nn.Module):
    """Pointwise logits of a one-channel image: 40·x, 40·x + 0.5·cos(6x) and 40·x − 1, so that over an image
    spanning x ∈ [−1, 1] each pixel's largest logit sum ranges over some 160 nats and classes 0 and 1 alternate."""

    def forward(self, x):
        return torch.cat([40 * x, 40 * x + 0.5 * torch.cos(6 * x), 40 * x - 1], 1)


def _ramp_image(dtype):
    rows, cols = torch.meshgrid(torch.linspace(-1, 1, 9, dtype=torch.float64),
                                torch.linspace(-1, 1, 13, dtype=torch.float64), indexing="ij")
    return (0.3 * rows + 0.7 * cols)[None, None].to(dtype)


@pytest.mark.parametrize("align_corners", [True, False])
def test_release_exp_sum_beyond_the_safe_range_equals_float64_loops(align_corners):
    """A scale whose pixels span more than SAFE_RANGE nats takes the per-pixel resize: in float32 it still gives
    the float64 oracle's log scores and argmax; the one-reference resize would lose the low pixels."""
    from encnet.engine import inference

    kwargs = dict(scales=[0.75, 1.0, 1.5], flip=True, base_size=13, crop_size=8, stride_ratio=2 / 3,
                  align_corners=align_corners, pad_value=(0.0,))
    want = naive_prediction(Ramp(), _ramp_image(torch.float64), kwargs["scales"], 13, 8, 2 / 3, flip=True,
                            accumulate="release_exp_sum", align_corners=align_corners, pad=(0.0,))
    got = predict_logits(Ramp(), _ramp_image(torch.float32), **kwargs)[0].double().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
    decided = np.abs(want[0] - want[1]) > 1e-3
    assert decided.sum() > 50 and (got.argmax(0) == want.argmax(0))[decided].all()
    # Guards the test: with one reference per scale (the fast resize forced) float32 loses the low pixels.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(inference, "SAFE_RANGE", math.inf)
        one_ref = predict_logits(Ramp(), _ramp_image(torch.float32), **kwargs)[0].double().numpy()
    assert not np.isfinite(one_ref).all()


@pytest.mark.parametrize("align_corners", [True, False])
def test_the_per_pixel_resize_equals_naive_loops_in_float64(align_corners, monkeypatch):
    """The per-pixel resize, forced at every scale, against the oracle to float64 rounding."""
    from encnet.engine import inference

    monkeypatch.setattr(inference, "SAFE_RANGE", -1.0)
    model = WindowSensitiveModel().eval()
    torch.manual_seed(1)
    image = torch.randn(1, 3, 10, 7, dtype=torch.float64)
    scales = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
    got = predict_logits(model, image, scales=scales, flip=True, base_size=12, crop_size=8, stride_ratio=2 / 3,
                         accumulate="release_exp_sum", align_corners=align_corners)
    want = naive_prediction(model, image, scales, 12, 8, 2 / 3, flip=True, accumulate="release_exp_sum",
                            align_corners=align_corners)
    np.testing.assert_allclose(got[0].numpy(), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("accumulate", ["logits", "release_exp_sum", "softmax"])
def test_a_model_returning_a_view_of_its_input_leaves_the_image_alone(accumulate):
    """The combination updates the window logits in place: a model whose output is its input (or an expanded
    tensor) must not see later windows overwritten."""

    class Passthrough(nn.Module):
        def forward(self, x):
            return x[:, :NUM_CLASSES]

    image = torch.randn(1, 3, 10, 7, dtype=torch.float64)
    kwargs = dict(scales=[0.5, 1.0, 1.75], flip=True, base_size=12, crop_size=8, accumulate=accumulate)
    want = naive_prediction(Passthrough(), image, kwargs["scales"], 12, 8, 2 / 3, flip=True, accumulate=accumulate,
                            align_corners=True)
    before = image.clone()
    for max_batch in (1, 64):
        got = predict_logits(Passthrough(), image, max_batch=max_batch, **kwargs)
        np.testing.assert_allclose(got[0].numpy(), want, rtol=1e-12, atol=1e-12)
    assert torch.equal(image, before)


def test_default_max_batch_follows_the_device():
    from encnet.engine.inference import DEFAULT_MAX_BATCH

    sizes = []

    class Recording(WindowSensitiveModel):
        def forward(self, x):
            sizes.append(x.shape[0])
            return super().forward(x)

    image = torch.randn(1, 3, 10, 7, dtype=torch.float64)
    predict_logits(Recording().eval(), image, scales=[0.5, 1.0, 1.75], flip=True, base_size=12, crop_size=8)
    assert DEFAULT_MAX_BATCH["cpu"] == 1 and sizes == [1] * 30  # 15 windows and their mirrors, one by one
