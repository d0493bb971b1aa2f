"""Segmentation models on dilated ResNets. The CIFAR-10 networks live in ``encnet.models.cifar``."""

from encnet.models.backbones import BACKBONES, ResNetFeatures, build_backbone
from encnet.models.segmentation import MODELS, FCN, EncNet, SegmentationOutput, build_model

__all__ = [
    "BACKBONES",
    "MODELS",
    "ResNetFeatures",
    "build_backbone",
    "SegmentationOutput",
    "FCN",
    "EncNet",
    "build_model",
]
