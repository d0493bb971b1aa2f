"""Training data pipeline: images/s per data-loader worker, PIL vs torchvision decoding, and workers per GPU.

    python bench/data_pipeline.py [--quick] [--results-dir DIR] [--assumed-tflops 10 100 300]

One sample = what a training data-loader worker does per image with the paper's recipe (PAPER.md §5): read
and decode the JPEG, read the label PNG, random scale of the long side to 520·U(0.5, 2), pad to 480 (image 0,
mask ignore), random 480×480 crop, horizontal flip, float + normalise. Three paths, on generated JPEGs of
PASCAL-like sizes (≤ 500 px on the long side, quality 90, 4:2:0):

- ``pil``: PIL decodes and PIL resizes/pads/crops/flips (what the release did), then to a float tensor;
- ``pil+v2``: PIL decodes, ``transforms.v2`` on the uint8 tensor (``encnet.data.presets``);
- ``torchvision+v2``: ``torchvision.io.decode_jpeg``, then the same ``transforms.v2`` preset.

All in one process with one torch thread (a DataLoader worker's setting), in turns: each round runs every
path over the same images, so a change in the shared machine's load hits all alike; ratios are what to read.
Outputs are compared too: decoded pixels of both decoders, and the whole sample of the two v2 paths under the
same random draws. Workers per GPU = the GPU's image rate / one worker's; without a GPU the image rate is
derived from the model's counted training FLOPs and an *assumed* sustained FLOP rate (an estimate).
"""

from __future__ import annotations

import math
import os
import random
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tabulate import tabulate
from torchvision import tv_tensors
from torchvision.io import ImageReadMode, decode_jpeg, read_file

from common import base_parser, machine_info, print_targets, target, time_interleaved, write_results
from encnet.data.base import IGNORE_INDEX, read_label_png
from encnet.data.presets import SegmentationTrainPreset
from encnet.data.transforms import IMAGENET_MEAN, IMAGENET_STD

NAME = "data_pipeline"
PATHS = ("pil", "pil+v2", "torchvision+v2")
# W×H of typical VOC2010 / PASCAL-Context images: the long side is 500 px (a few are smaller).
PASCAL_SIZES = [(500, 375), (375, 500), (500, 333), (500, 400), (334, 500), (500, 281)]
FULL = {"images": 24, "rounds": 5, "base_size": 520, "crop_size": 480, "shrink": 1}
QUICK = {"images": 3, "rounds": 2, "base_size": 72, "crop_size": 64, "shrink": 8}
JPEG_QUALITY = 90
NUM_CLASSES = 59
# Training FLOPs per 480² image of the paper's models are counted (FlopCounterMode on fake tensors); the
# rate a GPU sustains on them is not known without one: these are assumptions, labelled so in the table.
DEFAULT_ASSUMED_TFLOPS = (10.0, 100.0, 300.0)
PAPER_BACKBONES = ("resnet50", "resnet101")


# --------------------------------------------------------------------------------------------- data


