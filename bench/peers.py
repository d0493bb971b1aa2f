"""The suite against the peers' released code, side by side in one run: time and memory ratios suite / peer.

    python bench/peers.py [--quick | --smoke] [--parts PART ...] [--rounds R] [--shuffle-seed S]
                          [--baseline-inference REV] [--results-dir DIR] [--device auto|cpu|cuda] [--threads N]

The peers are the authors' torch-encoding 0.5.0 and mmsegmentation 1.2.2 as ``bash scripts/install_peers.sh``
puts them into ``.peers/site``, driven as ``tests/test_peers.py`` drives them: BatchNorm for SyncBN, the
authors' compiled kernels replaced by ``tests/peers_stand_ins/encoding_lib.py`` (their formulas in plain torch:
not their CUDA kernels' speed, hence the rows "same Encoding", where each peer's Encoding layers are the suite's,
which isolate everything else), mmcv's compiled ops by ``tests/peers_stand_ins/mmcv_ext.py``. Without
``.peers/`` the benchmark says so and exits 0.

Parts (the ratio is suite / peer: below 1 the suite takes less time or memory):
- ``train_step``: one SGD step (forward, the three losses, backward, update) of EncNet on a dilated ResNet-50
  with the FCN aux head and the SE-loss, 150 classes, float32; against the authors the suite's model in their
  layout (deep stem 64-64-128, ``resnet50s``), against mmseg in its (ResNetV1c, ``resnet50v1c``).
- ``peak_memory``: what one such step adds to the memory in use (CPU: peak RSS over the step, each model in a
  fresh process; CUDA: ``max_memory_allocated``).
- ``eval_forward``: one image's single-scale logits in eval mode, as each evaluates: the suite's main head
  (its eval forwards skip the heads they do not score), the authors' ``BaseNet.evaluate`` (every head),
  mmseg's ``encode_decode`` (decode head); plus the suite with every head, as before it skipped them.
- ``ms_release``: the ``release`` protocol (``encnet.engine.inference``) against the authors' ``MultiEvalModule``,
  6 scales + flip, one network on both sides: a cheap stand-in (a 3×3 conv and a global-context term, so the
  protocol's own cost shows) and, but in ``--smoke``, the suite's EncNet R50.
- ``ms_mmseg``: the ``mmseg`` protocol (``encnet.engine.protocols.mmseg_logits``) against mmseg's own
  ``predict`` per view and ``SegTTAModel.merge_preds``, the same stand-in network on both sides.
- ``transform``: the training transform of one image, decoded (uint8 in, the network's input out), one thread:
  the suite's release recipe against the authors' ``_sync_transform`` (both blur half the crops), the suite's
  default against mmseg's ADE20K pipeline (which adds photometric distortion, and normalises later, on the
  device).

Each timed part runs its contenders in turns (``common.interleaved_times``), one call each per round, each round
in its own order (seeded, so every run takes the same orders); a ratio is the median over the rounds of each round's
suite / peer, so that the load a round ran under cancels out of it.
``--baseline-inference REV`` adds, to ``ms_release``, ``encnet/engine/inference.py`` as it was at git revision
REV (its own defaults).
``--quick`` is the CPU size (real ResNet-50s, smaller crops and images); ``--smoke`` tiny sizes for the
test, whose results stay out of the tables (its JSON's ``quick`` is true).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from types import SimpleNamespace

import torch
from tabulate import tabulate
from torch import nn

from common import (
    REPO_ROOT, base_parser, interleaved_times, machine_info, measure_peak_bytes, paired_ratio, print_targets,
    resolve_device, summarize, target, write_results,
)

NAME = "peers"
SITE = REPO_ROOT / ".peers" / "site"
STAND_INS = REPO_ROOT / "tests" / "peers_stand_ins"
INSTALL = "bash scripts/install_peers.sh"
NUM_CLASSES = 150  # ADE20K, the dataset both peers published EncNet weights for
SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
PARTS = ("train_step", "peak_memory", "eval_forward", "ms_release", "ms_mmseg", "transform")
AUTHORS, MMSEG = "authors v0.5.0", "mmseg 1.2.2"
SHUFFLE_SEED = 0  # each round its own contender order (common.interleaved_times); --shuffle-seed sets another

# image: (height, width) of an ADE20K-like image; ms_r50: (base, crop, image) of the R50 protocol rows
SIZES = {
    "full": {"crop": 480, "batch": 2, "image": (512, 683), "base": 520, "mmseg_scale": (2048, 512),
             "ms_r50": (520, 480, (512, 683)), "rounds": 5, "transform_images": 20},
    "quick": {"crop": 240, "batch": 2, "image": (256, 342), "base": 260, "mmseg_scale": (1024, 256),
              "ms_r50": (130, 120, (128, 171)), "rounds": 5, "transform_images": 10},
    "smoke": {"crop": 32, "batch": 2, "image": (40, 54), "base": 40, "mmseg_scale": (160, 40),
              "ms_r50": None, "rounds": 1, "transform_images": 2},
}


# ------------------------------------------------------------------------------------------ the peers


def _load_file(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def import_peers() -> SimpleNamespace:
    """The peers' packages from ``.peers/site`` (after the venv's: they never replace torch or numpy), with the
    tests' stand-ins for their compiled parts."""
    if str(SITE) not in sys.path:
        sys.path.append(str(SITE))
    sys.modules.setdefault("encoding.lib", _load_file(STAND_INS / "encoding_lib.py", "peers_stand_ins.encoding_lib"))
    sys.modules.setdefault("mmcv._ext", _load_file(STAND_INS / "mmcv_ext.py", "peers_stand_ins.mmcv_ext"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import encoding
        import mmseg.models  # noqa: F401 (registers the models)
        from mmseg.utils import register_all_modules

        register_all_modules()
    return SimpleNamespace(encoding=encoding, base=sys.modules["encoding.models.base"])


@contextlib.contextmanager
def _quiet():
    """The peers print and warn as they build (deprecated torch calls): none of it is this benchmark's output."""
    with warnings.catch_warnings(), open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
        warnings.simplefilter("ignore")
        yield


def authors_encnet(peers, device: torch.device) -> nn.Module:
    """The release's EncNet (ADE20K: 150 classes, aux, SE-loss, no lateral) with BatchNorm; BaseNet always loads
    ImageNet weights from disk, so its ResNet is built untrained here (the weights do not change the time)."""
    dilated = sys.modules["encoding.dilated"]
    original = dilated.resnet50
    dilated.resnet50 = lambda pretrained=False, **kwargs: original(pretrained=False, **kwargs)
    try:
        with _quiet():
            model = peers.encoding.models.encnet.EncNet(NUM_CLASSES, "resnet50", aux=True, se_loss=True,
                                                        lateral=False, norm_layer=nn.BatchNorm2d)
    finally:
        dilated.resnet50 = original
    # EncModule builds its BatchNorm1d from encoding.nn whatever norm_layer says: a SyncBN that trains only under
    # DataParallel, with a compiled kernel; torch's BatchNorm1d is what it computes on one device
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if isinstance(child, peers.encoding.nn.BatchNorm1d):
                plain = nn.BatchNorm1d(child.num_features, child.eps, child.momentum, child.affine)
                plain.load_state_dict(child.state_dict())
                setattr(parent, name, plain)
    return model.to(device)


def mmseg_encnet(device: torch.device) -> nn.Module:
    """mmseg's EncNet R50-D8 from its own config file, BN for SyncBN, 150 classes."""
    from mmengine.config import Config
    from mmseg.registry import MODELS

    cfg = Config.fromfile(str(SITE / "mmseg" / ".mim" / "configs" / "_base_" / "models" / "encnet_r50-d8.py"))
    for part in ("backbone", "decode_head", "auxiliary_head"):
        cfg.model[part].norm_cfg = dict(type="BN", requires_grad=True)
    cfg.model.pretrained = None
    cfg.model.decode_head.num_classes = cfg.model.auxiliary_head.num_classes = NUM_CLASSES
    with _quiet():
        return MODELS.build(cfg.model).to(device)


def with_suite_encoding(model: nn.Module) -> nn.Module:
    """``model`` with each of its Encoding layers replaced by the suite's (same codewords and smoothing factors)."""
    from encnet.nn import Encoding

    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if type(child).__name__ == "Encoding" and not isinstance(child, Encoding):
                ours = Encoding(child.codewords.shape[1], child.codewords.shape[0])
                ours.load_state_dict({"codewords": child.codewords.detach(), "scale": child.scale.detach()})
                setattr(parent, name, ours.to(child.codewords.device))
    return model


def suite_encnet(backbone: str, align_corners: bool, device: torch.device) -> nn.Module:
    from encnet.models import build_model

    model = build_model("encnet", NUM_CLASSES, backbone=backbone, aux=True, se_loss=True)
    model.align_corners = align_corners
    return model.to(device)


# -------------------------------------------------------------------------------------- train steps


def _batch(sizes: dict, device: torch.device):
    g = torch.Generator().manual_seed(0)
    image = torch.randn(sizes["batch"], 3, sizes["crop"], sizes["crop"], generator=g)
    labels = torch.randint(0, NUM_CLASSES, (sizes["batch"], sizes["crop"], sizes["crop"]), generator=g)
    labels[:, : sizes["crop"] // 8] = 255  # some ignored pixels, as padded crops have
    return image.to(device), labels.to(device)


def _sgd(model: nn.Module):
    return torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9, weight_decay=1e-4)


def train_step(contender: str, peers, sizes: dict, device: torch.device):
    """A closure doing one SGD step of ``contender`` (suite_release, authors, authors_same_encoding, suite_mmseg,
    mmseg, mmseg_same_encoding), each with its own loss code."""
    image, labels = _batch(sizes, device)
    if contender.startswith("suite"):
        from encnet.losses import SegmentationLoss

        release = contender == "suite_release"
        model = suite_encnet("resnet50s" if release else "resnet50v1c", release, device).train()
        criterion = SegmentationLoss(NUM_CLASSES, se_weight=0.2, aux_weight=0.2)

        def loss():
            return criterion(model(image), labels)[0]
    elif contender.startswith("authors"):
        model = authors_encnet(peers, device).train()
        if contender.endswith("same_encoding"):
            with_suite_encoding(model)
        with _quiet():
            criterion = peers.encoding.nn.SegmentationLosses(se_loss=True, aux=True, nclass=NUM_CLASSES,
                                                             se_weight=0.2, aux_weight=0.2, ignore_index=-1)
        theirs = labels.masked_fill(labels == 255, -1)  # the release's ignore label

        def loss():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return criterion(*model(image), theirs)
    else:
        from mmengine.structures import PixelData
        from mmseg.structures import SegDataSample

        model = mmseg_encnet(device).train()
        if contender.endswith("same_encoding"):
            with_suite_encoding(model)
        shape = tuple(image.shape[-2:])
        samples = [SegDataSample(gt_sem_seg=PixelData(data=label[None]),
                                 metainfo=dict(img_shape=shape, pad_shape=shape, ori_shape=shape))
                   for label in labels]

        def loss():
            return model.parse_losses(model.loss(image, samples))[0]
    optimizer = _sgd(model)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss().backward()
        optimizer.step()

    return step


TRAIN_PAIRS = [("suite_release", "authors", AUTHORS, "EncNet R50 train step"),
               ("suite_release", "authors_same_encoding", AUTHORS, "EncNet R50 train step, same Encoding code"),
               ("suite_mmseg", "mmseg", MMSEG, "EncNet R50 train step"),
               ("suite_mmseg", "mmseg_same_encoding", MMSEG, "EncNet R50 train step, same Encoding code")]


def _ratio_rows(part: str, pairs, times: dict, unit: str = "s", scale: float = 1.0) -> list[dict]:
    """One row per (suite contender, peer contender, peer, what): both medians, and the ratio as the median over
    the rounds of each round's suite / peer (``common.paired_ratio``)."""
    rows = []
    for ours, theirs, peer, what in pairs:
        a, b = (_summary_of(times[name]) for name in (ours, theirs))
        ratio = paired_ratio(times, ours, theirs)
        rows.append({"part": part, "what": what, "peer": peer, "unit": unit,
                     "suite": a["median_s"] * scale, "peer_value": b["median_s"] * scale,
                     "ratio": ratio["median_s"], "ratio_q25_q75": f"{ratio['q25_s']:.3g}–{ratio['q75_s']:.3g}",
                     "suite_q25_q75": f"{a['q25_s'] * scale:.4g}–{a['q75_s'] * scale:.4g}",
                     "peer_q25_q75": f"{b['q25_s'] * scale:.4g}–{b['q75_s'] * scale:.4g}", "rounds": ratio["repeats"]})
    return rows


def _summary_of(rounds: list[list[float]]) -> dict:
    return summarize([t for calls in rounds for t in calls])


def _timed(calls: dict, device: torch.device, rounds: int, warmup: int = 1) -> dict:
    return interleaved_times(calls, device, rounds=rounds, min_round_time=0.0, warmup=warmup,
                             shuffle_seed=SHUFFLE_SEED)


def part_train_step(peers, sizes, device, rounds) -> dict:
    names = list(dict.fromkeys(name for pair in TRAIN_PAIRS for name in pair[:2]))
    steps = {name: train_step(name, peers, sizes, device) for name in names}
    timings = _timed(steps, device, rounds)
    where = f"batch {sizes['batch']}, {sizes['crop']}², 150 classes, float32"
    return {"rows": _ratio_rows("train_step", [(*p[:3], f"{p[3]}, {where}") for p in TRAIN_PAIRS], timings)}


# ------------------------------------------------------------------------------------------ peak memory


MEMORY_PAIRS = [("suite_release", "authors", AUTHORS), ("suite_mmseg", "mmseg", MMSEG)]


def memory_worker(case: dict) -> dict:
    """One contender's train-step peak in this (fresh) process, after one warm-up step."""
    device = torch.device(case["device"])
    if case.get("threads"):
        torch.set_num_threads(case["threads"])
    peers = import_peers() if not case["contender"].startswith("suite") else None
    step = train_step(case["contender"], peers, case["sizes"], device)
    step()
    return {"peak_bytes": measure_peak_bytes(step, device)}


def part_peak_memory(peers, sizes, device, rounds) -> dict:
    names = [n for pair in MEMORY_PAIRS for n in pair[:2]]
    peaks = {}
    cases = {name: {"contender": name, "sizes": sizes, "device": device.type, "threads": torch.get_num_threads()}
             for name in names}
    if device.type == "cuda":
        for name, case in cases.items():  # one after the other: one GPU's peak counter
            peaks[name] = memory_worker(case)["peak_bytes"]
            torch.cuda.empty_cache()
    else:
        # Each CPU worker's peak is its own process's, so two at a time measure the same and start (imports
        # of torch and the peers, most of a worker's time at small sizes) side by side; not four: four R50
        # steps at the full size may not fit a small machine's memory.
        pending = list(cases.items())
        while pending:
            batch, pending = pending[:2], pending[2:]
            procs = {name: subprocess.Popen([sys.executable, __file__, "--memory-worker", json.dumps(case)],
                                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                            cwd=REPO_ROOT) for name, case in batch}
            for name, proc in procs.items():
                stdout, stderr = proc.communicate()
                if proc.returncode != 0:
                    raise RuntimeError(f"memory worker for {name} failed (exit {proc.returncode}):\n{stderr[-3000:]}")
                peaks[name] = json.loads(stdout.strip().splitlines()[-1])["peak_bytes"]
    from common import cpu_memory_method

    rows = [{"part": "peak_memory", "what": f"EncNet R50 train step, batch {sizes['batch']}, {sizes['crop']}²",
             "peer": peer, "unit": "MiB", "suite": peaks[ours] / 2**20, "peer_value": peaks[theirs] / 2**20,
             "ratio": peaks[ours] / peaks[theirs], "rounds": 1} for ours, theirs, peer in MEMORY_PAIRS]
    method = "torch.cuda.max_memory_allocated" if device.type == "cuda" else cpu_memory_method()
    return {"rows": rows, "notes": [f"peak memory: {method}; each model in its own process, after one warm-up step"]}


# ------------------------------------------------------------------------------------------ eval forward


def part_eval_forward(peers, sizes, device, rounds) -> dict:
    height, width = sizes["image"]
    image = torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(1)).to(device)
    meta = [dict(img_shape=(height, width), ori_shape=(height, width), pad_shape=(height, width))]
    models = {"suite_release": suite_encnet("resnet50s", True, device), "authors": authors_encnet(peers, device),
              "suite_mmseg": suite_encnet("resnet50v1c", False, device), "mmseg": mmseg_encnet(device)}
    models["authors_same_encoding"] = with_suite_encoding(authors_encnet(peers, device))
    models["mmseg_same_encoding"] = with_suite_encoding(mmseg_encnet(device))
    for model in models.values():
        model.eval()

    def quiet(fn):
        def call():
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return fn()
        return call

    calls = {
        "suite_release": quiet(lambda: models["suite_release"](image).out),
        "suite_release_all_heads": quiet(lambda: models["suite_release"](image, all_heads=True).out),
        "authors": quiet(lambda: models["authors"].evaluate(image)),
        "authors_same_encoding": quiet(lambda: models["authors_same_encoding"].evaluate(image)),
        "suite_mmseg": quiet(lambda: models["suite_mmseg"](image).out),
        "suite_mmseg_all_heads": quiet(lambda: models["suite_mmseg"](image, all_heads=True).out),
        "mmseg": quiet(lambda: models["mmseg"].encode_decode(image, meta)),
        "mmseg_same_encoding": quiet(lambda: models["mmseg_same_encoding"].encode_decode(image, meta)),
    }
    timings = _timed(calls, device, rounds)
    where = f"one {height}×{width} image"
    pairs = [("suite_release", "authors", AUTHORS, f"single-scale eval forward, {where}"),
             ("suite_release", "authors_same_encoding", AUTHORS, f"single-scale eval forward, same Encoding code, "
                                                                 f"{where}"),
             ("suite_mmseg", "mmseg", MMSEG, f"single-scale eval forward, {where}"),
             ("suite_mmseg", "mmseg_same_encoding", MMSEG, f"single-scale eval forward, same Encoding code, {where}")]
    rows = _ratio_rows("eval_forward", pairs, timings)
    for row, (ours, *_) in zip(rows, pairs):
        # what the suite's eval forward cost before it skipped the heads it does not score
        row["suite_every_head"] = _summary_of(timings[f"{ours}_all_heads"])["median_s"]
    return {"rows": rows, "notes": ["eval_forward: suite_every_head = the suite's forward with every head "
                                    "(all_heads=True), as every evaluation ran before the unscored heads were "
                                    "skipped; the authors' evaluate runs every head, mmseg's encode_decode the "
                                    "decode head"]}


# ------------------------------------------------------------------------------- multi-scale protocols


class StandIn(nn.Module):
    """A cheap segmentation net with the release's BaseNet interface (``evaluate``, sizes, mean/std), so that a
    protocol's own cost shows: a 3×3 conv (flip and window borders matter) plus a term from the input's global
    mean (the padding colour moves every pixel, as EncNet's context does)."""

    def __init__(self, base_size: int, crop_size: int, align_corners: bool = True):
        super().__init__()
        torch.manual_seed(0)
        self.nclass, self.base_size, self.crop_size = NUM_CLASSES, base_size, crop_size
        self.mean, self.std = list(MEAN), list(STD)
        self._up_kwargs = {"mode": "bilinear", "align_corners": align_corners}
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, NUM_CLASSES, 1))
        self.context = nn.Linear(3, NUM_CLASSES)

    def forward(self, x):
        return self.body(x) + self.context(x.mean((2, 3)))[:, :, None, None]

    def evaluate(self, x):
        return self.forward(x)


