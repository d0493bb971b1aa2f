"""encnet — Context Encoding for Semantic Segmentation (Zhang et al., CVPR 2018), reproduced.

The library's public names live here::

    import torch
    from encnet import SegmentationLoss, build_model

    model = build_model("encnet", num_classes=59, backbone="resnet50")
    out = model(torch.randn(2, 3, 480, 480))           # SegmentationOutput(out, aux, se, aux_se)
    loss = SegmentationLoss(59)(out, torch.randint(0, 59, (2, 480, 480)))

- ``build_model``: FCN and EncNet on a dilated ResNet (``encnet.models``)
- ``Encoding`` and ``EncModule``: the Encoding Layer and the Context Encoding Module (``encnet.nn``)
- ``SegmentationLoss``: cross-entropy + auxiliary + SE-loss (``encnet.losses``)
- ``SegmentationMetric``: pixAcc and mIoU from one confusion matrix (``encnet.metrics``)
- ``load_published``: the authors' and mmsegmentation's checkpoints in these models
  (``encnet.engine.published_weights``)

Each is imported on first use (a module ``__getattr__``, PEP 562): ``import encnet`` loads neither torch nor any
subpackage, so a script that needs one name does not pay for the others.
"""

__version__ = "0.1.0"
__all__ = ["EncModule", "Encoding", "SegmentationLoss", "SegmentationMetric", "build_model", "load_published"]


def __getattr__(name: str):
    # One explicit import per name (not importlib on a string), so tests/test_layout.py sees what this module
    # depends on.
    if name == "build_model":
        from encnet.models.segmentation import build_model as value
    elif name == "Encoding":
        from encnet.nn.encoding import Encoding as value
    elif name == "EncModule":
        from encnet.nn.heads import EncModule as value
    elif name == "SegmentationLoss":
        from encnet.losses import SegmentationLoss as value
    elif name == "SegmentationMetric":
        from encnet.metrics import SegmentationMetric as value
    elif name == "load_published":
        from encnet.engine.published_weights import load_published as value
    else:
        raise AttributeError(f"module 'encnet' has no attribute {name!r}")
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
