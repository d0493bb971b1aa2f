"""FCN/EncNet output tuples for every switch combination (on resnet_tiny), backbones and weights."""

import itertools
import urllib.error

import pytest
import torch
import torchvision
from torch import nn

from encnet.models import EncNet, FCN, SegmentationOutput, build_backbone, build_model
from encnet.nn import EncHead, EncModule, Encoding, FCNHead, SEHead, SyncBatchNorm, convert_sync_batchnorm

NUM_CLASSES = 5
SIZE = (50, 38)  # not a multiple of 8: the outputs must still come back at the input size

ENCNET_SWITCHES = itertools.product((True, False), (True, False), (True, False), ("release", "paper"))
COMBINATIONS = [("fcn", aux, None, None, None) for aux in (True, False)] + [
    ("encnet", *switches) for switches in ENCNET_SWITCHES
]


@pytest.fixture(autouse=True)
def two_threads():
    torch.set_num_threads(2)


@pytest.mark.parametrize("name,aux,se_loss,lateral,attention", COMBINATIONS)
def test_output_tuple_for_every_switch(name, aux, se_loss, lateral, attention):
    torch.manual_seed(0)
    kwargs = {} if name == "fcn" else dict(se_loss=se_loss, lateral=lateral, attention=attention)
    model = build_model(name, NUM_CLASSES, backbone="resnet_tiny", aux=aux, **kwargs)
    assert isinstance(model, FCN if name == "fcn" else EncNet)
    output = model(torch.randn(2, 3, *SIZE))
    assert isinstance(output, SegmentationOutput)
    assert output.out.shape == (2, NUM_CLASSES, *SIZE)
    assert (output.aux is not None) == aux
    if aux:
        assert output.aux.shape == (2, NUM_CLASSES, *SIZE)
    assert (output.se is not None) == bool(se_loss)
    if se_loss:
        assert output.se.shape == (2, NUM_CLASSES)
    if name == "encnet":
        assert hasattr(model.head, "fusion") == lateral
        assert model.head.enc_module.attention == attention

    backbone = {id(p) for p in model.backbone_parameters()}
    head = {id(p) for p in model.head_parameters()}
    assert backbone and head and not backbone & head
    assert backbone | head == {id(p) for p in model.parameters()}


@pytest.mark.parametrize("name,aux_head", [("fcn", "fcn"), ("encnet", "fcn"), ("encnet", "se")])
def test_eval_forward_runs_the_main_head_alone_unless_asked(name, aux_head):
    """Forward hooks count the calls of every head but the main one: training runs them all; an eval forward
    none (their outputs None, the main logits unchanged); an eval forward with all_heads=True all again."""
    torch.manual_seed(0)
    kwargs = {} if name == "fcn" else dict(aux_head=aux_head)
    model = build_model(name, NUM_CLASSES, backbone="resnet_tiny", aux=True, **kwargs)
    others = {"aux": model.aux_head}
    if name == "encnet":
        others["se"] = model.head.enc_module.se_layer
    calls = dict.fromkeys(others, 0)
    for key, module in others.items():
        module.register_forward_hook(lambda *_, key=key: calls.__setitem__(key, calls[key] + 1))
    fields = [f for f in ("aux", "se", "aux_se") if f != ("aux_se" if aux_head == "fcn" else "aux")]
    fields = fields if name == "encnet" else ["aux"]
    x = torch.randn(2, 3, *SIZE)

    model.train()
    trained = model(x)
    assert calls == dict.fromkeys(others, 1) and all(getattr(trained, f) is not None for f in fields)
    model.eval()
    with torch.no_grad():
        plain, asked = model(x), model(x, all_heads=True)
    assert calls == dict.fromkeys(others, 2)  # the plain eval forward ran none of them
    assert all(getattr(plain, f) is None for f in fields) and all(getattr(asked, f) is not None for f in fields)
    torch.testing.assert_close(plain.out, asked.out, rtol=0, atol=0)


def test_encnet_trains_end_to_end_with_syncbn_layers():
    torch.manual_seed(0)
    model = convert_sync_batchnorm(build_model("encnet", NUM_CLASSES, backbone="resnet_tiny", lateral=True))
    output = model(torch.randn(2, 3, 32, 32))
    (output.out.mean() + output.aux.mean() + output.se.mean()).backward()
    encoding = next(m for m in model.modules() if isinstance(m, Encoding))
    assert encoding.codewords.grad is not None and encoding.codewords.grad.abs().sum() > 0
    assert any(isinstance(m, SyncBatchNorm) for m in model.head.modules())


