"""Published EncNet checkpoints in the suite's models: ``load_published(path, config, source)``; ``export_mmseg``.

Sources (``SOURCES``):

- ``pytorch-encoding``: the authors' model zoo (state dicts, also inside the zoo's ``.zip`` archives). Layout of
  the release that trained them (v0.5.0 = f891919, ``encoding/models/{base,encnet,fcn}.py``,
  ``encoding/dilated/resnet.py``; the same keys under ``encoding/models/sseg/`` and
  ``encoding/models/backbone/resnet.py`` today): backbone ``pretrained.*`` (deep stem 3→64→64→128, the suite's
  ``resnet50s``/``resnet101s``, plus an unused ImageNet classifier ``pretrained.fc.*``), EncNet's
  ``head.conv5`` / ``head.connect`` / ``head.fusion`` / ``head.encmodule.encoding.{0,1,3,4}`` (conv, BN,
  Encoding, BatchNorm1d) / ``head.encmodule.fc.0`` / ``head.encmodule.selayer`` / ``head.conv6.1``, FCN's
  ``head.conv5.{0,1,4}``, and ``auxlayer.conv5.{0,1,4}``.
- ``mmseg``: mmsegmentation's EncNet (``encnet_r50-d8`` / ``encnet_r101-d8``): ``state_dict`` with ``backbone.*``
  (ResNetV1c: ``stem.{0,1,3,4,6,7}``, the suite's ``resnet50v1c``/``resnet101v1c``), ``decode_head.*``
  (``bottleneck``, ``lateral_convs``, ``fusion``, ``enc_module.encoding_project``, ``enc_module.encoding.{0,1}``,
  ``enc_module.fc.0``, ``se_layer``, ``conv_seg``) and ``auxiliary_head.*`` (``convs.0``, ``conv_seg``).
- ``encnet``: the suite's own checkpoints (a run's ``checkpoint.pt`` or a bare state dict).

Every tensor of the file is renamed by an explicit prefix rule and the model is loaded strictly: a tensor no
rule maps, a model tensor the file lacks and a shape that differs are errors that name the keys. The only
exceptions are reported: ``pretrained.fc.*`` (the release keeps its ImageNet classifier inside the segmentation
model; the forward never reads it) is skipped, and BatchNorm's ``num_batches_tracked`` counters, which the
release's 2018 BatchNorm did not store and evaluation never reads, are filled with 0.

The network (backbone, lateral path, SE head, aux head, K) is read from the file's tensors, not from the
config: the config supplies the dataset and protocol. Forward settings that differ between sources and are not
tensors are set from the source (``SOURCE_SETTINGS``).

Published files are untrusted: they are read with ``torch.load(weights_only=True)``. mmsegmentation's files may
carry training metadata pickled as custom classes (mmengine's message hub, numpy scalars); when
``weights_only`` refuses a zip-format file, its ``data.pkl`` is read by an unpickler that rebuilds tensors only
and replaces every other class by an inert placeholder without importing it; the report names them.
"""

from __future__ import annotations

import collections
import io
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["SOURCES", "SOURCE_SETTINGS", "LoadReport", "PublishedModel", "PublishedWeightsError", "detect_source",
           "export_mmseg", "load_published", "load_state", "map_keys", "network_from_state", "read_checkpoint"]

SOURCES = ("pytorch-encoding", "mmseg", "encnet")


class PublishedWeightsError(ValueError):
    """A checkpoint that does not map onto the suite's model, with the keys that do not."""