class SuiteAsBaseNet(nn.Module):
    """A suite model behind the release's BaseNet interface, for ``MultiEvalModule``: the same network on both
    sides of the protocol comparison."""

    def __init__(self, model: nn.Module, base_size: int, crop_size: int):
        super().__init__()
        self.model, self.nclass, self.base_size, self.crop_size = model, NUM_CLASSES, base_size, crop_size
        self.mean, self.std, self._up_kwargs = list(MEAN), list(STD), {"mode": "bilinear", "align_corners": True}

    def forward(self, x):
        return self.model(x).out

    def evaluate(self, x):
        return self.forward(x)


def baseline_inference(rev: str):
    """``encnet/engine/inference.py`` as it was at git revision ``rev``, as a module of its own."""
    text = subprocess.run(["git", "show", f"{rev}:encnet/engine/inference.py"], cwd=REPO_ROOT, capture_output=True,
                          text=True)
    if text.returncode != 0:
        raise SystemExit(f"--baseline-inference {rev}: git show failed: {text.stderr.strip()}")
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(text.stdout)
    try:
        return _load_file(Path(f.name), f"inference_at_{rev}")
    finally:
        os.unlink(f.name)


@contextlib.contextmanager
def _cuda_is_identity_on_cpu(device: torch.device):
    """``MultiEvalModule`` calls ``.cuda()`` on its tensors; on a CPU run that must leave them where they are."""
    if device.type == "cuda":
        yield
        return
    original = torch.Tensor.cuda
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    try:
        yield
    finally:
        torch.Tensor.cuda = original