def generate_images(folder: Path, count: int, shrink: int = 1, seed: int = 0) -> list[tuple[Path, Path]]:
    """``count`` (JPEG, palette-PNG label) pairs: smooth colour fields with texture and a few regions."""
    rng = np.random.default_rng(seed)
    pairs = []
    for i in range(count):
        w, h = (max(8, s // shrink) for s in PASCAL_SIZES[i % len(PASCAL_SIZES)])
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        base = rng.uniform(0, 255, (3, 1, 1)) + rng.uniform(-0.4, 0.4, (3, 1, 1)) * (xx + yy)
        texture = rng.normal(0, 18, (h, w, 3))
        image = np.clip(np.moveaxis(base, 0, -1) + texture, 0, 255)
        label = np.zeros((h, w), np.uint8)
        for k in range(6):
            cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.05, 0.3) * max(w, h)
            inside = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
            label[inside] = rng.integers(1, NUM_CLASSES)
            image[inside] = np.clip(image[inside] + rng.uniform(-80, 80, 3), 0, 255)
        label[: max(1, h // 50)] = IGNORE_INDEX  # a boundary band, as VOC labels have
        jpeg, png = folder / f"{i:04d}.jpg", folder / f"{i:04d}.png"
        Image.fromarray(image.astype(np.uint8)).save(jpeg, quality=JPEG_QUALITY, subsampling=2)
        mask = Image.fromarray(label, mode="P")
        mask.putpalette([v for c in range(256) for v in (c, (c * 7) % 256, (c * 13) % 256)])
        mask.save(png)
        pairs.append((jpeg, png))
    return pairs


# ------------------------------------------------------------------------------------------- decoders


def decode_pil(path: Path) -> torch.Tensor:
    """uint8 3×H×W via PIL, as ``encnet.data.base.read_rgb`` + ``SegmentationDataset.__getitem__`` do."""
    with Image.open(path) as im:
        array = np.array(im.convert("RGB"))
    return torch.from_numpy(array).permute(2, 0, 1)


def decode_torchvision(path: Path) -> torch.Tensor:
    return decode_jpeg(read_file(str(path)), mode=ImageReadMode.RGB)


def read_mask(path: Path) -> torch.Tensor:
    return torch.from_numpy(read_label_png(path).astype(np.int64))


# ------------------------------------------------------------------------------------------ the paths


class PilRecipe:
    """The recipe with PIL operations throughout (bilinear image / nearest mask resize, as the release did)."""

    def __init__(self, base_size: int, crop_size: int):
        self.base_size, self.crop_size = base_size, crop_size
        self.mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(3, 1, 1)

    def __call__(self, image: Image.Image, mask: Image.Image):
        w, h = image.size
        long_side = int(self.base_size * random.uniform(0.5, 2.0))
        size = (long_side, int(h * long_side / w + 0.5)) if w >= h else (int(w * long_side / h + 0.5), long_side)
        image, mask = image.resize(size, Image.BILINEAR), mask.resize(size, Image.NEAREST)
        c = self.crop_size
        if min(size) < c:
            padded_w, padded_h = max(size[0], c), max(size[1], c)
            canvas, mask_canvas = Image.new("RGB", (padded_w, padded_h)), Image.new("L", (padded_w, padded_h),
                                                                                    IGNORE_INDEX)
            canvas.paste(image)
            mask_canvas.paste(mask)
            image, mask = canvas, mask_canvas
        x0, y0 = random.randint(0, image.size[0] - c), random.randint(0, image.size[1] - c)
        image, mask = image.crop((x0, y0, x0 + c, y0 + c)), mask.crop((x0, y0, x0 + c, y0 + c))
        if random.random() < 0.5:
            image, mask = image.transpose(Image.FLIP_LEFT_RIGHT), mask.transpose(Image.FLIP_LEFT_RIGHT)
        tensor = torch.from_numpy(np.array(image)).permute(2, 0, 1).float().div_(255)
        return (tensor - self.mean) / self.std, torch.from_numpy(np.array(mask).astype(np.int64))


def make_paths(base_size: int, crop_size: int) -> dict:
    """name -> ``sample(jpeg, png) -> (float image, int64 mask)``."""
    preset = SegmentationTrainPreset(base_size, crop_size)
    pil_recipe = PilRecipe(base_size, crop_size)

    def pil(jpeg, png):
        with Image.open(jpeg) as im, Image.open(png) as m:
            return pil_recipe(im.convert("RGB"), m.copy())

    def v2_with(decode):
        def sample(jpeg, png):
            return preset(tv_tensors.Image(decode(jpeg)), tv_tensors.Mask(read_mask(png)))
        return sample

    return {"pil": pil, "pil+v2": v2_with(decode_pil), "torchvision+v2": v2_with(decode_torchvision)}


def run_path(sample, pairs, seed: int = 0) -> list:
    """All images through one path, every image's random draws seeded by (seed, index)."""
    out = []
    for i, (jpeg, png) in enumerate(pairs):
        random.seed(seed * 100_003 + i)
        torch.manual_seed(seed * 100_003 + i)
        out.append(sample(jpeg, png))
    return out


def max_abs_diff(a: list, b: list) -> float:
    worst = 0.0
    for (ia, ma), (ib, mb) in zip(a, b):
        if ia.shape != ib.shape or ma.shape != mb.shape:
            return math.inf
        worst = max(worst, (ia.float() - ib.float()).abs().max().item(), (ma != mb).float().max().item())
    return worst


# ------------------------------------------------------------------------------ training step estimate


def train_flops_per_image(backbone: str, crop_size: int, num_classes: int = NUM_CLASSES) -> float:
    """Forward + backward FLOPs of one EncNet training image (aux + SE heads), counted on fake tensors."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.utils.flop_counter import FlopCounterMode

    from encnet.losses import SegmentationLoss
    from encnet.models import build_model

    with FakeTensorMode():
        model = build_model("encnet", num_classes, backbone=backbone, aux=True, se_loss=True).train()
        image = torch.randn(1, 3, crop_size, crop_size)
        labels = torch.randint(0, num_classes, (1, crop_size, crop_size))
        criterion = SegmentationLoss(num_classes, se_weight=0.2, aux_weight=0.2)
        with FlopCounterMode(display=False) as counter:
            loss, _ = criterion(model(image), labels)
            loss.backward()
    return float(counter.get_total_flops())


def workers_needed(gpu_images_per_s: float, worker_images_per_s: float) -> int:
    return max(1, math.ceil(gpu_images_per_s / worker_images_per_s))


# ------------------------------------------------------------------------------------------------ main


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--assumed-tflops", type=float, nargs="+", default=list(DEFAULT_ASSUMED_TFLOPS),
                        help="sustained training FLOP rates (TFLOP/s) a GPU is assumed to reach (estimates)")
    args = parser.parse_args()
    device = torch.device("cpu")  # data-loader workers run on the CPU whatever trains
    torch.set_num_threads(args.threads or 1)  # torch gives each DataLoader worker one thread
    sizes = QUICK if args.quick else FULL
    machine = machine_info(device)

    with tempfile.TemporaryDirectory(prefix="data-pipeline-bench-") as tmp:
        pairs = generate_images(Path(tmp), sizes["images"], sizes["shrink"])
        jpeg_kib = float(np.mean([p.stat().st_size for p, _ in pairs])) / 1024
        decode_diff = max((decode_pil(j).int() - decode_torchvision(j).int()).abs().max().item() for j, _ in pairs)
        paths = make_paths(sizes["base_size"], sizes["crop_size"])
        outputs = {name: run_path(fn, pairs) for name, fn in paths.items()}
        sample_diff = max_abs_diff(outputs["pil+v2"], outputs["torchvision+v2"])
        pil_vs_v2 = max_abs_diff(outputs["pil"], outputs["pil+v2"])
        loads = []

        def timed(fn):
            def one_pass():
                loads.append(os.getloadavg()[0] if hasattr(os, "getloadavg") else None)
                run_path(fn, pairs, seed=len(loads))
            return one_pass

        timings = time_interleaved({name: timed(fn) for name, fn in paths.items()}, device,
                                   rounds=sizes["rounds"], min_round_time=0.0, warmup=1)

    per_worker = {name: len(pairs) / t["median_s"] for name, t in timings.items()}
    current = "pil+v2"  # what encnet.data.SegmentationDataset does before this benchmark's choice
    equal_to_current = {"pil": pil_vs_v2 == 0, "pil+v2": True, "torchvision+v2": sample_diff == 0}
    fastest_equal = max((n for n in PATHS if equal_to_current[n]), key=per_worker.get)
    rows = []
    for name in PATHS:
        t = timings[name]
        rows.append({
            "path": name, "images_per_s_per_worker": per_worker[name],
            "ms_per_image": 1e3 * t["median_s"] / len(pairs),
            "ms_q25": 1e3 * t["q25_s"] / len(pairs), "ms_q75": 1e3 * t["q75_s"] / len(pairs),
            f"vs {current}": per_worker[name] / per_worker[current],
            "output_equal_to_pil+v2": equal_to_current[name], "rounds": t["repeats"],
        })
    print(tabulate(rows, headers="keys", floatfmt=".4g"))

    crop = sizes["crop_size"]
    worker_rate = per_worker[fastest_equal]
    estimate_rows = []
    for backbone in (("resnet_tiny",) if args.quick else PAPER_BACKBONES):
        flops = train_flops_per_image(backbone, crop)
        for tflops in args.assumed_tflops:
            gpu_rate = tflops * 1e12 / flops
            estimate_rows.append({
                "model": f"encnet {backbone}", "crop": crop, "train_GFLOPs_per_image": flops / 1e9,
                "assumed_sustained_TFLOP_s": tflops, "estimated_gpu_images_per_s": gpu_rate,
                "worker_images_per_s": worker_rate, "workers_per_gpu": workers_needed(gpu_rate, worker_rate),
                "kind": "ESTIMATE (assumed FLOP rate, no GPU measured)",
            })
    print()
    print(tabulate(estimate_rows, headers="keys", floatfmt=".4g"))

    targets = [
        target("decoded pixels torchvision vs PIL: max |diff|", decode_diff, 0, decode_diff == 0,
               f"{len(pairs)} generated JPEGs, quality {JPEG_QUALITY}, 4:2:0"),
        target("sample torchvision+v2 vs pil+v2: max |diff|", sample_diff, 0, sample_diff == 0,
               "same random draws; image and mask"),
    ]
    print()
    print_targets(targets)
    seen = [x for x in loads if x is not None]
    notes = [
        f"one sample = JPEG decode + label PNG read + random scale (long side {sizes['base_size']}·U(0.5, 2)) + "
        f"pad + random {crop}x{crop} crop + flip + float/normalise; {len(pairs)} generated images of "
        f"PASCAL-like sizes (mean JPEG {jpeg_kib:.0f} KiB), 1 torch thread (a DataLoader worker's)",
        f"images/s per worker = images / median pass time over {sizes['rounds']} rounds, paths in turns so "
        "load changes hit all alike; read the ratios (column 'vs pil+v2')",
        f"both decoders are libjpeg-turbo with the same settings: decoded pixels max |diff| = {decode_diff:g}; "
        f"the pil path resamples with PIL (max |diff| vs pil+v2 {pil_vs_v2:.3g} after normalisation), so it "
        "is not equal in output and not a candidate for the default",
        f"fastest path with output equal to pil+v2: {fastest_equal}; torchvision {__import__('torchvision').__version__} "
        "deprecates its image decoders (superseded by TorchCodec), one more reason to prefer PIL at a tie",
        "workers per GPU = ceil(GPU images/s / one worker's images/s), the GPU rate an ESTIMATE: counted "
        "training FLOPs per image (FlopCounterMode: convolutions and matrix products only) / an assumed "
        "sustained FLOP rate; the uncounted memory-bound ops (BatchNorm, ReLU, interpolation) make real "
        "GPUs slower, so these worker counts are upper bounds for each assumption",
        f"load average (1 min) during the rounds: {min(seen):.2f}–{max(seen):.2f}" if seen else
        "load average not available on this platform",
        "CPU timings on a shared machine are noisy (see machine.load_average_1m_at_start); a GPU host's cores differ",
    ]
    write_results(args, NAME, device, {
        "machine": machine,
        "config": {**sizes, "paths": list(PATHS), "jpeg_quality": JPEG_QUALITY, "mean_jpeg_KiB": jpeg_kib,
                   "assumed_tflops": args.assumed_tflops, "torch_threads": torch.get_num_threads()},
        "equality": {"decode_max_abs_diff": decode_diff, "sample_max_abs_diff": sample_diff,
                     "pil_vs_v2_max_abs_diff": pil_vs_v2},
        "fastest_equal_path": fastest_equal,
        "rows": rows,
        "tables": [{"title": "workers per GPU (estimate)", "rows": estimate_rows}],
        "targets": targets,
        "notes": notes,
    })


if __name__ == "__main__":
    main()