# Forward settings that are not tensors, per source. Dropout is the identity in evaluation, so the kind only
# matters when fine-tuning; it is recorded because the sources differ.
SOURCE_SETTINGS: dict[str, dict[str, Any]] = {
    "pytorch-encoding": {
        "attention": "release",  # F.relu_(x + x * y) in EncModule.forward (v0.5.0 and today)
        "align_corners": True,  # base.py up_kwargs: heads' logits upsampled with align_corners=True
        "dropout": "Dropout2d(0.1) at v0.5.0 (EncHead.conv6, FCNHead); nn.Dropout(0.1) in EncHead today",
        "input": "RGB, ImageNet mean/std (as the suite)",
        "class_order": "the suite's (the release's datasets are the suite's models for it)",
    },
    "mmseg": {
        "attention": "release",  # F.relu_(x + x * y) in mmseg's EncModule
        "align_corners": False,  # decode_head / auxiliary_head align_corners=False in encnet_r50-d8.py
        "dropout": "Dropout2d(0.1) (BaseDecodeHead, dropout_ratio=0.1)",
        "input": "RGB (bgr_to_rgb=True), ImageNet mean/std ×255 (as the suite)",
        "class_order": "ADE20K: objectInfo150 order with reduce_zero_label, the suite's order",
    },
    "encnet": {"align_corners": False},
}
# mmsegmentation's EncNet checkpoints exist for ADE20K only; another dataset's class order is unchecked.
_MMSEG_DATASETS = ("ade20k",)

# ----------------------------------------------------------------------------------------------- key rules
# (source prefix, suite prefix); the longest matching prefix wins, so rules may nest.

_RELEASE_BACKBONE = [("pretrained.", "backbone.")]
_RELEASE_IGNORED = ("pretrained.fc.",)  # the ImageNet classifier of the release's backbone: never run
_RELEASE_AUX = [("auxlayer.conv5.0.", "aux_head.0.0."), ("auxlayer.conv5.1.", "aux_head.0.1."),
                ("auxlayer.conv5.4.", "aux_head.2.")]
_RELEASE_RULES = {
    "encnet": _RELEASE_BACKBONE + _RELEASE_AUX + [
        ("head.conv5.", "head.conv5."),
        ("head.connect.", "head.connect."),
        ("head.fusion.", "head.fusion."),
        ("head.encmodule.encoding.0.", "head.enc_module.encoding.0.0."),
        ("head.encmodule.encoding.1.", "head.enc_module.encoding.0.1."),
        ("head.encmodule.encoding.3.", "head.enc_module.encoding.1."),
        ("head.encmodule.encoding.4.", "head.enc_module.encoding.2."),
        ("head.encmodule.fc.0.", "head.enc_module.fc.0."),
        ("head.encmodule.selayer.", "head.enc_module.se_layer."),
        ("head.conv6.1.", "head.classifier.1."),
    ],
    "fcn": _RELEASE_BACKBONE + _RELEASE_AUX + [
        ("head.conv5.0.", "head.0.0."), ("head.conv5.1.", "head.0.1."), ("head.conv5.4.", "head.2."),
    ],
}


def _conv_module(mm: str, suite: str) -> list[tuple[str, str]]:
    """mmcv's ConvModule (``conv``, ``bn``) ↔ the suite's conv-BN-ReLU Sequential (0, 1)."""
    return [(f"{mm}.conv.", f"{suite}.0."), (f"{mm}.bn.", f"{suite}.1.")]


_MMSEG_DEEP_STEM = [("backbone.stem.0.", "backbone.conv1.0."), ("backbone.stem.1.", "backbone.conv1.1."),
                    ("backbone.stem.3.", "backbone.conv1.3."), ("backbone.stem.4.", "backbone.conv1.4."),
                    ("backbone.stem.6.", "backbone.conv1.6."), ("backbone.stem.7.", "backbone.bn1.")]
_MMSEG_PLAIN_STEM = [("backbone.conv1.", "backbone.conv1."), ("backbone.bn1.", "backbone.bn1.")]
_MMSEG_RULES = [
    ("backbone.layer", "backbone.layer"),
    *_conv_module("decode_head.bottleneck", "head.conv5"),
    *_conv_module("decode_head.lateral_convs.0", "head.connect.0"),
    *_conv_module("decode_head.lateral_convs.1", "head.connect.1"),
    *_conv_module("decode_head.fusion", "head.fusion"),
    *_conv_module("decode_head.enc_module.encoding_project", "head.enc_module.encoding.0"),
    ("decode_head.enc_module.encoding.0.", "head.enc_module.encoding.1."),
    ("decode_head.enc_module.encoding.1.", "head.enc_module.encoding.2."),
    ("decode_head.enc_module.fc.0.", "head.enc_module.fc.0."),
    ("decode_head.se_layer.", "head.enc_module.se_layer."),
    ("decode_head.conv_seg.", "head.classifier.1."),
    *_conv_module("auxiliary_head.convs.0", "aux_head.0"),
    ("auxiliary_head.conv_seg.", "aux_head.2."),
]


