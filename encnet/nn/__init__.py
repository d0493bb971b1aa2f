"""Layers: the Encoding Layer, cross-process BatchNorm and the segmentation heads."""

from encnet.nn.encoding import Encoding
from encnet.nn.heads import ContextEncoder, EncHead, EncModule, FCNHead, SEHead
from encnet.nn.syncbn import SyncBatchNorm, convert_sync_batchnorm

__all__ = [
    "Encoding",
    "SyncBatchNorm",
    "convert_sync_batchnorm",
    "FCNHead",
    "EncModule",
    "EncHead",
    "ContextEncoder",
    "SEHead",
]
