"""``context_textures``: a generated 32×32 classification set whose classes are texture statistics.

It stands in for CIFAR-10 in the paper's classification experiment (PAPER.md §7): the Encoding Layer came
from texture recognition, and here the label is a property of the whole texture, not of any pixel or place.

Every image is ``c0 + (c1 − c0) · p(x, y) + noise``: two colours drawn at random for each image (the same
distribution for every class, so colour alone says nothing, except for class 9), a pattern ``p`` in [0, 1]
with random phase, position, frequency (period ~3–7 px) and an orientation jitter of ±12°, then Gaussian
pixel noise of random strength (σ 0.03–0.12). No single pixel decides; the classes differ in orientation,
spectrum, layout or colour statistics::

    0 horizontal_grating   stripes varying vertically
    1 vertical_grating     stripes varying horizontally
    2 diagonal_grating     stripes at 45° or 135° (either)
    3 wide_grating         any orientation, period 9–14 px instead of 3–7
    4 checkerboard         product of two perpendicular gratings
    5 rings                concentric, random centre (possibly outside the image)
    6 fine_noise           isotropic band-pass noise, high frequency
    7 coarse_noise         isotropic low-frequency blobs
    8 spots                4–9 Gaussian dots
    9 colour_noise         each channel its own noise: decorrelated colour, unlike 6/7

Every class is closed under horizontal (and vertical) flips — mirrored diagonals stay in class 2 — so the
standard flip augmentation never changes a label.

Sizes: 2,000 train / 500 test by default (balanced: image ``i`` has label ``i mod 10``), 32×32 RGB.
On disk: ``<folder>/{train,test}_images.npy`` (N×32×32×3 uint8), ``{train,test}_labels.npy`` (int64),
``meta.json``; written atomically into the cache folder. Each image has its own generator seeded by
(seed, split, index): the same parameters give byte-identical files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from encnet.data.base import DatasetNotFoundError, InMemoryClassification, missing
from encnet.data.cache import build_dir_atomically, default_cache_dir

VERSION = 1
IMAGE_SIZE = 32
CLASS_NAMES = (
    "horizontal_grating", "vertical_grating", "diagonal_grating", "wide_grating", "checkerboard",
    "rings", "fine_noise", "coarse_noise", "spots", "colour_noise",
)  # fmt: skip
SPLIT_CODES = {"train": 0, "test": 1}
GRATING_ANGLES = {0: (90.0,), 1: (0.0,), 2: (45.0, 135.0)}  # directions in which the wave may vary

LAYOUT = """\
  ROOT/{train,test}_images.npy, ROOT/{train,test}_labels.npy, ROOT/meta.json"""


def folder_name(seed: int, num_train: int, num_test: int) -> str:
    return f"context_textures-v{VERSION}-seed{seed}-{num_train}x{num_test}"


def _band_noise(rng: np.random.Generator, low: float, high: float, channels: int = 1) -> np.ndarray:
    """Isotropic noise with its spectrum restricted to radial frequencies in [low, high] cycles/px, in [0, 1]."""
    f = np.fft.fftfreq(IMAGE_SIZE)
    radius = np.hypot(f[:, None], f[None, :])
    keep = (radius >= low) & (radius <= high)
    spectrum = np.fft.fft2(rng.normal(size=(channels, IMAGE_SIZE, IMAGE_SIZE))) * keep
    noise = np.real(np.fft.ifft2(spectrum))
    noise /= noise.std(axis=(1, 2), keepdims=True) + 1e-12
    return np.clip(0.5 + 0.25 * noise, 0, 1)


def pattern(label: int, rng: np.random.Generator) -> np.ndarray:
    """The class pattern: 1×32×32 (or 3×32×32 for colour_noise) in [0, 1]."""
    y, x = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float64)
    freq = rng.uniform(0.15, 0.3)
    jitter = np.deg2rad(rng.uniform(-12, 12))
    if label in GRATING_ANGLES or label == 3:
        if label == 3:
            freq, base = 1 / rng.uniform(9, 14), rng.uniform(0, 180)
        else:
            choices = GRATING_ANGLES[label]
            base = choices[int(rng.integers(len(choices)))]
        angle = np.deg2rad(base) + jitter
        wave = np.sin(2 * np.pi * freq * (x * np.cos(angle) + y * np.sin(angle)) + rng.uniform(0, 2 * np.pi))
        return (0.5 + 0.5 * wave)[None]
    if label == 4:
        u = x * np.cos(jitter) + y * np.sin(jitter)
        v = -x * np.sin(jitter) + y * np.cos(jitter)
        phases = rng.uniform(0, 2 * np.pi, size=2)
        return (0.5 + 0.5 * np.sin(2 * np.pi * freq * u + phases[0]) * np.sin(2 * np.pi * freq * v + phases[1]))[None]
    if label == 5:
        cy, cx = rng.uniform(-IMAGE_SIZE / 2, 1.5 * IMAGE_SIZE, size=2)
        r = np.hypot(y - cy, x - cx)
        return (0.5 + 0.5 * np.sin(2 * np.pi * freq * r + rng.uniform(0, 2 * np.pi)))[None]
    if label == 6:
        return _band_noise(rng, 0.25, 0.5)
    if label == 7:
        return _band_noise(rng, 0.02, 0.09)
    if label == 8:
        spots = np.zeros((IMAGE_SIZE, IMAGE_SIZE))
        for _ in range(int(rng.integers(4, 10))):
            cy, cx = rng.uniform(0, IMAGE_SIZE, size=2)
            sigma = rng.uniform(1.2, 2.2)
            spots += np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * sigma**2))
        return np.clip(spots, 0, 1)[None]
    return _band_noise(rng, 0.1, 0.5, channels=3)


def draw_texture(label: int, rng: np.random.Generator) -> np.ndarray:
    """One 32×32×3 uint8 image of class ``label``."""
    while True:
        c0, c1 = rng.uniform(0, 1, size=(2, 3, 1, 1))
        if np.linalg.norm(c1 - c0) >= 0.35:  # too little contrast would hide the pattern
            break
    p = pattern(label, rng)
    if label == 9:
        image = p  # chromatic noise: no shared luminance pattern between the channels
    else:
        image = c0 + (c1 - c0) * p
    image = image + rng.normal(0, rng.uniform(0.03, 0.12), size=image.shape)
    return np.clip(np.rint(image.transpose(1, 2, 0) * 255), 0, 255).astype(np.uint8)


def generate_context_textures(out: Path, seed: int = 0, num_train: int = 2000, num_test: int = 500) -> None:
    out = Path(out)
    for split, count in (("train", num_train), ("test", num_test)):
        labels = np.arange(count, dtype=np.int64) % len(CLASS_NAMES)
        images = np.zeros((count, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
        for i, label in enumerate(labels):
            images[i] = draw_texture(int(label), np.random.default_rng([seed, SPLIT_CODES[split], i]))
        np.save(out / f"{split}_images.npy", images)
        np.save(out / f"{split}_labels.npy", labels)
    meta = {"dataset": "context_textures", "version": VERSION, "seed": seed, "num_train": num_train,
            "num_test": num_test, "class_names": list(CLASS_NAMES)}  # fmt: skip
    (out / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")


def ensure_context_textures(
    cache_dir: str | Path | None = None, seed: int = 0, num_train: int = 2000, num_test: int = 500
) -> Path:
    """Path of the generated dataset with these parameters, building it first if it is not in the cache."""
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return build_dir_atomically(
        cache_dir / folder_name(seed, num_train, num_test),
        lambda tmp: generate_context_textures(tmp, seed, num_train, num_test),
    )


class ContextTextures(InMemoryClassification):
    """The generated dataset in ``root``; samples are ``(tv_tensors.Image uint8 3×32×32, int label)``.

    Split ``val`` is accepted as another name for ``test``.
    """

    name = "context_textures"
    num_classes = len(CLASS_NAMES)
    class_names = CLASS_NAMES

    def __init__(self, root: str | Path, split: str = "train", transform: Callable | None = None):
        split = "test" if split == "val" else split
        if split not in SPLIT_CODES:
            raise ValueError(f"context_textures splits are 'train' and 'test' (or 'val'); got {split!r}")
        self.root, self.split, self.transform = Path(root), split, transform
        fix = f"python -m encnet.data.prepare context_textures --root {self.root.parent}"
        for name in ("meta.json", f"{split}_images.npy", f"{split}_labels.npy"):
            if not (self.root / name).is_file():
                raise missing(f"context_textures {name}", self.root / name, LAYOUT, fix)
        if json.loads((self.root / "meta.json").read_text()).get("dataset") != "context_textures":
            raise DatasetNotFoundError(f"{self.root / 'meta.json'} does not describe a context_textures folder")
        self.images = torch.from_numpy(np.load(self.root / f"{split}_images.npy")).permute(0, 3, 1, 2)
        self.labels = np.load(self.root / f"{split}_labels.npy").tolist()