def _rules(source: str, state_keys, kind: str) -> tuple[list[tuple[str, str]], tuple[str, ...]]:
    """(rules, ignored prefixes) for the file's source and network kind."""
    if source == "pytorch-encoding":
        return _RELEASE_RULES[kind], _RELEASE_IGNORED
    if source == "mmseg":
        deep = any(k.startswith("backbone.stem.") for k in state_keys)
        return (_MMSEG_DEEP_STEM if deep else _MMSEG_PLAIN_STEM) + _MMSEG_RULES, ()
    if source == "encnet":
        return [("", "")], ()
    raise ValueError(f"unknown source {source!r}; expected one of {', '.join(SOURCES)}")


def _rename(key: str, rules: list[tuple[str, str]]) -> str | None:
    best = None
    for src, dst in rules:
        if key.startswith(src) and (best is None or len(src) > len(best[0])):
            best = (src, dst)
    return None if best is None else best[1] + key[len(best[0]):]


# ---------------------------------------------------------------------------------------------- reading


_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}


class _Skipped:
    """Stands in for a class the restricted unpickler does not import: takes any arguments, keeps nothing."""

    qualname = ""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass

    def __repr__(self) -> str:
        return f"<skipped {self.qualname}>"


class _StorageType:
    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype


class _TensorsOnlyUnpickler(pickle.Unpickler):
    """Unpickles a zip-format ``torch.save`` file rebuilding tensors only; other classes become placeholders."""

    _ALLOWED = {
        ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
        # Kept an OrderedDict, not a dict: a real ``module.state_dict()`` carries ``_metadata`` as an attribute,
        # which pickle restores into the instance's __dict__ (a plain dict has none: mmengine's Runner files crashed).
        ("collections", "OrderedDict"): collections.OrderedDict,
    }

    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str, skipped: set[str]):
        super().__init__(io.BytesIO(data))
        self.archive, self.prefix, self.skipped = archive, prefix, skipped

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return self._ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        qualname = f"{module}.{name}"
        self.skipped.add(qualname)
        return type(name, (_Skipped,), {"qualname": qualname})

    def persistent_load(self, pid):
        kind, storage_type, key, _location, _numel = pid
        if kind != "storage" or not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        raw = bytearray(self.archive.read(f"{self.prefix}data/{key}"))
        flat = torch.frombuffer(raw, dtype=storage_type.dtype) if raw else torch.empty(0, dtype=storage_type.dtype)
        return torch.storage.TypedStorage(wrap_storage=flat.untyped_storage(), dtype=storage_type.dtype,
                                          _internal=True)


def _tensors_only_load(blob: bytes, skipped: set[str]):
    with zipfile.ZipFile(io.BytesIO(blob)) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pickles) != 1:
            raise PublishedWeightsError(f"not a torch.save zip file (found {len(pickles)} data.pkl entries)")
        prefix = pickles[0][: -len("data.pkl")]
        return _TensorsOnlyUnpickler(archive.read(pickles[0]), archive, prefix, skipped).load()


def _file_bytes(path: Path) -> tuple[bytes, str]:
    """The checkpoint's bytes; a model-zoo ``.zip`` archive (one ``.pth`` inside) is opened."""
    blob = path.read_bytes()
    if zipfile.is_zipfile(io.BytesIO(blob)):
        with zipfile.ZipFile(io.BytesIO(blob)) as archive:
            names = archive.namelist()
            if not any(n.endswith("data.pkl") for n in names):  # not torch's own zip format: the zoo's archive
                inner = [n for n in names if n.endswith((".pth", ".pt"))]
                if len(inner) != 1:
                    raise PublishedWeightsError(f"{path}: expected one .pth file in the archive, found {names}")
                return archive.read(inner[0]), f"{path.name}:{inner[0]}"
    return blob, path.name


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else "no message"


