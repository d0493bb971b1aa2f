"""The suite against the peers' released code itself, run side by side (marker ``peers``; CI runs them).

``bash scripts/install_peers.sh`` puts into ``.peers/site``: the authors' torch-encoding 0.5.0 (its PyPI sdist,
whose model, dilated-ResNet, Encoding and ``MultiEvalModule`` files are those of the v0.5.0 commit f891919 that
trained the model zoo), with only its compiled kernels replaced (``tests/peers_stand_ins/encoding_lib.py``); and
mmsegmentation 1.2.2 (mmcv-lite 2.1.0, mmengine 0.10.7), its models built from its own config files with SyncBN
replaced by BN. Each checkpoint is written by its framework's own code: the zoo's by ``torch.save`` of the
release's model, which the release's getter then loads strictly; mmseg's by mmengine's ``Runner``. Everything is
compared in float64 on random weights with perturbed BatchNorm statistics, at the real ResNet-50/101 widths.
"""

from __future__ import annotations

import importlib.util
import io
import math
import sys
import warnings
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from encnet.engine.build import build_model_for
from encnet.engine.config import PAPER_MS_SCALES, load_config
from encnet.engine.inference import predict_logits
from encnet.engine.protocols import PROTOCOLS, mmseg_logits, mmseg_rescaled_size
from encnet.engine.published_weights import (PublishedWeightsError, export_mmseg, load_published,
                                             read_checkpoint)
from encnet.nn import Encoding

pytestmark = pytest.mark.peers

REPO = Path(__file__).resolve().parents[1]
SITE = REPO / ".peers" / "site"
STAND_INS = REPO / "tests" / "peers_stand_ins"
INSTALL = "bash scripts/install_peers.sh"
PAPER = REPO / "configs" / "paper"
MMSEG_CONFIG = SITE / "mmseg" / ".mim" / "configs" / "_base_" / "models" / "encnet_r50-d8.py"
MEAN, STD = [.485, .456, .406], [.229, .224, .225]


