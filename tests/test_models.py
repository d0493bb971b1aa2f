"""FCN/EncNet output tuples for every switch combination (on resnet_tiny), backbones and weights."""

import itertools
import urllib.error

import pytest
import torch
import torchvision
from torch import nn

from encnet.models import EncNet, FCN, SegmentationOutput, build_backbone, build_model
from encnet.nn import EncHead, EncModule, Encoding, SyncBatchNorm, convert_sync_batchnorm

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
    gamma = release.fc(release.encoding(x).mean(1))[:, :, None, None]
    torch.testing.assert_close(release(x)[0], torch.relu(x + x * gamma))
    torch.testing.assert_close(paper(x)[0], x * gamma)
    with pytest.raises(ValueError, match="attention"):
        EncModule(8, NUM_CLASSES, attention="both")


def test_paper_head_widths():
    head = EncHead(2048, 59, lateral=True, lateral_in_channels=(512, 1024))
    assert head.conv5[0].weight.shape == (512, 2048, 3, 3)
    assert [c[0].weight.shape[:2] for c in head.connect] == [(512, 512), (512, 1024)]
    assert head.enc_module.encoding[1].codewords.shape == (32, 512)
    assert head.classifier[1].weight.shape == (59, 512, 1, 1)


@pytest.mark.parametrize(
    "kwargs", [dict(lateral=True), dict(num_codes=16), dict(attention="paper")]
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


def test_imagenet_weights_unavailable_says_what_to_do(monkeypatch):
    def offline(self, *args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.models.ResNet50_Weights, "get_state_dict", offline)
    with pytest.raises(RuntimeError, match="could not fetch.*pretrained: none") as err:
        build_backbone("resnet50", pretrained="imagenet")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", ["resnet50s", "resnet_tiny"])
def test_no_imagenet_weights_for_custom_backbones(name):
    with pytest.raises(ValueError, match="no ImageNet weights.*pretrained: none"):
        build_backbone(name, pretrained="imagenet")


def test_missing_local_weights_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="pretrained: none"):
        build_backbone("resnet_tiny", pretrained=str(tmp_path / "absent.pth"))


def test_local_torchvision_state_dict_loads(tmp_path):
    torch.manual_seed(0)
    source = torchvision.models.resnet50()  # torchvision's own layout, classifier included
    path = tmp_path / "resnet50.pth"
    torch.save(source.state_dict(), path)
    backbone = build_backbone("resnet50", pretrained=str(path))
    torch.testing.assert_close(backbone.layer3[2].conv2.weight, source.layer3[2].conv2.weight, rtol=0, atol=0)
    torch.testing.assert_close(backbone.bn1.running_var, source.bn1.running_var, rtol=0, atol=0)
    with pytest.raises(ValueError, match="does not match backbone resnet_tiny"):
        build_backbone("resnet_tiny", pretrained=str(path))


def test_fcn_accepts_se_loss_false():
    # se_loss=False states what FCN is (no SE head); the engine resolves FCN configs to it.
    model = build_model("fcn", 5, backbone="resnet_tiny", se_loss=False)
    assert model(torch.randn(1, 3, 32, 32)).se is None