def read_checkpoint(path: str | Path) -> tuple[dict[str, Tensor], list[str]]:
    """The file's tensors by name, and the classes skipped (not unpickled) to read them.

    Unwraps ``state_dict`` (mmsegmentation) and ``model`` (the suite's run checkpoints).
    """
    path = Path(path)
    if not path.is_file():
        from .published_files import missing_checkpoint_message

        raise FileNotFoundError(missing_checkpoint_message(path))
    try:
        blob, name = _file_bytes(path)
    except (zipfile.BadZipFile, OSError) as err:
        raise PublishedWeightsError(f"{path}: cannot read it ({_first_line(err)})") from None
    skipped: set[str] = set()
    try:
        obj = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if not zipfile.is_zipfile(io.BytesIO(blob)):
            raise PublishedWeightsError(
                f"{path}: torch.load(weights_only=True) refused it ({_first_line(err)}) and it is not in "
                f"the zip format whose tensors can be read without unpickling other objects") from None
        try:
            obj = _tensors_only_load(blob, skipped)
        except PublishedWeightsError as inner:
            raise PublishedWeightsError(f"{path}: {inner}") from None
        except Exception as inner:  # a damaged or foreign pickle: whatever it raises, the user gets one line
            raise PublishedWeightsError(f"{path}: not a readable torch.save file "
                                        f"({type(inner).__name__}: {_first_line(inner)})") from None
    except Exception as err:  # truncated file, not a torch file at all, ...
        raise PublishedWeightsError(f"{path}: not a readable torch.save file "
                                    f"({type(err).__name__}: {_first_line(err)})") from None
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
            break
    if not isinstance(obj, dict):
        raise PublishedWeightsError(f"{name}: expected a state dict, found {type(obj).__name__}")
    bad = [k for k, v in obj.items() if not isinstance(v, Tensor)]
    if bad:
        raise PublishedWeightsError(f"{name}: entries that are not tensors: {bad[:5]}")
    # DataParallel/DistributedDataParallel wrappers prefix every key with "module."
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj), sorted(skipped)


def detect_source(state: dict[str, Tensor]) -> str:
    """Which layout a state dict has, from its key names."""
    keys = list(state)
    if any(k.startswith("pretrained.") for k in keys):
        return "pytorch-encoding"
    if any(k.startswith("decode_head.") for k in keys):
        return "mmseg"
    if any(k.startswith("backbone.") for k in keys) and any(k.startswith("head.") for k in keys):
        return "encnet"
    raise PublishedWeightsError(
        f"cannot tell the source of a state dict with keys {keys[:3]}...: expected 'pretrained.*' "
        f"(pytorch-encoding), 'decode_head.*' (mmseg) or 'backbone.*' + 'head.*' (encnet); pass --source")


def _kind(state: dict[str, Tensor], source: str) -> str:
    if source == "pytorch-encoding":
        if any(k.startswith("head.encmodule.") for k in state):
            return "encnet"
        if "head.conv5.4.weight" in state:
            return "fcn"
    elif source == "mmseg":
        if any(k.startswith("decode_head.enc_module.") for k in state):
            return "encnet"
        raise PublishedWeightsError("mmseg: only EncNet checkpoints (decode_head = EncHead) are supported; "
                                    "mmsegmentation's FCN head (two convs, concat_input) is not the suite's FCN")
    elif source == "encnet":
        return "encnet" if any(k.startswith("head.enc_module.") for k in state) else "fcn"
    raise PublishedWeightsError(f"{source}: the file has neither an EncNet nor an FCN head")


def map_keys(state: dict[str, Tensor], source: str) -> tuple[dict[str, Tensor], dict[str, str], list[str], list[str]]:
    """Rename a source state dict to the suite's keys.

    Returns (suite state, suite key → file key, ignored file keys, file keys no rule maps).
    """
    rules, ignored_prefixes = _rules(source, state.keys(), _kind(state, source))
    mapped: dict[str, Tensor] = {}
    origin: dict[str, str] = {}
    ignored, unmapped = [], []
    for key, value in state.items():
        if key.startswith(ignored_prefixes):
            ignored.append(key)
            continue
        new = _rename(key, rules)
        if new is None:
            unmapped.append(key)
            continue
        if new in mapped:
            raise PublishedWeightsError(f"{origin[new]} and {key} both map to {new}")
        mapped[new], origin[new] = value, key
    return mapped, origin, ignored, unmapped


