"""Published weights: each source's layout re-created here (written from reading the release at v0.5.0 and
mmsegmentation's EncHead/ResNetV1c), loaded strictly, and the suite's forward checked in float64 against a
functional forward written from the sources' equations over the source's own tensors."""

from __future__ import annotations

import io
import math
import zipfile
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from encnet.engine.config import load_config
from encnet.models import EncNet, FCN
from encnet.models.backbones import tiny_resnet
from encnet.engine import published_weights as pub
from encnet.engine.published_weights import (PublishedWeightsError, export_mmseg, load_published, load_state,
                                            read_checkpoint)
from encnet.engine.protocols import mmseg_logits, mmseg_rescaled_size, mmseg_slide_windows

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "published"
EPS = 1e-5

# Miniature widths: the mapping is by name, so any width exercises it; ResNet-50's real layout is checked below.
PLANES, BLOCKS = (2, 4, 8, 16), (1, 1, 2, 2)
RELEASE_STEM, V1C_STEM = (8, 8, 16), (4, 4, 8)
NUM_CLASSES, K = 5, 4

# ------------------------------------------------------------------------------------- layout re-creations


class _Layout:
    """A state dict being written module by module with random tensors (float64)."""

    def __init__(self, seed: int, track: bool = True, shapes_only: bool = False):
        self.sd: dict[str, torch.Tensor] = {}
        self.g = torch.Generator().manual_seed(seed)
        self.track, self.shapes_only = track, shapes_only

    def _rand(self, *shape, scale=1.0, offset=0.0):
        if self.shapes_only:  # full-size layouts: only names and shapes are checked
            return torch.zeros(*shape, dtype=torch.float32)
        return torch.randn(*shape, generator=self.g, dtype=torch.float64) * scale + offset

    def conv(self, name, cin, cout, k, bias=False):
        self.sd[f"{name}.weight"] = self._rand(cout, cin, k, k, scale=1.0 / math.sqrt(cin * k * k))
        if bias:
            self.sd[f"{name}.bias"] = self._rand(cout, scale=0.1)

    def bn(self, name, c):
        self.sd[f"{name}.weight"] = self._rand(c, scale=0.2, offset=1.0)
        self.sd[f"{name}.bias"] = self._rand(c, scale=0.1)
        self.sd[f"{name}.running_mean"] = self._rand(c, scale=0.1)
        self.sd[f"{name}.running_var"] = self._rand(c).abs() + 0.5
        if self.track:
            self.sd[f"{name}.num_batches_tracked"] = torch.tensor(7)

    def linear(self, name, cin, cout):
        self.sd[f"{name}.weight"] = self._rand(cout, cin, scale=1.0 / math.sqrt(cin))
        self.sd[f"{name}.bias"] = self._rand(cout, scale=0.1)

    def encoding(self, name, c, k):
        self.sd[f"{name}.codewords"] = self._rand(k, c, scale=0.5)
        self.sd[f"{name}.scale"] = -self._rand(k, scale=0.1).abs() - 0.01


def _resnet_layers(lay: _Layout, prefix: str, inplanes: int, planes=PLANES, blocks=BLOCKS) -> None:
    # encoding/dilated/resnet.py Bottleneck: conv1 1×1, bn1, conv2 3×3, bn2, conv3 1×1 (×4), bn3, downsample.{0,1}
    for i, (p, n) in enumerate(zip(planes, blocks), start=1):
        for j in range(n):
            name = f"{prefix}layer{i}.{j}"
            lay.conv(f"{name}.conv1", inplanes, p, 1), lay.bn(f"{name}.bn1", p)
            lay.conv(f"{name}.conv2", p, p, 3), lay.bn(f"{name}.bn2", p)
            lay.conv(f"{name}.conv3", p, 4 * p, 1), lay.bn(f"{name}.bn3", 4 * p)
            if j == 0:
                lay.conv(f"{name}.downsample.0", inplanes, 4 * p, 1), lay.bn(f"{name}.downsample.1", 4 * p)
            inplanes = 4 * p