def part_ms_release(peers, sizes, device, rounds, baseline=None) -> dict:
    from encnet.engine.inference import predict_logits
    from encnet.engine.protocols import PROTOCOLS

    settings = PROTOCOLS["release"].overrides
    cases = [("stand-in", StandIn(sizes["base"], sizes["crop"]).to(device).eval(), sizes["base"], sizes["crop"],
              sizes["image"])]
    if sizes["ms_r50"] is not None:
        base, crop, image_size = sizes["ms_r50"]
        net = SuiteAsBaseNet(suite_encnet("resnet50s", True, device), base, crop).to(device).eval()
        cases.append(("EncNet R50", net, base, crop, image_size))
    rows, checks = [], []
    for label, net, base, crop, (height, width) in cases:
        image = torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(2)).to(device)
        with _quiet():
            evaluator = peers.base.MultiEvalModule(net, NUM_CLASSES, flip=True, scales=list(SCALES))
        calls = {"suite": lambda: predict_logits(net, image, base_size=base, crop_size=crop, **settings),
                 "authors": lambda: evaluator(image)}
        if baseline is not None:
            calls["suite_baseline"] = lambda: baseline.predict_logits(net, image, base_size=base, crop_size=crop,
                                                                      **settings)
        calls = {name: torch.no_grad()(fn) for name, fn in calls.items()}
        with _cuda_is_identity_on_cpu(device), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            same = bool(torch.equal(calls["suite"]().argmax(1), calls["authors"]().argmax(1)))
            timings = _timed(calls, device, rounds, warmup=0)
        checks.append(target(f"release protocol = MultiEvalModule argmax ({label})", float(same), 1.0, same,
                             f"one {height}×{width} image, base {base}, crop {crop}, 6 scales + flip"))
        where = f"{label}, one {height}×{width} image, base {base}, crop {crop}, 6 scales + flip"
        pairs = [("suite", "authors", AUTHORS, f"release protocol vs MultiEvalModule, {where}")]
        if baseline is not None:
            pairs.append(("suite_baseline", "authors", AUTHORS,
                          f"release protocol at {baseline.__name__.split('_at_')[1]} vs MultiEvalModule, {where}"))
        rows += _ratio_rows("ms_release", pairs, timings)
    return {"rows": rows, "targets": checks}