def network_from_state(mapped: dict[str, Tensor]) -> dict[str, Any]:
    """The model arguments a suite-keyed state dict implies (``build_model`` keywords and ``num_classes``).

    ``backbone`` is None when the tensors are not one of the suite's named ResNet-50/101 backbones.
    """
    kind = "encnet" if any(k.startswith("head.enc_module.") for k in mapped) else "fcn"
    classifier = "head.classifier.1.weight" if kind == "encnet" else "head.2.weight"
    if classifier not in mapped:
        raise PublishedWeightsError(f"no classifier tensor {classifier} in the file")
    stem = mapped.get("backbone.conv1.0.weight", mapped.get("backbone.conv1.weight"))
    if stem is None:
        raise PublishedWeightsError("no backbone stem (backbone.conv1.*) in the file")
    blocks = len({k.split(".")[2] for k in mapped if k.startswith("backbone.layer3.")})
    depth = {6: 50, 23: 101}.get(blocks)
    suffix = ""
    if "backbone.conv1.6.weight" in mapped:
        suffix = {64: "s", 32: "v1c"}.get(stem.shape[0])
    # None: not one of the suite's named backbones (a miniature re-creation in the tests, or a foreign width)
    backbone = f"resnet{depth}{suffix}" if depth is not None and suffix is not None else None
    network = {"name": kind, "backbone": backbone, "num_classes": int(mapped[classifier].shape[0]),
               "aux": any(k.startswith("aux_head.") for k in mapped)}
    if kind == "encnet":
        network.update(lateral="head.connect.0.0.weight" in mapped,
                       se_loss="head.enc_module.se_layer.weight" in mapped,
                       num_codes=int(mapped["head.enc_module.encoding.1.codewords"].shape[0]),
                       # both sources' aux heads are FCN heads (the paper's stage-3 SE module was never released)
                       aux_head="fcn")
    return network


# ---------------------------------------------------------------------------------------------- loading


@dataclass
class LoadReport:
    """What ``load_state`` did with a file's tensors."""

    file: str
    source: str
    loaded: int
    ignored: list[str] = field(default_factory=list)  # file keys deliberately not loaded (and why: IGNORED_WHY)
    filled: list[str] = field(default_factory=list)  # suite keys the file lacks, filled (num_batches_tracked)
    skipped_objects: list[str] = field(default_factory=list)  # classes not unpickled while reading
    settings: dict[str, Any] = field(default_factory=dict)  # forward settings set from the source
    network: dict[str, Any] = field(default_factory=dict)  # the model the file implies
    config_changes: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # key: (config's, file's)

    def summary(self) -> str:
        lines = [f"{self.file} ({self.source}): {self.loaded} tensors loaded strictly"]
        if self.ignored:
            lines.append(f"  ignored {len(self.ignored)} tensors: {', '.join(self.ignored)} "
                         f"(the release's ImageNet classifier; the segmentation forward never reads it)")
        if self.filled:
            lines.append(f"  filled {len(self.filled)} BatchNorm num_batches_tracked counters with 0 "
                         f"(not in the file; evaluation never reads them)")
        if self.skipped_objects:
            lines.append(f"  not unpickled (training metadata): {', '.join(self.skipped_objects)}")
        for key, (ours, theirs) in self.config_changes.items():
            lines.append(f"  model.{key}: {ours!r} in the config, {theirs!r} in the file (the file's is used)")
        for key, value in self.settings.items():
            lines.append(f"  {key}: {value}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"file": self.file, "source": self.source, "loaded": self.loaded, "ignored": self.ignored,
                "filled": self.filled, "skipped_objects": self.skipped_objects, "settings": self.settings,
                "network": self.network,
                "config_changes": {k: list(v) for k, v in self.config_changes.items()}}