def test_enc_module_attention_formulas():
    torch.manual_seed(0)
    x = torch.randn(2, 8, 4, 4)
    release = EncModule(8, NUM_CLASSES, num_codes=4, attention="release").eval()
    paper = EncModule(8, NUM_CLASSES, num_codes=4, attention="paper").eval()
    paper.load_state_dict(release.state_dict())
    gamma = release.fc(release.encoding(x))[:, :, None, None]
    torch.testing.assert_close(release(x)[0], torch.relu(x + x * gamma))
    torch.testing.assert_close(paper(x)[0], x * gamma)
    with pytest.raises(ValueError, match="attention"):
        EncModule(8, NUM_CLASSES, attention="both")


# ------------------------------------------------------------------ K = 0 and the stage-3 SE module, by hand


def _randomise_batchnorms(module, generator):
    """Non-trivial running statistics and affine parameters, so that eval-mode BN is not the identity."""
    for bn in module.modules():
        if isinstance(bn, (nn.BatchNorm1d, nn.BatchNorm2d)):
            n = bn.num_features
            bn.running_mean.copy_(torch.randn(n, generator=generator, dtype=torch.float64) * 0.3)
            bn.running_var.copy_(torch.rand(n, generator=generator, dtype=torch.float64) + 0.5)
            bn.weight.data.copy_(torch.rand(n, generator=generator, dtype=torch.float64) + 0.5)
            bn.bias.data.copy_(torch.randn(n, generator=generator, dtype=torch.float64) * 0.1)


def _bn(y, bn, channel_dim):
    """Eval-mode BatchNorm written out: (y − μ) / √(σ² + ε) · w + b along ``channel_dim``."""
    shape = [1] * y.dim()
    shape[channel_dim] = -1
    view = lambda t: t.detach().reshape(shape)  # noqa: E731
    return (y - view(bn.running_mean)) / torch.sqrt(view(bn.running_var) + bn.eps) * view(bn.weight) + view(bn.bias)


def _hand_context_encoding(x, encoder):
    """e (B×C) of a ContextEncoder, written from the paper's formulas and PAPER.md §2 with naive tensors."""
    conv, bn = encoder[0][0], encoder[0][1]
    y = torch.einsum("oc,bchw->bohw", conv.weight.detach()[:, :, 0, 0], x)
    y = torch.clamp(_bn(y, bn, 1), min=0.0)
    if encoder.num_codes == 0:  # global average pooling in place of the Encoding Layer
        return y.mean(dim=(2, 3))
    encoding, bn1d = encoder[1], encoder[2]
    desc = y.flatten(2).transpose(1, 2)  # B×N×D
    residual = desc[:, :, None, :] - encoding.codewords.detach()[None, None]  # B×N×K×D
    weights = torch.softmax(encoding.scale.detach() * residual.pow(2).sum(-1), dim=2)  # over the K codewords
    encoded = (weights[..., None] * residual).sum(1)  # B×K×D
    encoded = torch.clamp(_bn(encoded, bn1d, 1), min=0.0)  # BatchNorm1d over K, then ReLU
    return encoded.mean(dim=1)


@pytest.mark.parametrize("attention", ["release", "paper"])
def test_k0_module_is_global_average_pooling_in_place_of_the_encoding_layer(attention):
    g = torch.Generator().manual_seed(3)
    channels = 6
    module = EncModule(channels, NUM_CLASSES, num_codes=0, attention=attention).double().eval()
    assert not any(isinstance(m, (Encoding, nn.BatchNorm1d)) for m in module.modules())
    _randomise_batchnorms(module, g)
    x = torch.randn(2, channels, 5, 4, generator=g, dtype=torch.float64)
    # The oracle: conv1×1-BN-ReLU, mean over the positions, then the module's γ and SE layers on that vector.
    w = module.encoding[0][0].weight.detach()[:, :, 0, 0]
    y = torch.clamp(_bn(torch.einsum("oc,bchw->bohw", w, x), module.encoding[0][1], 1), min=0.0)
    pooled = y.sum(dim=(2, 3)) / (5 * 4)
    fc, se_layer = module.fc[0], module.se_layer
    gamma = torch.sigmoid(pooled @ fc.weight.detach().T + fc.bias.detach())[:, :, None, None]
    expected = torch.clamp(x + x * gamma, min=0.0) if attention == "release" else x * gamma
    with torch.no_grad():
        out, se = module(x)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(se, pooled @ se_layer.weight.detach().T + se_layer.bias.detach())