def _stand_in(name: str):
    spec = importlib.util.spec_from_file_location(f"peers_stand_ins.{name}", STAND_INS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def peers():
    if not (SITE / "encoding").is_dir() or not (SITE / "mmseg").is_dir():
        pytest.skip(f"the peers' released code is not installed in {SITE}: run `{INSTALL}`")
    if str(SITE) not in sys.path:
        sys.path.append(str(SITE))  # after the venv's packages: the peers never replace torch or numpy
    sys.modules.setdefault("encoding.lib", _stand_in("encoding_lib"))
    sys.modules.setdefault("mmcv._ext", _stand_in("mmcv_ext"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import encoding
        import mmseg.models  # noqa: F401 (registers the models)
        from mmseg.utils import register_all_modules

        register_all_modules()
    return SimpleNamespace(encoding=encoding)


def _perturb(model: nn.Module, seed: int) -> nn.Module:
    """Random BatchNorm affine parameters and running statistics: a BN that is the identity would hide a swap."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                c = m.num_features
                m.weight.copy_(1 + 0.2 * torch.randn(c, generator=g))
                m.bias.copy_(0.1 * torch.randn(c, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(c, generator=g))
                m.running_var.copy_(0.5 + torch.rand(c, generator=g))
    return model.double().eval()


def _image(seed: int, height: int = 45, width: int = 61) -> torch.Tensor:
    return torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _relative(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    assert ours.shape == theirs.shape
    return float((ours - theirs).abs().max() / theirs.abs().max())


def _assert_same(ours: torch.Tensor, theirs: torch.Tensor, tol: float = 1e-10) -> None:
    assert torch.isfinite(theirs).all()
    assert _relative(ours, theirs) < tol, _relative(ours, theirs)
    if ours.dim() == 4:
        assert torch.equal(ours.argmax(1), theirs.argmax(1))


# ---------------------------------------------------------------------------------------------- the authors'


def test_encoding_layer_forward_and_gradients_equal_the_release(peers):
    torch.manual_seed(0)
    theirs = peers.encoding.nn.Encoding(D=16, K=6).double()
    ours = Encoding(16, 6).double()
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 16, 5, 7, dtype=torch.float64, requires_grad=True)
    x_ours = x.detach().clone().requires_grad_()
    e_theirs, e_ours = theirs(x), ours(x_ours)
    _assert_same(e_ours, e_theirs, 1e-13)
    weights = torch.randn_like(e_theirs)
    (e_theirs * weights).sum().backward()
    (e_ours * weights).sum().backward()
    for a, b in ((x_ours.grad, x.grad), (ours.codewords.grad, theirs.codewords.grad),
                 (ours.scale.grad, theirs.scale.grad)):
        _assert_same(a, b, 1e-12)


def test_the_kernel_stand_ins_gradients_are_the_kernels_derivatives(peers):
    """The stand-in's explicit backward (the GPU kernels' formulas) against finite differences, through the
    release's own autograd Functions."""
    functions = peers.encoding.functions
    g = torch.Generator().manual_seed(1)
    X = torch.randn(2, 5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    C = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    S = (-torch.rand(4, generator=g, dtype=torch.float64) - 0.1).requires_grad_()
    A = torch.rand(2, 5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(functions.scaled_l2, (X, C, S))
    assert torch.autograd.gradcheck(functions.aggregate, (A, X, C))


@pytest.fixture(scope="module")
def zoo(peers, tmp_path_factory):
    """The release's getters, reading model files from a folder instead of downloading them: each zoo file is
    ``torch.save`` of the release's own randomised model, as the zoo's are; the getter with ``pretrained=True``
    must then load it strictly."""
    folder = tmp_path_factory.mktemp("zoo")
    store = sys.modules["encoding.models.model_store"]
    original = store.get_model_file
    store.get_model_file = lambda name, root=None: str(folder / f"{name}.pth")
    resnet = peers.encoding.dilated.resnet
    for depth in ("resnet50", "resnet101"):  # the ImageNet files BaseNet always loads; their values are replaced
        torch.save(getattr(resnet, depth)(pretrained=False).state_dict(), folder / f"{depth}.pth")
    yield SimpleNamespace(folder=folder, models=peers.encoding.models)
    store.get_model_file = original


def _zoo_file(zoo, getter: str, name: str, seed: int, legacy: bool = False):
    """The release's model from ``getter`` randomised and saved as the zoo's ``name``; loaded back by the getter.

    ``legacy``: in torch's pre-1.6 serialization (not a zip file), as the 2018 zoo files were written."""
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = getattr(zoo.models, getter)(pretrained=False)
        _perturb(model, seed)
        path = zoo.folder / f"{name}.pth"
        # the zoo's files are float32
        torch.save(model.float().state_dict(), path, _use_new_zipfile_serialization=not legacy)
        released = getattr(zoo.models, getter)(pretrained=True)
    return path, released.double().eval()


def _release_outputs(model, x) -> dict:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = model(x)
    if len(out) == 3:  # EncNet: (out, se, aux)
        return {"out": out[0], "se": out[1], "aux": out[2]}
    return {"out": out[0], "aux": out[1]}  # FCN with its aux head


@pytest.mark.parametrize("getter, name, config, archive", [
    ("get_encnet_resnet50_pcontext", "encnet_resnet50_pcontext", "pcontext_encnet_r50", False),
    ("get_fcn_resnet50_ade", "fcn_resnet50_ade", "ade20k_fcn_r50", True),
    ("get_encnet_resnet50_ade", "encnet_resnet50_ade", "ade20k_encnet_r50", False),
    ("get_encnet_resnet101_ade", "encnet_resnet101_ade", "ade20k_encnet_r101", True),
])
def test_zoo_files_load_strictly_and_forward_as_the_release(zoo, getter, name, config, archive, tmp_path):
    # The archived ones as the zoo's downloads are: a .zip holding a .pth written by the 2018 torch's serializer
    path, released = _zoo_file(zoo, getter, name, seed=len(name), legacy=archive)
    if archive:
        assert not zipfile.is_zipfile(path)
        zipped = tmp_path / f"{name}.zip"
        with zipfile.ZipFile(zipped, "w") as z:
            z.write(path, f"{name}.pth")
        path = zipped
    loaded = load_published(path, load_config(PAPER / f"{config}.yaml"), source="pytorch-encoding")
    assert loaded.report.loaded == len(loaded.model.state_dict()) - len(loaded.report.filled)
    if getter == "get_fcn_resnet50_ade":  # the zoo's ADE20K FCN has an aux head (ledger fcn_aux)
        assert loaded.model_config.aux is True and loaded.report.config_changes["aux"] == (False, True)
    ours = loaded.model.double().eval()
    x = _image(seed=len(name))
    theirs = _release_outputs(released, x)
    with torch.no_grad():
        mine = ours(x, all_heads=True)
    for key, value in theirs.items():
        _assert_same(getattr(mine, key), value)


class _Scorer(nn.Module):
    """A cheap segmentation net with the release's BaseNet interface, for the protocol alone (an R50 at 480² crops
    in float64 would take minutes): a 3×3 conv, so the flip and window borders show, plus a term from the window's
    global mean, so (as with EncNet's context) the padding colour moves every pixel."""

    def __init__(self, nclass: int, base_size: int, crop_size: int, up_kwargs: dict):
        super().__init__()
        self.nclass, self.base_size, self.crop_size = nclass, base_size, crop_size
        self.mean, self.std, self._up_kwargs = MEAN, STD, up_kwargs
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, nclass, 1))
        self.context = nn.Linear(3, nclass)

    def forward(self, x):
        return self.body(x) + self.context(x.mean((2, 3)))[:, :, None, None]

    def evaluate(self, x):
        return self.forward(x)


def _paper_sizes() -> tuple[int, int]:
    """(base, crop) as the engine's eval loop reads them from the paper configs (every segmentation config's)."""
    config = load_config(PAPER / "ade20k_encnet_r50.yaml")
    return (config.eval.base_size or config.data.base_size, config.eval.crop_size or config.data.crop_size)


@pytest.mark.parametrize("base_size, crop_size, shapes", [
    # portrait and landscape: one crop at the small scales, windows at the large ones; the landscape's short side
    # is padded up to the crop at every scale
    (*_paper_sizes(), [(480, 360), (200, 700)]),
    (640, 576, [(375, 500)]),  # another grid: the window count and the remainder windows change
])
def test_release_protocol_equals_multi_eval_module(peers, monkeypatch, base_size, crop_size, shapes):
    base = sys.modules["encoding.models.base"]
    torch.manual_seed(0)
    model = _Scorer(5, base_size, crop_size, base.up_kwargs).double().eval()
    monkeypatch.setattr(torch.Tensor, "cuda", lambda self, *args, **kwargs: self)  # MultiEvalModule calls .cuda()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        evaluator = base.MultiEvalModule(model, 5, flip=True, scales=list(PAPER_MS_SCALES))
    settings = PROTOCOLS["release"].overrides
    assert settings["scales"] == list(PAPER_MS_SCALES)
    for n, (h, w) in enumerate(shapes):
        image = _image(seed=n, height=h, width=w)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs = evaluator(image)
            # the engine's call (eval_loop): the protocol's settings, the default padding (ImageNet black)
            ours = predict_logits(model, image, base_size=base_size, crop_size=crop_size, **settings)
        _assert_same(ours, theirs.log(), 1e-12)  # the suite returns the release's scores as their logarithm


# ----------------------------------------------------------------------------------------------- mmseg's


def _mmseg_model(seed: int, lateral: bool = False, num_classes: int = 150, **backbone):
    from mmengine.config import Config
    from mmseg.registry import MODELS

    cfg = Config.fromfile(str(MMSEG_CONFIG))
    norm = dict(type="BN", requires_grad=True)
    for part in ("backbone", "decode_head", "auxiliary_head"):
        cfg.model[part].norm_cfg = norm
    cfg.model.pretrained = None  # its ImageNet file would be downloaded; the weights are random here
    cfg.model.data_preprocessor.size = (32, 40)  # training batches are padded to it (the Runner's images' size)
    cfg.model.backbone.update(backbone)
    cfg.model.decode_head.update(num_classes=num_classes, add_lateral=lateral)
    cfg.model.auxiliary_head.num_classes = num_classes
    torch.manual_seed(seed)
    return _perturb(MODELS.build(cfg.model), seed)


def _mmseg_outputs(model, x) -> dict:
    from mmseg.models.utils import resize

    with torch.no_grad():
        feats = model.extract_feat(x)
        out, se = model.decode_head.forward(feats)
        size = x.shape[2:]
        head = model.decode_head
        return {"out": resize(out, size, mode="bilinear", align_corners=head.align_corners), "se": se,
                "aux": resize(model.auxiliary_head.forward(feats), size, mode="bilinear",
                              align_corners=model.auxiliary_head.align_corners)}


@pytest.fixture(scope="module")
def runner_checkpoint(peers, tmp_path_factory):
    """An mmseg checkpoint as mmengine's Runner writes it in training: two SGD iterations on two tiny ADE20K-layout
    images, saved by its CheckpointHook (``meta`` with the config text and seed, an OrderedDict ``state_dict`` with
    ``_metadata``, ``message_hub`` with its log buffers, ``optimizer``); the reference model is mmseg's, loaded
    back from that file strictly."""
    from mmengine.runner import Runner
    from PIL import Image

    folder = tmp_path_factory.mktemp("mmseg")
    data = folder / "data"
    (data / "img").mkdir(parents=True), (data / "ann").mkdir()
    g = np.random.default_rng(0)
    for name in ("a", "b"):
        Image.fromarray(g.integers(0, 256, (32, 40, 3), dtype=np.uint8)).save(data / "img" / f"{name}.jpg")
        Image.fromarray(g.integers(0, 151, (32, 40), dtype=np.uint8)).save(data / "ann" / f"{name}.png")
    pipeline = [dict(type="LoadImageFromFile"), dict(type="LoadAnnotations", reduce_zero_label=True),
                dict(type="PackSegInputs")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        runner = Runner(model=_mmseg_model(seed=3).float().train(), work_dir=str(folder / "work"),
                        default_scope="mmseg", experiment_name="peers", randomness=dict(seed=0),
                        optim_wrapper=dict(optimizer=dict(type="SGD", lr=0.001, momentum=0.9)),
                        train_cfg=dict(type="IterBasedTrainLoop", max_iters=2),
                        train_dataloader=dict(dataset=dict(type="ADE20KDataset", data_root=str(data),
                                                           data_prefix=dict(img_path="img", seg_map_path="ann"),
                                                           img_suffix=".jpg", pipeline=pipeline),
                                              sampler=dict(type="InfiniteSampler", shuffle=False), batch_size=2,
                                              num_workers=0),
                        default_hooks=dict(checkpoint=dict(type="CheckpointHook", interval=2, by_epoch=False),
                                           logger=dict(type="LoggerHook", interval=1)))
        runner.train()
        path = folder / "work" / "iter_2.pth"
        reference = _mmseg_model(seed=99)
        # mmengine's load_checkpoint calls torch.load with torch's default weights_only=True (torch >= 2.6), which
        # refuses mmengine's own HistoryBuffer: the file is ours, so it is read in full here
        raw = torch.load(path, map_location="cpu", weights_only=False)
        reference.load_state_dict(raw["state_dict"], strict=True)
    return SimpleNamespace(path=path, model=reference.double().eval())


def test_a_runner_checkpoint_loads_strictly_and_forwards_as_mmseg(runner_checkpoint):
    raw = torch.load(runner_checkpoint.path, map_location="cpu", weights_only=False)
    assert {"meta", "state_dict", "message_hub", "optimizer"} <= set(raw)
    assert hasattr(raw["state_dict"], "_metadata")  # what crashed the reader before
    state, skipped = read_checkpoint(runner_checkpoint.path)
    # weights_only refuses the message hub's log buffers, so the tensors-only reader takes it
    assert set(state) == set(raw["state_dict"]) and any("mmengine" in name for name in skipped), skipped
    loaded = load_published(runner_checkpoint.path, load_config(PAPER / "ade20k_encnet_r50.yaml"), source="mmseg")
    assert loaded.model_config.backbone == "resnet50v1c" and loaded.model.align_corners is False
    x = _image(seed=5)
    with torch.no_grad():
        mine = loaded.model.double().eval()(x, all_heads=True)
    for key, value in _mmseg_outputs(runner_checkpoint.model, x).items():
        _assert_same(getattr(mine, key), value)


def test_exports_load_strictly_into_mmseg_and_forward_as_ours(peers, zoo):
    # Ours (ResNetV1c stem, no lateral, align_corners False) and a zoo model (deep stem 128, lateral, True).
    config = load_config(PAPER / "ade20k_encnet_r50.yaml", ["model.backbone=resnet50v1c", "model.pretrained=none"])
    torch.manual_seed(11)
    suite_model = _perturb(build_model_for(config, 150), 11)
    path, _ = _zoo_file(zoo, "get_encnet_resnet50_pcontext", "encnet_resnet50_pcontext", seed=12)
    zoo_model = load_published(path, load_config(PAPER / "pcontext_encnet_r50.yaml")).model.double().eval()
    for n, model in enumerate((suite_model, zoo_model)):
        theirs = _mmseg_from_export(export_mmseg(model))
        x = _image(seed=20 + n)
        with torch.no_grad():
            mine = model(x, all_heads=True)
        for key, value in _mmseg_outputs(theirs, x).items():
            _assert_same(getattr(mine, key), value)


def _mmseg_from_export(exported: dict) -> nn.Module:
    """mmseg's EncNet built with the export's settings, the file (through torch.save) loaded strictly."""
    meta = exported["meta"]["encnet_repro"]
    theirs = _mmseg_model(0, lateral=meta["decode_head"]["add_lateral"], num_classes=meta["decode_head"]["num_classes"],
                          stem_channels=meta["backbone"]["stem_channels"])
    theirs.decode_head.align_corners = meta["decode_head"]["align_corners"]
    theirs.auxiliary_head.align_corners = meta["auxiliary_head"]["align_corners"]
    buffer = io.BytesIO()
    torch.save(exported, buffer)
    buffer.seek(0)
    theirs.load_state_dict(torch.load(buffer, weights_only=True)["state_dict"], strict=True)
    return theirs.double().eval()


def test_export_refuses_paper_attention_which_mmseg_cannot_run(peers):
    """mmseg's EncHead always computes ReLU(x + x⊗γ): the paper's x⊗γ model is refused. Why, from mmseg itself:
    the same tensors exported from the release-attention twin run in mmseg as that twin, not as the paper model."""
    sets = ["model.backbone=resnet50v1c", "model.pretrained=none"]
    paper = load_config(PAPER / "ade20k_encnet_r50.yaml", [*sets, "model.attention=paper"])
    torch.manual_seed(13)
    model = _perturb(build_model_for(paper, 150), 13)
    with pytest.raises(PublishedWeightsError, match="attention"):
        export_mmseg(model)
    twin = _perturb(build_model_for(load_config(PAPER / "ade20k_encnet_r50.yaml", sets), 150), 13)
    twin.load_state_dict(model.state_dict(), strict=True)  # attention has no tensors: same weights, other forward
    theirs = _mmseg_from_export(export_mmseg(twin))
    x = _image(seed=40)
    with torch.no_grad():
        expected, paper_out = _mmseg_outputs(theirs, x)["out"], model(x).out
        _assert_same(twin(x).out, expected)
    assert _relative(paper_out, expected) > 1e-2  # mmseg's forward of the weights is not the paper model's


def test_rescaled_sizes_equal_mmcv(peers):
    import mmcv

    for h, w in [(300, 400), (512, 683), (100, 3000), (375, 500), (1024, 1024), (61, 45)]:
        for ratio in PAPER_MS_SCALES:
            new_w, new_h = mmcv.rescale_size((w, h), (int(2048 * ratio), int(512 * ratio)))
            assert mmseg_rescaled_size(h, w, ratio=ratio) == (new_h, new_w), (h, w, ratio)


def test_mmseg_protocol_views_are_mmcv_imrescale_within_a_grey_level(peers):
    """mmseg rescales the uint8 image with OpenCV (``mmcv.imrescale``, in ``Resize``) before normalising; the
    protocol rescales the normalised tensor. What the model is fed, turned back into grey levels, must be OpenCV's
    up to its uint8 rounding and fixed-point weights (under one level), at mmcv's sizes, at the real 2048×512 bound."""
    import mmcv

    from encnet.engine.protocols import MMSEG_ADE_SCALE

    mean = torch.tensor(MEAN, dtype=torch.float64).view(1, 3, 1, 1) * 255
    std = torch.tensor(STD, dtype=torch.float64).view(1, 3, 1, 1) * 255
    for n, (h, w) in enumerate([(61, 45), (375, 500)]):
        pixels = np.random.default_rng(n).integers(0, 256, (h, w, 3), dtype=np.uint8)  # noise: the hardest case
        image = (torch.from_numpy(pixels).permute(2, 0, 1)[None].double() - mean) / std
        seen = []
        mmseg_logits(lambda x: seen.append(x) or x, image, ratios=PAPER_MS_SCALES, flip=False, mode="whole")
        assert len(seen) == len(PAPER_MS_SCALES)
        for ratio, view in zip(PAPER_MS_SCALES, seen):
            theirs = mmcv.imrescale(pixels, (int(MMSEG_ADE_SCALE[0] * ratio), int(MMSEG_ADE_SCALE[1] * ratio)))
            ours = (view * std + mean)[0].permute(1, 2, 0).numpy()
            assert ours.shape == theirs.shape, (h, w, ratio)
            assert np.abs(ours - theirs).max() < 1.0, (h, w, ratio, np.abs(ours - theirs).max())


@pytest.mark.parametrize("mode", ["whole", "slide"])
def test_mmseg_protocol_equals_predict_and_seg_tta_merge(runner_checkpoint, mode):
    """mmseg's own ``predict`` per view (it un-flips and resizes to the original) and ``SegTTAModel.merge_preds``
    against the suite's ``mmseg`` protocol, at a small (long, short) bound and crop so that CPU float64 is quick."""
    from mmengine.config import ConfigDict
    from mmseg.models import SegTTAModel
    from mmseg.structures import SegDataSample

    theirs = runner_checkpoint.model
    ours = load_published(runner_checkpoint.path, load_config(PAPER / "ade20k_encnet_r50.yaml"),
                          source="mmseg").model.double().eval()
    scale, crop, stride = (96, 48), (40, 40), (27, 27)
    theirs.test_cfg = ConfigDict(mode=mode, crop_size=crop, stride=stride)
    image = _image(seed=30, height=45, width=61)
    h, w = image.shape[2:]
    views = []
    with torch.no_grad():
        for ratio in PAPER_MS_SCALES:
            resized = torch.nn.functional.interpolate(image, size=mmseg_rescaled_size(h, w, scale, ratio),
                                                      mode="bilinear", align_corners=False)
            for flip in (False, True):
                meta = dict(ori_shape=(h, w), img_shape=tuple(resized.shape[2:]), pad_shape=tuple(resized.shape[2:]),
                            flip=flip, flip_direction="horizontal" if flip else None, img_path=f"view{len(views)}")
                views.append(theirs.predict(resized.flip(-1) if flip else resized, [SegDataSample(metainfo=meta)])[0])
        merged = SegTTAModel(module=theirs).merge_preds([views])[0].pred_sem_seg.data
        probs = sum(v.seg_logits.data.softmax(0) for v in views) / len(views)  # what merge_preds averages
        mine = mmseg_logits(ours, image, ratios=PAPER_MS_SCALES, flip=True, mode=mode, scale=scale, crop=crop,
                            stride=stride)
    _assert_same(mine, probs[None], 1e-12)
    assert torch.equal(mine.argmax(1), merged)  # merge_preds keeps a 1×H×W label map


def test_evaluate_cli_on_a_runner_checkpoint(runner_checkpoint, tmp_path, monkeypatch, capsys):
    """``python -m encnet.evaluate --weights F --source mmseg`` end to end on the Runner's file (the mmseg
    protocol at a small bound: the real 2048×512 one would take minutes per image on a CPU)."""
    from dataclasses import replace

    from data_fixtures import ade20k
    from encnet.engine import protocols
    from encnet.engine.evaluate import main

    ade20k(tmp_path / "data")
    small = replace(protocols.PROTOCOLS["mmseg"], mmseg={**protocols.PROTOCOLS["mmseg"].mmseg, "scale": [32, 16],
                                                         "ratios": [1.0]})
    monkeypatch.setitem(protocols.PROTOCOLS, "mmseg", small)
    out = tmp_path / "eval"
    rc = main(["--weights", str(runner_checkpoint.path), "--source", "mmseg", "--config",
               str(PAPER / "ade20k_encnet_r50.yaml"), "--out-dir", str(out), "--device", "cpu",
               "--set", f"data.root={tmp_path / 'data'}", "data.workers=0"])
    assert rc == 0, capsys.readouterr()
    record = __import__("json").loads((out / "eval.json").read_text())
    assert record["weights"]["source"] == "mmseg" and record["protocol"]["name"] == "mmseg"
    assert 0 <= record["mIoU"] <= 100 and not math.isnan(record["mIoU"])