def part_ms_mmseg(peers, sizes, device, rounds) -> dict:
    from mmseg.models import SegTTAModel
    from mmseg.structures import SegDataSample

    from encnet.engine.protocols import mmseg_logits, mmseg_rescaled_size

    net = StandIn(sizes["base"], sizes["crop"], align_corners=False).to(device).eval()
    theirs = mmseg_encnet(device).eval()
    theirs.encode_decode = lambda inputs, metas: net(inputs)  # mmseg's predict around the same network
    tta = SegTTAModel(module=theirs)
    height, width = sizes["image"]
    image = torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(3)).to(device)
    scale = sizes["mmseg_scale"]

    def mmseg_tta():
        with warnings.catch_warnings():  # PixelData warns of every label map it reshapes
            warnings.simplefilter("ignore")
            return _mmseg_tta()

    def _mmseg_tta():
        views = []
        for ratio in SCALES:
            resized = nn.functional.interpolate(image, size=mmseg_rescaled_size(height, width, scale, ratio),
                                                mode="bilinear", align_corners=False)
            for flip in (False, True):
                shape = tuple(resized.shape[2:])
                meta = dict(ori_shape=(height, width), img_shape=shape, pad_shape=shape, flip=flip,
                            flip_direction="horizontal" if flip else None, img_path=f"view{len(views)}")
                views.append(theirs.predict(resized.flip(-1) if flip else resized,
                                            [SegDataSample(metainfo=meta)])[0])
        return tta.merge_preds([views])[0].pred_sem_seg.data

    calls = {"suite": lambda: mmseg_logits(net, image, ratios=SCALES, flip=True, mode="whole", scale=scale),
             "mmseg": mmseg_tta}
    calls = {name: torch.no_grad()(fn) for name, fn in calls.items()}
    same = bool(torch.equal(calls["suite"]().argmax(1), calls["mmseg"]()))
    timings = _timed(calls, device, rounds, warmup=0)
    where = f"stand-in, one {height}×{width} image, bound {scale[0]}×{scale[1]}, 6 ratios + flip"
    return {"rows": _ratio_rows("ms_mmseg", [("suite", "mmseg", MMSEG,
                                              f"mmseg protocol vs predict + merge_preds, {where}")], timings),
            "targets": [target("mmseg protocol = predict + merge_preds argmax", float(same), 1.0, same, where)]}