def test_k0_encnet_builds_and_its_context_reads_every_position():
    torch.manual_seed(0)
    model = build_model("encnet", NUM_CLASSES, backbone="resnet_tiny", num_codes=0).eval()
    assert model.head.enc_module.encoding.num_codes == 0
    assert not any(isinstance(m, Encoding) for m in model.modules())
    feat = torch.randn(1, model.backbone.channels[3] // 4, 4, 4)
    changed = feat.clone()
    changed[..., 3, 3] += 5.0  # one position only: global pooling must carry it into γ and the SE logits
    with torch.no_grad():
        (a, se_a), (b, se_b) = model.head.enc_module(feat), model.head.enc_module(changed)
    assert (a[..., 0, 0] - b[..., 0, 0]).abs().max() > 1e-6 and (se_a - se_b).abs().max() > 1e-6
    with pytest.raises(ValueError, match="num_codes"):
        EncModule(8, NUM_CLASSES, num_codes=-1)


@pytest.mark.parametrize("num_codes", [0, 4])
def test_stage3_se_head_against_a_hand_computation(num_codes):
    g = torch.Generator().manual_seed(5)
    head = SEHead(6, NUM_CLASSES, num_codes=num_codes).double().eval()
    _randomise_batchnorms(head, g)
    x = torch.randn(2, 6, 4, 3, generator=g, dtype=torch.float64)
    se_layer = head.se_layer
    expected = _hand_context_encoding(x, head.encoding) @ se_layer.weight.detach().T + se_layer.bias.detach()
    with torch.no_grad():
        torch.testing.assert_close(head(x), expected)


@pytest.mark.parametrize("aux_head", ["fcn", "se"])
def test_aux_head_fcn_gives_aux_logits_se_gives_stage3_se_logits(aux_head):
    torch.manual_seed(0)
    model = build_model("encnet", NUM_CLASSES, backbone="resnet_tiny", aux_head=aux_head)
    x = torch.randn(2, 3, *SIZE)
    output = model(x)
    assert output.out.shape == (2, NUM_CLASSES, *SIZE) and output.se.shape == (2, NUM_CLASSES)
    if aux_head == "fcn":
        assert isinstance(model.aux_head, FCNHead) and output.aux_se is None
        assert output.aux.shape == (2, NUM_CLASSES, *SIZE)
        return
    assert isinstance(model.aux_head, SEHead) and output.aux is None
    assert output.aux_se.shape == (2, NUM_CLASSES)
    c3 = model.backbone.channels[2]
    assert model.aux_head.encoding[0][0].in_channels == c3 and model.aux_head.se_layer.in_features == c3
    model.eval()
    with torch.no_grad():  # it reads layer3: the stage-3 features, not the head's
        torch.testing.assert_close(model(x, all_heads=True).aux_se, model.aux_head(model.backbone(x)[2]))
    # Trained by its SE-loss alone, every parameter of the module gets a gradient (DDP needs no unused ones).
    model.train()
    model(x).aux_se.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.aux_head.parameters())
    assert {id(p) for p in model.aux_head.parameters()} <= {id(p) for p in model.head_parameters()}


def test_stage3_se_head_needs_the_se_loss():
    with pytest.raises(ValueError, match="se_loss"):
        build_model("encnet", NUM_CLASSES, backbone="resnet_tiny", aux_head="se", se_loss=False)
    model = build_model("encnet", NUM_CLASSES, backbone="resnet_tiny", aux=False, aux_head="se", se_loss=False)
    assert model.aux_head is None
    with pytest.raises(ValueError, match="aux_head"):
        build_model("encnet", NUM_CLASSES, backbone="resnet_tiny", aux_head="psp")


def test_paper_head_widths():
    head = EncHead(2048, 59, lateral=True, lateral_in_channels=(512, 1024))
    assert head.conv5[0].weight.shape == (512, 2048, 3, 3)
    assert [c[0].weight.shape[:2] for c in head.connect] == [(512, 512), (512, 1024)]
    assert head.enc_module.encoding[1].codewords.shape == (32, 512)
    assert head.classifier[1].weight.shape == (59, 512, 1, 1)