def _listing(keys: list[str], limit: int = 8) -> str:
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def load_state(model: nn.Module, state: dict[str, Tensor], source: str, file: str = "<state dict>") -> LoadReport:
    """Map ``state`` (in ``source``'s layout) onto ``model`` and load it strictly; returns the report.

    Also sets the source's non-tensor forward settings (``align_corners`` of the heads' upsampling).
    """
    mapped, origin, ignored, unmapped = map_keys(state, source)
    own = model.state_dict()
    filled = [k for k in own if k.endswith("num_batches_tracked") and k not in mapped]
    for key in filled:
        mapped[key] = torch.zeros_like(own[key])
    missing = [k for k in own if k not in mapped]
    unexpected = [k for k in mapped if k not in own]
    reshaped = [k for k in own if k in mapped and tuple(mapped[k].shape) != tuple(own[k].shape)]
    problems = []
    if unmapped:
        problems.append(f"file tensors no {source} rule maps: {_listing(unmapped)}")
    if unexpected:
        problems.append("file tensors the model has no place for: "
                        + _listing([f"{origin[k]} → {k}" for k in unexpected]))
    if missing:
        problems.append(f"model tensors missing from the file: {_listing(missing)}")
    if reshaped:
        problems.append("shapes differ: " + _listing(
            [f"{origin[k]} {tuple(mapped[k].shape)} → {k} {tuple(own[k].shape)}" for k in reshaped]))
    if problems:
        raise PublishedWeightsError(f"{file} ({source}) does not load strictly into the model:\n  "
                                    + "\n  ".join(problems))
    model.load_state_dict(mapped, strict=True)
    settings = dict(SOURCE_SETTINGS[source])
    if hasattr(model, "align_corners"):
        model.align_corners = settings["align_corners"]
    return LoadReport(file=file, source=source, loaded=len(mapped) - len(filled), ignored=ignored, filled=filled,
                      settings=settings, network=network_from_state(mapped) if source != "encnet" else {})


@dataclass
class PublishedModel:
    model: nn.Module
    report: LoadReport
    model_config: Any  # the ModelConfig the model was built from (the config's, with the file's network)
    num_classes: int


def load_published(path: str | Path, config=None, source: str | None = None) -> PublishedModel:
    """Build the suite's model for a published checkpoint and load it strictly (see the module docstring).

    ``config`` (an ``encnet.engine.config.Config``) supplies the dataset; the network comes from the file, and every
    model key where the file differs from the config is listed in ``report.config_changes``. ``source`` None:
    detected from the key names.
    """
    import dataclasses

    from encnet.engine.config import Config, ModelConfig

    state, skipped = read_checkpoint(path)
    source = source or detect_source(state)
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; expected one of {', '.join(SOURCES)}")
    model_config = dataclasses.replace(config.model) if config is not None else ModelConfig()
    model_config.pretrained = "none"
    model_config.init_from = ""
    changes: dict[str, tuple[Any, Any]] = {}
    if source == "encnet":
        if config is None:
            raise ValueError("source 'encnet' needs the run's config to build the model")
        num_classes = int(state[("head.classifier.1.weight" if model_config.name == "encnet" else "head.2.weight")]
                          .shape[0])
    else:
        if source == "mmseg" and config is not None and config.data.dataset not in _MMSEG_DATASETS:
            raise PublishedWeightsError(
                f"mmseg checkpoints are checked for {_MMSEG_DATASETS} only (class order); the config's dataset "
                f"is {config.data.dataset!r}")
        network = network_from_state(map_keys(state, source)[0])
        if network["backbone"] is None:
            raise PublishedWeightsError(
                f"{path}: the backbone is neither a ResNet-50/101 with the release's deep stem (3→64→64→128) nor "
                f"ResNetV1c's (3→32→32→64) nor torchvision's 7×7 stem")
        num_classes = network.pop("num_classes")
        network["attention"] = SOURCE_SETTINGS[source]["attention"]
        for key, value in network.items():
            if getattr(model_config, key) != value:
                changes[key] = (getattr(model_config, key), value)
                setattr(model_config, key, value)
        if config is not None and config.data.num_classes not in (None, num_classes):
            raise PublishedWeightsError(f"{path}: {num_classes} classes in the file, data.num_classes = "
                                        f"{config.data.num_classes} in the config")
    from encnet.engine.build import build_model_for

    model = build_model_for(dataclasses.replace(config or Config(), model=model_config), num_classes)
    report = load_state(model, state, source, file=str(path))
    report.skipped_objects, report.config_changes = skipped, changes
    return PublishedModel(model, report, model_config, num_classes)