# ---------------------------------------------------------------------------------- training transform


def part_transform(peers, sizes, device, rounds) -> dict:
    """Per image, one thread, on the CPU whatever the device (a DataLoader worker's job)."""
    import random

    import numpy as np
    from PIL import Image
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    from encnet.data.presets import SegmentationTrainPreset

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    height, width = sizes["image"]
    g = np.random.default_rng(0)
    pixels = [g.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(sizes["transform_images"])]
    labels = [g.integers(0, NUM_CLASSES, (height, width), dtype=np.uint8) for _ in pixels]
    suite_inputs = [(tv_tensors.Image(torch.from_numpy(p).permute(2, 0, 1).contiguous()),
                     tv_tensors.Mask(torch.from_numpy(m).long())) for p, m in zip(pixels, labels)]
    pil_inputs = [(Image.fromarray(p), Image.fromarray(m)) for p, m in zip(pixels, labels)]
    base, crop = sizes["base"], sizes["crop"]

    release = SegmentationTrainPreset(base, crop, scale_side="short", blur_prob=0.5)
    with _quiet():
        authors = peers.encoding.datasets.base.BaseDataset("", "train", base_size=base, crop_size=crop)
    to_tensor = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)])

    # mmseg's ADE20K pipeline after loading, at the same sizes: bound (4·base, base), crop × crop
    from mmcv.transforms import Compose

    mmseg_pipeline = Compose([
        dict(type="RandomResize", scale=(4 * base, base), ratio_range=(0.5, 2.0), keep_ratio=True),
        dict(type="RandomCrop", crop_size=(crop, crop), cat_max_ratio=0.75), dict(type="RandomFlip", prob=0.5),
        dict(type="PhotoMetricDistortion"), dict(type="PackSegInputs")])
    default = SegmentationTrainPreset(base, crop)

    def seeded(fn):
        def run():
            random.seed(0)
            np.random.seed(0)
            torch.manual_seed(0)
            for i in range(len(pixels)):
                fn(i)
        return run

    def authors_one(i):
        img, mask = authors._sync_transform(*pil_inputs[i])
        return to_tensor(img), mask

    def mmseg_one(i):
        results = dict(img=pixels[i][..., ::-1].copy(), gt_seg_map=labels[i].copy(), seg_fields=["gt_seg_map"],
                       img_shape=(height, width), ori_shape=(height, width), img_path="", seg_map_path="",
                       reduce_zero_label=False)
        return mmseg_pipeline(results)

    calls = {"suite_release": seeded(lambda i: release(*suite_inputs[i])), "authors": seeded(authors_one),
             "suite_default": seeded(lambda i: default(*suite_inputs[i])), "mmseg": seeded(mmseg_one)}
    try:
        timings = _timed(calls, torch.device("cpu"), rounds)
    finally:
        torch.set_num_threads(threads)
    n = len(pixels)
    where = f"{height}×{width} uint8 image → {crop}² crop, base {base}, one thread"
    pairs = [("suite_release", "authors", AUTHORS, f"training transform, release recipe (both blur), {where}"),
             ("suite_default", "mmseg", MMSEG,
              f"training transform, suite default vs mmseg ADE20K pipeline (+ photometric distortion), {where}")]
    return {"rows": _ratio_rows("transform", pairs, timings, unit="ms/image", scale=1000 / n)}


