"""Dilated ResNet backbones at output stride 8 (paper §3.2): ``build_backbone(name, pretrained)``.

Every backbone returns the four stage outputs (c1, c2, c3, c4) at strides 4, 8, 8, 8 and has a
``channels`` attribute with their widths. Stages 3 and 4 trade their stride for dilation 2 and 4, as
torchvision's ``replace_stride_with_dilation=[False, True, True]`` and the authors' release both do.

- ``resnet50`` / ``resnet101``: torchvision's ResNets (7×7 stem).
- ``resnet50s`` / ``resnet101s``: the authors' "deep stem" variant used by the released models:
  three 3×3 convs 3→64→64→128 replace the 7×7 conv, so layer1's first block takes 128 channels.
  Built from torchvision's ResNet by swapping the stem and the two convs of layer1's first block that
  read it. The stem's keys (``conv1.0``, ``conv1.1``, ``conv1.3``, ``conv1.4``, ``conv1.6``, ``bn1``)
  follow the release's layout. torchvision has no ImageNet weights for it.
- ``resnet50v1c`` / ``resnet101v1c``: mmsegmentation's ResNetV1c (the stem of its ``*-d8`` models): the same
  deep stem at half the width, 3→32→32→64, so layer1 reads 64 channels as in torchvision. Its third conv's BN
  and ReLU are this module's ``bn1``/``relu``, as in the release's deep stem.
- ``resnet_tiny``: the demo profile's CPU backbone: one torchvision Bottleneck per stage with widths
  32/64/128/256. torchvision's ``ResNet`` hard-codes the stage widths 64…512 (×4), so it is assembled
  here from the same Bottleneck blocks.
- ``resnet_tiny_deep``: ``resnet_tiny`` with three blocks in stage 3 instead of one; it plays R101 in the demo
  (R50 → R101 deepens only stage 3, 6 → 23 blocks), so the demo's "R101" rows are runs of their own.

``pretrained``: ``"none"``; ``"imagenet"`` (torchvision's files for resnet50/resnet101, the release's for the deep
stems, from ``pretrained_dir`` when given); or a path to a ``state_dict`` file in torchvision's ResNet layout (``fc.*``
keys are ignored). Where each is read from, and the check that a file fits the backbone: ``encnet.models.pretrained``.
"""

from __future__ import annotations

from torch import Tensor, nn
from torchvision.models import resnet50, resnet101
from torchvision.models.resnet import Bottleneck, conv1x1

from encnet.models.pretrained import check_state, fetch, locate

__all__ = ["ResNetFeatures", "build_backbone", "deep_stem", "tiny_resnet", "BACKBONES"]

_TORCHVISION = {"resnet50": resnet50, "resnet101": resnet101}
# name: (torchvision base, the deep stem's widths)
_DEEP_STEM = {
    "resnet50s": ("resnet50", (64, 64, 128)),
    "resnet101s": ("resnet101", (64, 64, 128)),
    "resnet50v1c": ("resnet50", (32, 32, 64)),
    "resnet101v1c": ("resnet101", (32, 32, 64)),
}
_TINY_BLOCKS = {"resnet_tiny": (1, 1, 1, 1), "resnet_tiny_deep": (1, 1, 3, 1)}
BACKBONES = (*_TORCHVISION, *_DEEP_STEM, *_TINY_BLOCKS)


class ResNetFeatures(nn.Module):
    """A ResNet without its classifier; ``forward`` returns (c1, c2, c3, c4).

    Attribute names equal torchvision's, so a torchvision ``state_dict`` minus ``fc.*`` loads as is.
    """

    def __init__(self, stem: nn.Module, bn1: nn.Module, layers: list[nn.Module], channels):
        super().__init__()
        self.conv1, self.bn1 = stem, bn1
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.channels = tuple(channels)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c1 = self.layer1(x)
        c2 = self.layer2(c1)
        c3 = self.layer3(c2)
        c4 = self.layer4(c3)
        return c1, c2, c3, c4


def _from_torchvision(net) -> ResNetFeatures:
    layers = [net.layer1, net.layer2, net.layer3, net.layer4]
    channels = [layer[-1].conv3.out_channels for layer in layers]
    return ResNetFeatures(net.conv1, net.bn1, layers, channels)