# ---------------------------------------------------------------------------------------------- export


def export_mmseg(model: nn.Module) -> dict:
    """The suite's EncNet as an mmsegmentation checkpoint: ``{"state_dict": ..., "meta": {...}}``.

    ``meta["encnet_repro"]`` holds the mmseg model settings the tensors need (backbone type and stem width,
    decode head flags); every tensor is renamed by the inverse of the import rules, so importing the export
    gives back the same tensors.
    """
    state = model.state_dict()
    if not any(k.startswith("head.enc_module.") for k in state):
        raise PublishedWeightsError("only EncNet exports to mmseg (its FCN head has two convs and concat_input)")
    if "head.enc_module.encoding.1.codewords" not in state:
        raise PublishedWeightsError("mmseg's EncModule has an Encoding Layer; a K = 0 (pooling) model has none")
    attention = model.head.enc_module.attention
    if attention != SOURCE_SETTINGS["mmseg"]["attention"]:
        # mmseg's EncHead computes ReLU(x + x⊗γ) whatever a checkpoint says: its forward of this export would
        # not be this model's (tests/test_peers.py: 0.64 relative on one such model).
        raise PublishedWeightsError(f"model.attention = {attention!r}: mmseg's EncHead computes only ReLU(x + x⊗γ) "
                                    f"(attention 'release'), so it cannot run this model")
    unknown_aux = [k for k in state if k.startswith("aux_head.") and not k.startswith(("aux_head.0.", "aux_head.2."))]
    if unknown_aux:
        raise PublishedWeightsError(f"mmseg's auxiliary head is an FCN head; this model's is not ({unknown_aux[0]})")
    deep = "backbone.conv1.6.weight" in state
    rules = (_MMSEG_DEEP_STEM if deep else _MMSEG_PLAIN_STEM) + _MMSEG_RULES
    inverse = [(dst, src) for src, dst in rules]
    out, unmapped = {}, []
    for key, value in state.items():
        new = _rename(key, inverse)
        if new is None:
            unmapped.append(key)
        else:
            out[new] = value.detach().clone()
    if unmapped:
        raise PublishedWeightsError(f"no mmseg name for: {_listing(unmapped)}")
    network = network_from_state(state)
    # The model's own setting: a release-zoo model re-exported keeps align_corners=True.
    align_corners = bool(model.align_corners)
    stem_channels = int(state["backbone.bn1.weight"].shape[0])
    depth = {6: 50, 23: 101}.get(len({k.split(".")[2] for k in state if k.startswith("backbone.layer3.")}))
    settings = {
        "backbone": {"type": "ResNetV1c" if deep else "ResNet", "depth": depth, "stem_channels": stem_channels,
                     "deep_stem": deep, "dilations": [1, 1, 2, 4], "strides": [1, 2, 1, 1],
                     "contract_dilation": True, "style": "pytorch"},
        "decode_head": {"type": "EncHead", "channels": int(state["head.conv5.0.weight"].shape[0]),
                        "num_codes": network["num_codes"], "use_se_loss": network["se_loss"],
                        "add_lateral": network["lateral"], "num_classes": network["num_classes"],
                        "align_corners": align_corners},
        "auxiliary_head": ({"type": "FCNHead", "channels": int(state["aux_head.0.0.weight"].shape[0]),
                            "num_convs": 1, "concat_input": False, "align_corners": align_corners}
                           if network["aux"] else None),
        "note": f"exported by encnet-repro; the heads' logits are upsampled with align_corners={align_corners}",
    }
    return {"state_dict": out, "meta": {"encnet_repro": settings}}