@pytest.mark.parametrize(
    "kwargs", [dict(lateral=True), dict(num_codes=16), dict(attention="paper"), dict(aux_head="se")]
)
def test_fcn_rejects_encnet_switches(kwargs):
    with pytest.raises(ValueError, match="fcn"):
        build_model("fcn", NUM_CLASSES, backbone="resnet_tiny", **kwargs)


def test_unknown_names():
    with pytest.raises(ValueError, match="encnet"):
        build_model("pspnet", NUM_CLASSES, backbone="resnet_tiny")
    with pytest.raises(ValueError, match="resnet_tiny"):
        build_backbone("resnet18")


def strides(backbone, size=64):
    features = backbone(torch.randn(1, 3, size, size))
    return [size // f.shape[-1] for f in features], [f.shape[1] for f in features]


def test_resnet50_output_stride_8():
    backbone = build_backbone("resnet50").eval()
    with torch.no_grad():
        assert strides(backbone) == ([4, 8, 8, 8], [256, 512, 1024, 2048])
    assert backbone.channels == (256, 512, 1024, 2048)
    assert backbone.layer4[0].conv2.dilation == (2, 2) and backbone.layer4[1].conv2.dilation == (4, 4)


def test_resnet50s_deep_stem():
    backbone = build_backbone("resnet50s").eval()
    convs = [m for m in backbone.conv1 if isinstance(m, nn.Conv2d)]
    assert [tuple(c.weight.shape) for c in convs] == [(64, 3, 3, 3), (64, 64, 3, 3), (128, 64, 3, 3)]
    with torch.no_grad():
        assert strides(backbone) == ([4, 8, 8, 8], [256, 512, 1024, 2048])


def test_resnet_tiny_output_stride_8():
    backbone = build_backbone("resnet_tiny")
    assert strides(backbone) == ([4, 8, 8, 8], list(backbone.channels))


def test_resnet_tiny_deep_deepens_stage_3_only_as_r101_does():
    tiny, deep = build_backbone("resnet_tiny"), build_backbone("resnet_tiny_deep")
    assert [len(getattr(deep, f"layer{i}")) for i in range(1, 5)] == [1, 1, 3, 1]
    assert [len(getattr(tiny, f"layer{i}")) for i in range(1, 5)] == [1, 1, 1, 1]
    assert strides(deep) == ([4, 8, 8, 8], list(tiny.channels)) and deep.channels == tiny.channels
    # The added blocks keep stage 3's dilation (2), as in torchvision's dilated ResNet-101.
    assert all(block.conv2.dilation == (2, 2) for block in list(deep.layer3)[1:])


def test_imagenet_weights_unavailable_says_what_to_do(monkeypatch, tmp_path):
    def offline(self, *args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty torchvision cache
    monkeypatch.setattr(torchvision.models.ResNet50_Weights, "get_state_dict", offline)
    with pytest.raises(FileNotFoundError, match="could not download.*pre-seed .*resnet50-0676ba61.pth.*"
                                                "--pretrained-dir") as err:
        build_backbone("resnet50", pretrained="imagenet")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name,why", [("resnet50s", "torchvision has no ImageNet weights for the release's deep stem"),
                                      ("resnet_tiny", "no ImageNet weights exist for backbone 'resnet_tiny'")])
def test_no_imagenet_weights_for_custom_backbones(name, why):
    with pytest.raises(FileNotFoundError, match=why):
        build_backbone(name, pretrained="imagenet")


def test_missing_local_weights_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.pretrained=none"):
        build_backbone("resnet_tiny", pretrained=str(tmp_path / "absent.pth"))


def test_local_torchvision_state_dict_loads(tmp_path):
    torch.manual_seed(0)
    source = torchvision.models.resnet50()  # torchvision's own layout, classifier included
    path = tmp_path / "resnet50.pth"
    torch.save(source.state_dict(), path)
    backbone = build_backbone("resnet50", pretrained=str(path))
    torch.testing.assert_close(backbone.layer3[2].conv2.weight, source.layer3[2].conv2.weight, rtol=0, atol=0)
    torch.testing.assert_close(backbone.bn1.running_var, source.bn1.running_var, rtol=0, atol=0)
    with pytest.raises(FileNotFoundError, match="does not fit backbone resnet_tiny"):
        build_backbone("resnet_tiny", pretrained=str(path))


def test_fcn_accepts_se_loss_false():
    # se_loss=False states what FCN is (no SE head); the engine resolves FCN configs to it.
    model = build_model("fcn", 5, backbone="resnet_tiny", se_loss=False)
    assert model(torch.randn(1, 3, 32, 32)).se is None