# ------------------------------------------------------------------------------------------------ main


def main() -> None:
    global SHUFFLE_SEED
    parser = base_parser(__doc__.splitlines()[0])
    for action in parser._actions:
        if action.dest == "quick":
            action.help = "CPU sizes: real ResNet-50s, 240² crops, 256×342 images (minutes)"
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for the smoke test; kept out of the tables")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--rounds", type=int, default=None, help="rounds per timed part (default by size)")
    parser.add_argument("--shuffle-seed", type=int, default=SHUFFLE_SEED,
                        help="seed of each round's contender order (default %(default)s: every run the same orders)")
    parser.add_argument("--baseline-inference", metavar="REV", default=None,
                        help="also time the release protocol of encnet/engine/inference.py at git revision REV")
    parser.add_argument("--memory-worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    SHUFFLE_SEED = args.shuffle_seed  # read by _timed, which every timed part calls
    if args.memory_worker:
        print(json.dumps(memory_worker(json.loads(args.memory_worker))))
        return
    if not (SITE / "encoding").is_dir() or not (SITE / "mmseg").is_dir():
        print(f"peers: skipped, the peers' released code is not installed in {SITE.relative_to(REPO_ROOT)}; "
              f"`{INSTALL}` installs it (from the package registry)")
        return
    device = resolve_device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads or 1)  # a core each on a shared machine; the ratios are what count
    elif args.threads:
        torch.set_num_threads(args.threads)
    size_name = "smoke" if args.smoke else "quick" if args.quick else "full"
    sizes = SIZES[size_name]
    rounds = args.rounds or sizes["rounds"]
    baseline = baseline_inference(args.baseline_inference) if args.baseline_inference else None
    machine = machine_info(device)
    peers = import_peers()
    rows, targets, notes = [], [], []
    runners = {"train_step": part_train_step, "peak_memory": part_peak_memory, "eval_forward": part_eval_forward,
               "ms_release": lambda *a: part_ms_release(*a, baseline=baseline), "ms_mmseg": part_ms_mmseg,
               "transform": part_transform}
    for part in [p for p in PARTS if p in args.parts]:
        print(f"=== {part}", flush=True)
        result = runners[part](peers, sizes, device, rounds)
        rows += result["rows"]
        targets += result.get("targets", [])
        notes += result.get("notes", [])
        print(tabulate(result["rows"], headers="keys", floatfmt=".4g"), flush=True)
    targets += [target(f"suite / peer: {r['part']}, {r['what']} ({r['peer']})", r["ratio"], 1.0, r["ratio"] <= 1.0,
                       r["unit"]) for r in rows]
    print()
    print_targets(targets)
    notes += [
        "ratio = suite / peer: the median over the rounds of each round's suite time / peer time (the contenders "
        "of a part in turns, one call each per round, so a round's load cancels out of its ratio); suite and "
        "peer_value are the medians of their calls (q25–q75 beside them); memory: one measurement each",
        "the authors' Encoding layer runs tests/peers_stand_ins/encoding_lib.py (their kernels' formulas in plain "
        "torch, not their CUDA speed); rows 'same Encoding code' give each peer the suite's Encoding layer",
        "ms rows: one network on both sides (the stand-in, or the suite's EncNet R50 behind the release's BaseNet "
        "interface), so only the protocols differ; the suite at its device's default eval.max_batch",
    ]
    if device.type == "cpu":
        notes.append(f"{torch.get_num_threads()} torch thread(s); CPU timings on a shared machine are noisy: the "
                     "matrix-product speed and load average at the start and end are in the machine record")
    out = argparse.Namespace(**{**vars(args), "quick": args.smoke})  # "quick" in the record = left out of tables
    write_results(out, NAME, device, {
        "machine": machine, "sizes": size_name,
        "config": {**sizes, "num_classes": NUM_CLASSES, "scales": list(SCALES), "parts": list(args.parts),
                   "rounds": rounds, "shuffle_seed": SHUFFLE_SEED, "baseline_inference": args.baseline_inference},
        "rows": rows, "targets": targets, "notes": notes})


if __name__ == "__main__":
    main()