def release_state(kind="encnet", lateral=True, se=True, aux=True, stem=RELEASE_STEM, planes=PLANES, blocks=BLOCKS,
                  num_classes=NUM_CLASSES, k=K, seed=0, track=True, shapes_only=False) -> dict:
    """The release's EncNet/FCN (v0.5.0 base.py + encnet.py/fcn.py + dilated/resnet.py deep_base) state dict."""
    lay = _Layout(seed, track, shapes_only)
    w0, w1, w2 = stem
    lay.conv("pretrained.conv1.0", 3, w0, 3), lay.bn("pretrained.conv1.1", w0)
    lay.conv("pretrained.conv1.3", w0, w1, 3), lay.bn("pretrained.conv1.4", w1)
    lay.conv("pretrained.conv1.6", w1, w2, 3), lay.bn("pretrained.bn1", w2)
    _resnet_layers(lay, "pretrained.", w2, planes, blocks)
    c2, c3, c4 = 4 * planes[1], 4 * planes[2], 4 * planes[3]
    lay.linear("pretrained.fc", c4, 10)
    if kind == "fcn":
        lay.conv("head.conv5.0", c4, c4 // 4, 3), lay.bn("head.conv5.1", c4 // 4)
        lay.conv("head.conv5.4", c4 // 4, num_classes, 1, bias=True)
    else:
        mid = c4 // 4
        lay.conv("head.conv5.0", c4, mid, 3), lay.bn("head.conv5.1", mid)
        if lateral:
            lay.conv("head.connect.0.0", c2, mid, 1), lay.bn("head.connect.0.1", mid)
            lay.conv("head.connect.1.0", c3, mid, 1), lay.bn("head.connect.1.1", mid)
            lay.conv("head.fusion.0", 3 * mid, mid, 3), lay.bn("head.fusion.1", mid)
        lay.conv("head.encmodule.encoding.0", mid, mid, 1), lay.bn("head.encmodule.encoding.1", mid)
        lay.encoding("head.encmodule.encoding.3", mid, k), lay.bn("head.encmodule.encoding.4", k)
        lay.linear("head.encmodule.fc.0", mid, mid)
        if se:
            lay.linear("head.encmodule.selayer", mid, num_classes)
        lay.conv("head.conv6.1", mid, num_classes, 1, bias=True)
    if aux:
        lay.conv("auxlayer.conv5.0", c3, c3 // 4, 3), lay.bn("auxlayer.conv5.1", c3 // 4)
        lay.conv("auxlayer.conv5.4", c3 // 4, num_classes, 1, bias=True)
    return lay.sd


def mmseg_state(lateral=True, se=True, aux=True, stem=V1C_STEM, planes=PLANES, blocks=BLOCKS,
                num_classes=NUM_CLASSES, k=K, seed=1, shapes_only=False) -> dict:
    """mmsegmentation's EncoderDecoder(ResNetV1c, EncHead, FCNHead aux) state dict."""
    lay = _Layout(seed, shapes_only=shapes_only)
    w0, w1, w2 = stem
    lay.conv("backbone.stem.0", 3, w0, 3), lay.bn("backbone.stem.1", w0)
    lay.conv("backbone.stem.3", w0, w1, 3), lay.bn("backbone.stem.4", w1)
    lay.conv("backbone.stem.6", w1, w2, 3), lay.bn("backbone.stem.7", w2)
    _resnet_layers(lay, "backbone.", w2, planes, blocks)
    c2, c3, c4 = 4 * planes[1], 4 * planes[2], 4 * planes[3]
    mid = c4 // 4
    lay.conv("decode_head.conv_seg", mid, num_classes, 1, bias=True)
    lay.conv("decode_head.bottleneck.conv", c4, mid, 3), lay.bn("decode_head.bottleneck.bn", mid)
    if lateral:
        lay.conv("decode_head.lateral_convs.0.conv", c2, mid, 1), lay.bn("decode_head.lateral_convs.0.bn", mid)
        lay.conv("decode_head.lateral_convs.1.conv", c3, mid, 1), lay.bn("decode_head.lateral_convs.1.bn", mid)
        lay.conv("decode_head.fusion.conv", 3 * mid, mid, 3), lay.bn("decode_head.fusion.bn", mid)
    lay.conv("decode_head.enc_module.encoding_project.conv", mid, mid, 1)
    lay.bn("decode_head.enc_module.encoding_project.bn", mid)
    lay.encoding("decode_head.enc_module.encoding.0", mid, k), lay.bn("decode_head.enc_module.encoding.1", k)
    lay.linear("decode_head.enc_module.fc.0", mid, mid)
    if se:
        lay.linear("decode_head.se_layer", mid, num_classes)
    if aux:
        lay.conv("auxiliary_head.conv_seg", c3 // 4, num_classes, 1, bias=True)
        lay.conv("auxiliary_head.convs.0.conv", c3, c3 // 4, 3), lay.bn("auxiliary_head.convs.0.bn", c3 // 4)
    return lay.sd


# --------------------------------------------------------------------- independent forward (the equations)


def _bn(x, sd, name):
    shape = (1, -1) + (1,) * (x.dim() - 2)
    mean, var = sd[f"{name}.running_mean"].view(shape), sd[f"{name}.running_var"].view(shape)
    return (x - mean) / torch.sqrt(var + EPS) * sd[f"{name}.weight"].view(shape) + sd[f"{name}.bias"].view(shape)


def _conv(x, sd, name, stride=1, dilation=1):
    w = sd[f"{name}.weight"]
    return F.conv2d(x, w, sd.get(f"{name}.bias"), stride=stride, padding=dilation * (w.shape[-1] // 2),
                    dilation=dilation)


def _linear(e, sd, name):
    return e @ sd[f"{name}.weight"].t() + sd[f"{name}.bias"]


def _backbone(x, sd, stem_names, prefix, blocks=BLOCKS):
    (c0, b0), (c1, b1), (c2, b2) = stem_names
    x = F.relu(_bn(_conv(x, sd, prefix + c0, stride=2), sd, prefix + b0))
    x = F.relu(_bn(_conv(x, sd, prefix + c1), sd, prefix + b1))
    x = F.relu(_bn(_conv(x, sd, prefix + c2), sd, prefix + b2))
    x = F.max_pool2d(x, 3, 2, 1)
    feats = []
    # dilated/resnet.py _make_layer: layer2 stride 2; layer3 dilation 2 (first block 1); layer4 dilation 4
    # (first block 2); the stride sits on conv2 (3×3)
    for i, n in enumerate(blocks, start=1):
        for j in range(n):
            name = f"{prefix}layer{i}.{j}"
            stride = 2 if (i == 2 and j == 0) else 1
            dilation = {1: 1, 2: 1, 3: 2, 4: 4}[i] if j > 0 else {1: 1, 2: 1, 3: 1, 4: 2}[i]
            out = F.relu(_bn(_conv(x, sd, f"{name}.conv1"), sd, f"{name}.bn1"))
            out = F.relu(_bn(_conv(out, sd, f"{name}.conv2", stride, dilation), sd, f"{name}.bn2"))
            out = _bn(_conv(out, sd, f"{name}.conv3"), sd, f"{name}.bn3")
            if j == 0:
                x = _bn(_conv(x, sd, f"{name}.downsample.0", stride), sd, f"{name}.downsample.1")
            x = F.relu(out + x)
        feats.append(x)
    return feats


def _encoding_naive(x, codewords, scale):
    """e_k = Σ_i a_ik (x_i − c_k), a_ik = softmax_k(s_k ‖x_i − c_k‖²) (the release's sign: s_k < 0)."""
    flat = x.flatten(2).transpose(1, 2)  # B×N×D
    residual = flat[:, :, None, :] - codewords[None, None]  # B×N×K×D
    assign = torch.softmax(scale * residual.pow(2).sum(-1), dim=2)
    return (assign[..., None] * residual).sum(1)  # B×K×D


def _enc_module(feat, sd, conv, bn, enc, bn1d, fc, se):
    proj = F.relu(_bn(_conv(feat, sd, conv), sd, bn))
    e = F.relu(_bn(_encoding_naive(proj, sd[f"{enc}.codewords"], sd[f"{enc}.scale"]), sd, bn1d)).mean(1)
    gamma = torch.sigmoid(_linear(e, sd, fc))
    out = F.relu(feat + feat * gamma[:, :, None, None])
    return out, (_linear(e, sd, se) if f"{se}.weight" in sd else None)


def release_forward(sd, x, kind="encnet", align_corners=True):
    """The release's EncNet.forward / FCN.forward (v0.5.0) in evaluation mode, from its tensors."""
    stem = [("conv1.0", "conv1.1"), ("conv1.3", "conv1.4"), ("conv1.6", "bn1")]
    _, c2, c3, c4 = _backbone(x, sd, stem, "pretrained.")
    up = dict(size=x.shape[-2:], mode="bilinear", align_corners=align_corners)
    se = aux = None
    if kind == "fcn":
        out = _conv(F.relu(_bn(_conv(c4, sd, "head.conv5.0"), sd, "head.conv5.1")), sd, "head.conv5.4")
    else:
        feat = F.relu(_bn(_conv(c4, sd, "head.conv5.0"), sd, "head.conv5.1"))
        if "head.connect.0.0.weight" in sd:
            l2 = F.relu(_bn(_conv(c2, sd, "head.connect.0.0"), sd, "head.connect.0.1"))
            l3 = F.relu(_bn(_conv(c3, sd, "head.connect.1.0"), sd, "head.connect.1.1"))
            feat = F.relu(_bn(_conv(torch.cat([feat, l2, l3], 1), sd, "head.fusion.0"), sd, "head.fusion.1"))
        feat, se = _enc_module(feat, sd, "head.encmodule.encoding.0", "head.encmodule.encoding.1",
                               "head.encmodule.encoding.3", "head.encmodule.encoding.4", "head.encmodule.fc.0",
                               "head.encmodule.selayer")
        out = _conv(feat, sd, "head.conv6.1")
    if "auxlayer.conv5.0.weight" in sd:
        a = F.relu(_bn(_conv(c3, sd, "auxlayer.conv5.0"), sd, "auxlayer.conv5.1"))
        aux = F.interpolate(_conv(a, sd, "auxlayer.conv5.4"), **up)
    return F.interpolate(out, **up), aux, se


def mmseg_forward(sd, x):
    """mmsegmentation's EncoderDecoder.encode_decode (EncHead) + auxiliary FCNHead, from its tensors."""
    stem = [("stem.0", "stem.1"), ("stem.3", "stem.4"), ("stem.6", "stem.7")]
    _, c2, c3, c4 = _backbone(x, sd, stem, "backbone.")
    up = dict(size=x.shape[-2:], mode="bilinear", align_corners=False)

    def cm(t, name):  # ConvModule: conv, bn, ReLU
        return F.relu(_bn(_conv(t, sd, f"{name}.conv"), sd, f"{name}.bn"))

    feat = cm(c4, "decode_head.bottleneck")
    if "decode_head.fusion.conv.weight" in sd:
        laterals = [cm(c2, "decode_head.lateral_convs.0"), cm(c3, "decode_head.lateral_convs.1")]
        feat = cm(torch.cat([feat, *laterals], 1), "decode_head.fusion")
    p = "decode_head.enc_module"
    feat, se = _enc_module(feat, sd, f"{p}.encoding_project.conv", f"{p}.encoding_project.bn", f"{p}.encoding.0",
                           f"{p}.encoding.1", f"{p}.fc.0", "decode_head.se_layer")
    out = F.interpolate(_conv(feat, sd, "decode_head.conv_seg"), **up)
    aux = None
    if "auxiliary_head.conv_seg.weight" in sd:
        aux = F.interpolate(_conv(cm(c3, "auxiliary_head.convs.0"), sd, "auxiliary_head.conv_seg"), **up)
    return out, aux, se


# ------------------------------------------------------------------------------------------------ helpers


def _suite(kind="encnet", stem=RELEASE_STEM, lateral=True, se=True, aux=True):
    backbone = tiny_resnet(planes=PLANES, blocks=BLOCKS, stem_widths=stem)
    if kind == "fcn":
        model = FCN(backbone, NUM_CLASSES, aux=aux)
    else:
        model = EncNet(backbone, NUM_CLASSES, aux=aux, se_loss=se, lateral=lateral, num_codes=K)
    return model.double().eval()


def _image(seed=3, size=(21, 26)):
    return torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _assert_same(ours, theirs):
    out, aux, se = theirs
    torch.testing.assert_close(ours.out, out, rtol=0, atol=1e-5)
    for a, b in ((ours.aux, aux), (ours.se, se)):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def _fixture_keys(name: str) -> set[str]:
    params = {"conv": ["weight"], "conv+b": ["weight", "bias"], "linear": ["weight", "bias"],
              "bn": ["weight", "bias", "running_mean", "running_var"], "encoding": ["codewords", "scale"]}
    keys = set()
    for line in (FIXTURES / name).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            module, kind = line.split()
            keys |= {f"{module}.{p}" for p in params[kind]}
    return keys


def _head_keys(sd, backbone_prefix):
    return {k for k in sd if not k.startswith(backbone_prefix) and not k.endswith("num_batches_tracked")}


# -------------------------------------------------------------------------------------------------- tests


def test_recreations_match_the_expected_key_lists():
    assert _head_keys(release_state(), "pretrained.") == _fixture_keys("release_encnet_head.txt")
    assert _head_keys(release_state("fcn", aux=False), "pretrained.") == _fixture_keys("release_fcn_head.txt")
    assert _head_keys(mmseg_state(), "backbone.") == _fixture_keys("mmseg_encnet_head.txt")


@pytest.mark.parametrize("lateral", [True, False])
def test_release_encnet_forward_equals_the_release_equations(lateral):
    sd = release_state(lateral=lateral)
    model = _suite(lateral=lateral)
    report = load_state(model, sd, "pytorch-encoding")
    assert report.ignored == ["pretrained.fc.weight", "pretrained.fc.bias"]
    assert model.align_corners is True
    x = _image()
    with torch.no_grad():
        _assert_same(model(x, all_heads=True), release_forward(sd, x))


def test_release_fcn_forward_and_aux_head():
    sd = release_state("fcn", aux=True)
    model = _suite("fcn", aux=True)
    load_state(model, sd, "pytorch-encoding")
    x = _image(4)
    with torch.no_grad():
        _assert_same(model(x, all_heads=True), release_forward(sd, x, kind="fcn"))


@pytest.mark.parametrize("lateral", [True, False])
def test_mmseg_encnet_forward_equals_mmseg_equations(lateral):
    sd = mmseg_state(lateral=lateral)
    model = _suite(stem=V1C_STEM, lateral=lateral)
    model.align_corners = True  # load_state must set mmseg's False
    load_state(model, sd, "mmseg")
    assert model.align_corners is False
    x = _image(5)
    with torch.no_grad():
        _assert_same(model(x, all_heads=True), mmseg_forward(sd, x))


def test_align_corners_matters_so_the_equivalence_checks_it():
    sd = release_state()
    model = _suite()
    load_state(model, sd, "pytorch-encoding")
    x = _image()
    with torch.no_grad():
        assert (model(x).out - release_forward(sd, x, align_corners=False)[0]).abs().max() > 1e-3


def test_a_wrong_mapping_fails(monkeypatch):
    sd = release_state()
    # two BN modules of the same width swapped (longer prefixes win): loads strictly, the forward differs
    swapped = pub._RELEASE_RULES["encnet"] + [("head.conv5.1.", "head.connect.0.1."),
                                              ("head.connect.0.1.", "head.conv5.1.")]
    monkeypatch.setitem(pub._RELEASE_RULES, "encnet", swapped)
    model = _suite()
    load_state(model, sd, "pytorch-encoding")
    x = _image()
    with torch.no_grad():
        assert (model(x).out - release_forward(sd, x)[0]).abs().max() > 1e-3


def test_a_missing_scale_or_an_unmapped_tensor_is_an_error_naming_it():
    sd = release_state()
    del sd["head.encmodule.encoding.3.scale"]
    with pytest.raises(PublishedWeightsError, match=r"head\.enc_module\.encoding\.1\.scale"):
        load_state(_suite(), sd, "pytorch-encoding")
    sd = release_state()
    sd["head.encmodule.extra.weight"] = torch.zeros(3)
    with pytest.raises(PublishedWeightsError, match=r"head\.encmodule\.extra\.weight"):
        load_state(_suite(), sd, "pytorch-encoding")
    sd = mmseg_state()
    sd["decode_head.conv_seg.weight"] = sd["decode_head.conv_seg.weight"][:3]
    with pytest.raises(PublishedWeightsError, match=r"decode_head\.conv_seg\.weight"):
        load_state(_suite(stem=V1C_STEM), sd, "mmseg")


def test_release_files_without_num_batches_tracked_load_and_say_so():
    sd = release_state(track=False)
    report = load_state(_suite(), sd, "pytorch-encoding")
    assert report.filled and all(k.endswith("num_batches_tracked") for k in report.filled)
    assert "filled" in report.summary()


def test_export_mmseg_round_trips_and_matches_mmseg_equations():
    model = _suite(stem=V1C_STEM)
    load_state(model, mmseg_state(seed=9), "mmseg")
    exported = export_mmseg(model)
    assert exported["meta"]["encnet_repro"]["backbone"]["stem_channels"] == V1C_STEM[2]
    assert _head_keys(exported["state_dict"], "backbone.") == _fixture_keys("mmseg_encnet_head.txt")
    x = _image(6)
    with torch.no_grad():
        _assert_same(model(x, all_heads=True), mmseg_forward(exported["state_dict"], x))
    # the release's wider deep stem exports too (its bn1 becomes stem.7)
    released = _suite()
    load_state(released, release_state(), "pytorch-encoding")
    assert "backbone.stem.7.running_var" in export_mmseg(released)["state_dict"]
    with pytest.raises(PublishedWeightsError, match="only EncNet"):
        export_mmseg(_suite("fcn"))


def test_export_mmseg_refuses_what_mmseg_cannot_compute_and_keeps_align_corners():
    backbone = tiny_resnet(planes=PLANES, blocks=BLOCKS, stem_widths=V1C_STEM)
    paper = EncNet(backbone, NUM_CLASSES, aux=True, se_loss=True, lateral=True, num_codes=K, attention="paper")
    with pytest.raises(PublishedWeightsError, match="attention = 'paper'") as err:
        export_mmseg(paper)
    assert "\n" not in str(err.value)
    # a zoo model (align_corners=True, as the release upsampled) exports with its own setting; ours with False
    released = _suite()
    load_state(released, release_state(), "pytorch-encoding")
    heads = export_mmseg(released)["meta"]["encnet_repro"]
    assert heads["decode_head"]["align_corners"] is True and heads["auxiliary_head"]["align_corners"] is True
    assert export_mmseg(_suite(stem=V1C_STEM))["meta"]["encnet_repro"]["decode_head"]["align_corners"] is False


def test_real_resnet50_layouts_load_into_the_paper_configs(tmp_path):
    full = dict(planes=(64, 128, 256, 512), blocks=(3, 4, 6, 3), k=32, shapes_only=True)
    path = tmp_path / "encnet_resnet50s_pcontext-4de91d59.pth"
    # 2018 files: torch's legacy (non-zip) format
    torch.save(release_state(stem=(64, 64, 128), num_classes=59, **full), path, _use_new_zipfile_serialization=False)
    loaded = load_published(path, load_config(REPO / "configs/paper/pcontext_encnet_r50.yaml"))
    assert loaded.model_config.backbone == "resnet50s" and loaded.model_config.lateral is True
    assert loaded.report.config_changes["backbone"] == ("resnet50", "resnet50s")
    assert loaded.report.loaded == len(loaded.model.state_dict())
    assert loaded.model.align_corners is True

    path = tmp_path / "encnet_r50-d8_512x512_80k_ade20k_20200622_042412-44b46b04.pth"
    sd = mmseg_state(lateral=False, stem=(32, 32, 64), num_classes=150, **full)
    torch.save({"meta": {"CLASSES": ("wall", "building")}, "state_dict": sd}, path)
    loaded = load_published(path, load_config(REPO / "configs/paper/ade20k_encnet_r50.yaml"))
    assert loaded.report.source == "mmseg" and loaded.model_config.backbone == "resnet50v1c"
    assert loaded.num_classes == 150 and loaded.model.align_corners is False


_EXECUTED: list[int] = []


def _side_effect():
    _EXECUTED.append(1)
    return "ran"


class _HubLike:
    """Training metadata of a custom class, whose unpickling would run code."""

    def __reduce__(self):
        return (_side_effect, ())


def test_custom_classes_are_skipped_without_running_them(tmp_path):
    sd = {k: v.float() for k, v in mmseg_state().items()}
    path = tmp_path / "mm.pth"
    torch.save({"meta": {"message_hub": _HubLike()}, "state_dict": sd}, path)
    with pytest.raises(Exception):
        torch.load(path, weights_only=True)
    state, skipped = read_checkpoint(path)
    assert _EXECUTED == []
    assert len(skipped) == 1 and skipped[0].endswith("._side_effect")
    assert set(state) == set(sd) and all(torch.equal(state[k], sd[k]) for k in sd)



def test_a_real_state_dict_with_numpy_metadata_loads(tmp_path):
    """What mmengine's Runner writes: an OrderedDict state dict carrying ``_metadata`` (restored as an attribute)
    beside numpy scalars in ``meta``, which weights_only refuses; the tensors-only reader used to crash on it."""
    np = pytest.importorskip("numpy")
    conv = torch.nn.Conv2d(1, 1, 1)
    path = tmp_path / "iter_80000.pth"
    torch.save({"meta": {"seed": np.int64(0)}, "state_dict": conv.state_dict()}, path)
    state, skipped = read_checkpoint(path)
    assert set(state) == {"weight", "bias"} and torch.equal(state["weight"], conv.weight.detach())
    assert any("scalar" in name for name in skipped)


def _truncated(tmp_path):
    full = tmp_path / "full.pth"
    torch.save({"w": torch.zeros(100)}, full)
    return full.read_bytes()[:300]


def _two_pth_archive(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("a.pth", b"x"), z.writestr("b.pth", b"y")
    return buffer.getvalue()


@pytest.mark.parametrize("content", ["empty", "text", "truncated", "two_pth", "not_tensors", "list"])
def test_an_unreadable_file_is_one_line_naming_it(tmp_path, content):
    make = {"empty": lambda: b"", "text": lambda: b"<html>404 Not Found</html>\n",
            "truncated": lambda: _truncated(tmp_path), "two_pth": lambda: _two_pth_archive(tmp_path)}
    path = tmp_path / f"{content}.pth"
    if content == "not_tensors":
        torch.save({"state_dict": {"w": torch.zeros(1), "step": 3}}, path)
    elif content == "list":
        torch.save([torch.zeros(1)], path)
    else:
        path.write_bytes(make[content]())
    with pytest.raises(PublishedWeightsError) as err:
        read_checkpoint(path)
    message = str(err.value)
    assert "\n" not in message and path.name in message, message


def test_zoo_zip_archive(tmp_path):
    buffer = io.BytesIO()
    sd = {k: v.float() for k, v in release_state().items()}
    torch.save(sd, buffer)
    archive = tmp_path / "encnet_resnet50s_ade-07ac287c.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("encnet_resnet50s_ade-07ac287c.pth", buffer.getvalue())
    state, skipped = read_checkpoint(archive)
    assert skipped == [] and pub.detect_source(state) == "pytorch-encoding" and set(state) == set(sd)


# ------------------------------------------------------------------------------------------------ protocols


def test_mmseg_rescale_by_hand():
    # 300×400 into (2048, 512): factor min(2048/400, 512/300) = 1.70667 → 512 × 683
    assert mmseg_rescaled_size(300, 400) == (512, 683)
    # ratio 0.5: (1024, 256): factor 256/300 → 256 × round(341.33) = 341
    assert mmseg_rescaled_size(300, 400, ratio=0.5) == (256, 341)
    # a long thin image hits the long bound: 100×3000 → factor 2048/3000 → 68 × 2048
    assert mmseg_rescaled_size(100, 3000) == (68, 2048)


def test_mmseg_slide_grid_by_hand():
    # h 5, w 7, crop 4, stride 2: rows (5−4+1)//2+1 = 2, cols (7−4+1)//2+1 = 3; last windows shifted inside
    assert mmseg_slide_windows(5, 7, (4, 4), (2, 2)) == [
        (0, 4, 0, 4), (0, 4, 2, 6), (0, 4, 3, 7), (1, 5, 0, 4), (1, 5, 2, 6), (1, 5, 3, 7)]
    assert mmseg_slide_windows(3, 3, (4, 4), (2, 2)) == [(0, 3, 0, 3)]


def test_mmseg_accumulation_averages_probabilities_by_hand():
    # The image rises left to right; its mirror falls. The model answers logits (0, log 3) to the image and
    # (0, 0) to the mirror: probabilities (1/4, 3/4) and (1/2, 1/2), averaged (3/8, 5/8) — not softmax of the
    # averaged logits (0, log 3 / 2), which gives 1/(1+√3) ≈ 0.366 for class 0.
    def model(x):
        rising = (x[..., 0, -1] > x[..., 0, 0]).to(x.dtype)[:, 0]  # B
        second = rising[:, None, None] * math.log(3.0)
        return torch.stack([torch.zeros_like(x[:, 0]), second.expand_as(x[:, 0])], 1)

    image = torch.linspace(0, 1, 8, dtype=torch.float64).view(1, 1, 1, 8).expand(1, 3, 4, 8)
    probs = mmseg_logits(model, image, ratios=[1.0], flip=True, scale=(8, 4))
    torch.testing.assert_close(probs[0, :, 0, 0], torch.tensor([3 / 8, 5 / 8], dtype=torch.float64))
    probs = mmseg_logits(model, image, ratios=[1.0], flip=False, scale=(8, 4))
    torch.testing.assert_close(probs[0, :, 0, 0], torch.tensor([1 / 4, 3 / 4], dtype=torch.float64))


def test_release_protocol_preset_sets_the_release_eval_keys():
    from encnet.engine.protocols import PROTOCOLS, apply_protocol

    config = load_config(REPO / "configs/paper/ade20k_encnet_r50.yaml")
    if not hasattr(config.eval, "accumulate"):
        pytest.skip("eval.accumulate / eval.align_corners arrive with the evaluation-protocol branch (issue 12)")
    release = apply_protocol(config, "release")
    assert release.eval.accumulate == "release_exp_sum" and release.eval.align_corners is True
    assert release.eval.scales == [0.5, 0.75, 1.0, 1.25, 1.5, 1.75] and release.eval.flip is True
    assert apply_protocol(config, "suite") == config
    assert PROTOCOLS["mmseg"].mmseg["scale"] == [2048, 512]


def test_table_published_without_weights_lists_the_files(tmp_path, capsys):
    from encnet.report.published import CATALOGUE, main

    assert main(["--profile", "paper", "--weights-root", str(tmp_path / "none"), "--out-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for entry in CATALOGUE:
        assert entry.expected() in out
    assert "79.2" in out and "41.17" in out and "not found" in out
    assert not (tmp_path / "tables").exists()


# The authors' encoding/models/model_store.py, as each tag formats a download: today (c99b108 to HEAD ac74841)
# '{repo_url}models/{file_name}.zip' with repo_url 'https://s3.us-west-1.wasabisys.com/encoding' + '/' unless
# ENCODING_REPO is set; at v0.5.0 (f891919) '{repo_url}encoding/models/{file_name}.zip' with repo_url
# 'https://hangzh.s3.amazonaws.com/', the file names of its _model_sha1 (backbones resnet50/101).
ZOO_TODAY = "https://s3.us-west-1.wasabisys.com/encoding/models/{}.zip"
ZOO_V050 = "https://hangzh.s3.amazonaws.com/encoding/models/{}.zip"
V050_NAMES = {"encnet_resnet50s_pcontext-4de91d59": "encnet_resnet50_pcontext-4de91d59",
              "encnet_resnet101s_pcontext-9f27ea13": "encnet_resnet101_pcontext-9f27ea13",
              "encnet_resnet50s_ade-07ac287c": "encnet_resnet50_ade-07ac287c",
              "encnet_resnet101s_ade-3f54fa3b": "encnet_resnet101_ade-3f54fa3b"}


def test_every_zoo_row_gives_todays_address_first_and_v050s_second(monkeypatch):
    from encnet.report.published import CATALOGUE

    monkeypatch.delenv("ENCODING_REPO", raising=False)
    zoo = [entry for entry in CATALOGUE if entry.source == "pytorch-encoding"]
    assert len(zoo) == 5
    for entry in zoo:
        stem = entry.expected().removesuffix(".pth")
        addresses = entry.file.addresses()
        if stem in V050_NAMES:
            assert addresses == (ZOO_TODAY.format(stem), ZOO_V050.format(V050_NAMES[stem]))
            assert f"{V050_NAMES[stem]}.pth" in entry.files and f"{stem}.zip" in entry.files
        else:  # FCN_ResNet50s_ADE was retrained after v0.5.0, whose fcn_resnet50_ade-fc8c0b79 is another file
            assert stem == "fcn_resnet50s_ade-662e979d" and addresses == (ZOO_TODAY.format(stem),)
            assert "not in release v0.5.0" in entry.file.where()
    for entry in CATALOGUE:
        if entry.source == "mmseg":
            (address,) = entry.file.addresses()
            assert address.startswith("https://download.openmmlab.com/mmsegmentation/v0.5/encnet/")
            assert address.endswith(f"/{entry.expected()}")
    # the authors' override of the host, there as here
    monkeypatch.setenv("ENCODING_REPO", "https://mirror.example.org/encoding/")
    assert zoo[0].file.addresses()[0] == "https://mirror.example.org/encoding/models/encnet_resnet50s_pcontext-4de91d59.zip"


def test_the_download_table_of_the_docs_is_the_codes(monkeypatch):
    from encnet.engine.published_files import PUBLISHED_FILES

    monkeypatch.delenv("ENCODING_REPO", raising=False)
    rows = {}
    for line in (REPO / "docs" / "published_weights.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`") and cells[0].strip("`") in PUBLISHED_FILES:
            rows[cells[0].strip("`")] = [c.strip("<>") for c in cells[1:] if c.startswith("<")]
    zoo = {stem: f for stem, f in PUBLISHED_FILES.items() if f.mmseg_folder is None}
    assert set(rows) == set(zoo)
    for stem, published in zoo.items():
        assert tuple(rows[stem]) == published.addresses(), stem


def test_a_missing_published_file_names_the_file_the_folder_and_the_addresses(tmp_path, capsys, monkeypatch):
    from encnet.engine.evaluate import main
    from encnet.report.published import main as table_main

    monkeypatch.delenv("ENCODING_REPO", raising=False)
    stem = "encnet_resnet50s_pcontext-4de91d59"
    missing = tmp_path / "weights" / f"{stem}.pth"
    rc = main(["--weights", str(missing), "--source", "pytorch-encoding",
               "--config", str(REPO / "configs/paper/pcontext_encnet_r50.yaml")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1, err
    assert f"no checkpoint {stem}.pth in {missing.parent}" in err
    assert f"download it from {ZOO_TODAY.format(stem)} (release v0.5.0: {ZOO_V050.format(V050_NAMES[stem])})" in err
    # the published-weights table's "not found" rows say the same
    assert table_main(["--profile", "paper", "--weights-root", str(tmp_path / "weights"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("| EncNet_ResNet50s_PContext"))
    assert f"not found: {stem}.pth in {tmp_path / 'weights'}" in line
    assert line.index(ZOO_TODAY.format(stem)) < line.index(ZOO_V050.format(V050_NAMES[stem]))


def test_evaluate_cli_with_weights_and_no_run_folder(tmp_path, capsys, monkeypatch):
    """``python -m encnet.evaluate --weights`` on our own checkpoint (the demo's tiny EncNet), under the suite's
    protocol and mmseg's, writes eval.json with the protocol and the load report; --export mmseg writes a file
    that loads back as mmseg."""
    from encnet.engine.evaluate import main
    from encnet.engine.build import build_dataset_for, build_model_for, dataset_num_classes

    config_path = REPO / "configs/demo/context_scenes_encnet.yaml"
    sets = ["data.options.num_val=2", "data.options.num_train=2", f"data.root={tmp_path / 'data'}"]
    config = load_config(config_path, sets)
    # mmseg's 2048×512 bound would blow the 64² demo images up to 512²: a demo-sized bound, same code path
    from dataclasses import replace

    from encnet.engine import protocols

    small = replace(protocols.PROTOCOLS["mmseg"], mmseg={"ratios": [0.75, 1.0], "flip": True, "mode": "whole",
                                                         "scale": [64, 64]})
    monkeypatch.setitem(protocols.PROTOCOLS, "mmseg", small)
    torch.manual_seed(0)
    num_classes = dataset_num_classes(config, build_dataset_for(config, "val", train=False))
    model = build_model_for(config, num_classes)
    weights = tmp_path / "ours.pt"
    torch.save({"model": model.state_dict(), "epoch": 3}, weights)
    for protocol in ("suite", "mmseg"):
        out = tmp_path / protocol
        rc = main(["--weights", str(weights), "--source", "encnet", "--config", str(config_path), "--protocol",
                   protocol, "--out-dir", str(out), "--device", "cpu", "--set", *sets])
        assert rc == 0
        record = __import__("json").loads((out / "eval.json").read_text())
        assert record["protocol"]["name"] == protocol and record["weights"]["source"] == "encnet"
        assert 0 <= record["mIoU"] <= 100 and (out / "config.yaml").is_file()
        assert f"(protocol: {protocol})" in capsys.readouterr().out
    assert record["settings"]["accumulate"] == "softmax"
    exported = tmp_path / "ours_mmseg.pth"
    assert main(["--weights", str(weights), "--config", str(config_path), "--export", "mmseg",
                 "--export-to", str(exported)]) == 0
    state, skipped = read_checkpoint(exported)
    assert pub.detect_source(state) == "mmseg" and skipped == []
    copy = build_model_for(config, num_classes)
    load_state(copy, state, "mmseg")
    assert all(torch.equal(copy.state_dict()[k], v) for k, v in model.state_dict().items())


def test_export_cli_refuses_a_paper_attention_run_in_one_line(tmp_path, capsys):
    from encnet.engine.build import build_model_for
    from encnet.engine.config import to_yaml
    from encnet.engine.evaluate import main

    config = load_config(REPO / "configs/demo/context_scenes_encnet.yaml", ["model.attention=paper"])
    config_path = tmp_path / "config.yaml"
    config_path.write_text(to_yaml(config))
    weights = tmp_path / "checkpoint.pt"
    torch.save({"model": build_model_for(config, 5).state_dict(), "epoch": 1}, weights)
    out = tmp_path / "exported.pth"
    rc = main(["--weights", str(weights), "--config", str(config_path), "--export", "mmseg", "--export-to", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and not out.exists()
    assert err.count("\n") == 0 and "attention = 'paper'" in err