def _kaiming(conv: nn.Conv2d) -> nn.Conv2d:
    # torchvision's ResNet initialisation for the convs swapped in after construction.
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    return conv


def deep_stem(widths: tuple[int, int, int]) -> tuple[nn.Sequential, nn.BatchNorm2d]:
    """Three 3×3 convs 3→w0→w1→w2 (the first with stride 2) and the BN that follows the last one."""
    w0, w1, w2 = widths
    stem = nn.Sequential(
        _kaiming(nn.Conv2d(3, w0, 3, stride=2, padding=1, bias=False)),
        nn.BatchNorm2d(w0),
        nn.ReLU(inplace=True),
        _kaiming(nn.Conv2d(w0, w1, 3, padding=1, bias=False)),
        nn.BatchNorm2d(w1),
        nn.ReLU(inplace=True),
        _kaiming(nn.Conv2d(w1, w2, 3, padding=1, bias=False)),
    )
    return stem, nn.BatchNorm2d(w2)


def _deep_stem_resnet(base: str, widths: tuple[int, int, int]) -> ResNetFeatures:
    net = _TORCHVISION[base](weights=None, replace_stride_with_dilation=[False, True, True])
    net.conv1, net.bn1 = deep_stem(widths)
    first = net.layer1[0]
    if first.conv1.in_channels != widths[2]:
        first.conv1 = _kaiming(nn.Conv2d(widths[2], first.conv1.out_channels, 1, bias=False))
        first.downsample[0] = _kaiming(nn.Conv2d(widths[2], first.downsample[0].out_channels, 1, bias=False))
    return _from_torchvision(net)


def _tiny_stage(inplanes: int, planes: int, blocks: int, stride: int, dilation: int, previous: int):
    outplanes = planes * Bottleneck.expansion
    downsample = nn.Sequential(conv1x1(inplanes, outplanes, stride), nn.BatchNorm2d(outplanes))
    # As in torchvision's dilated stages, the first block keeps the previous stage's dilation.
    first = Bottleneck(inplanes, planes, stride, downsample, dilation=previous)
    rest = [Bottleneck(outplanes, planes, dilation=dilation) for _ in range(blocks - 1)]
    return nn.Sequential(first, *rest)


def tiny_resnet(planes=(8, 16, 32, 64), blocks=(1, 1, 1, 1), stem_width: int = 16,
                stem_widths: tuple[int, int, int] | None = None) -> ResNetFeatures:
    """A small dilated ResNet; ``stem_widths`` gives it a deep stem (the released and mmseg layouts, in miniature)."""
    if stem_widths is not None:
        stem_width = stem_widths[2]
    out = [p * Bottleneck.expansion for p in planes]
    inplanes = [stem_width, *out[:3]]
    strides, dilations = (1, 2, 1, 1), (1, 1, 2, 4)
    previous = (1, 1, 1, 2)
    layers = [
        _tiny_stage(inplanes[i], planes[i], blocks[i], strides[i], dilations[i], previous[i])
        for i in range(4)
    ]
    if stem_widths is None:
        stem, bn1 = nn.Conv2d(3, stem_width, 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(stem_width)
    else:
        stem, bn1 = deep_stem(stem_widths)
    features = ResNetFeatures(stem, bn1, layers, out)
    for m in features.modules():
        if isinstance(m, nn.Conv2d):
            _kaiming(m)
    return features


def build_backbone(name: str, pretrained: str = "none", pretrained_dir: str = "") -> ResNetFeatures:
    """Build a dilated (output stride 8) backbone; see the module docstring for names and weights."""
    if name in _TORCHVISION:
        net = _TORCHVISION[name](weights=None, replace_stride_with_dilation=[False, True, True])
        backbone = _from_torchvision(net)
    elif name in _DEEP_STEM:
        backbone = _deep_stem_resnet(*_DEEP_STEM[name])
    elif name in _TINY_BLOCKS:
        backbone = tiny_resnet(blocks=_TINY_BLOCKS[name])
    else:
        raise ValueError(f"unknown backbone {name!r}; expected one of {', '.join(BACKBONES)}")

    located = locate(name, pretrained, pretrained_dir)
    if located.source != "none":
        own = {k: tuple(v.shape) for k, v in backbone.state_dict().items()}
        backbone.load_state_dict(check_state(fetch(located), own))
    return backbone
