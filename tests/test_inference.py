"""Multi-scale + flip sliding-window inference against a naive, pixel-by-pixel re-implementation."""

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from encnet.inference import predict_logits, window_starts

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


def naive_prediction(model, image, scales, base_size, crop, stride_ratio, flip):
    """Explicit loops over scales, windows and pixels; float64 numpy accumulation."""
    _, channels, height, width = image.shape
    stride = int(crop * stride_ratio)
    result = np.zeros((NUM_CLASSES, height, width))
    for scale in scales:
        long_side = math.ceil(base_size * scale)
        if height > width:
            h, w = long_side, int(width * long_side / height + 0.5)
        else:
            h, w = int(height * long_side / width + 0.5), long_side
        resized = F.interpolate(image, size=(h, w), mode="bilinear", align_corners=False)
        ph, pw = max(h, crop), max(w, crop)
        canvas = torch.zeros(1, channels, ph, pw, dtype=torch.float64)
        canvas[:, :, :h, :w] = resized

        def starts(length):
            out, s = [], 0
            while True:
                out.append(s)
                if s + crop >= length:
                    return out
                s += stride

        sums = np.zeros((NUM_CLASSES, ph, pw))
        counts = np.zeros((ph, pw))
        for h0 in starts(ph):
            for w0 in starts(pw):
                window = torch.zeros(1, channels, crop, crop, dtype=torch.float64)
                part = canvas[:, :, h0:h0 + crop, w0:w0 + crop]
                window[:, :, : part.shape[2], : part.shape[3]] = part
                with torch.no_grad():
                    out = model(window)
                    if flip:
                        out = (out + torch.flip(model(torch.flip(window, [3])), [3])) / 2
                out = out[0].numpy()
                for i in range(crop):
                    for j in range(crop):
                        if h0 + i < ph and w0 + j < pw:
                            sums[:, h0 + i, w0 + j] += out[:, i, j]
                            counts[h0 + i, w0 + j] += 1
        mean = torch.from_numpy(sums / counts)[None, :, :h, :w]
        result += F.interpolate(mean, size=(height, width), mode="bilinear", align_corners=False)[0].numpy()
    return result / len(scales)


def test_multi_scale_flip_equals_naive_loops():
    model = WindowSensitiveModel().eval()
    torch.manual_seed(1)
    image = torch.randn(1, 3, 10, 7, dtype=torch.float64)
    # base 12 · {0.5 … 1.75}: long sides 6 (one padded window), 9, 12, 15, 18, 21 (several windows,
    # a short side below the crop for some of them, a partial last window)
    scales = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
    got = predict_logits(model, image, scales=scales, flip=True, base_size=12, crop_size=8, stride_ratio=2 / 3)
    want = naive_prediction(model, image, scales, 12, 8, 2 / 3, flip=True)
    assert got.shape == (1, NUM_CLASSES, 10, 7)
    np.testing.assert_allclose(got[0].numpy(), want, rtol=0, atol=1e-12)


def test_landscape_without_flip_equals_naive_loops():
    model = WindowSensitiveModel().eval()
    torch.manual_seed(2)
    image = torch.randn(1, 3, 6, 11, dtype=torch.float64)
    got = predict_logits(model, image, scales=[1.0, 2.0], flip=False, base_size=11, crop_size=7,
                         stride_ratio=2 / 3)
    want = naive_prediction(model, image, [1.0, 2.0], 11, 7, 2 / 3, flip=False)
    np.testing.assert_allclose(got[0].numpy(), want, rtol=0, atol=1e-12)


def test_window_layout_differs_from_a_single_pass():
    """Guards the oracle test: the dummy model must be sensitive to how the image is windowed."""
    model = WindowSensitiveModel().eval()
    image = torch.randn(1, 3, 20, 20, dtype=torch.float64)
    windowed = predict_logits(model, image, scales=[1.0], flip=False, base_size=20, crop_size=8)
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
