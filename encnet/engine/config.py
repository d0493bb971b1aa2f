"""Typed experiment configuration: one YAML file per experiment, loaded into nested dataclasses.

A config file lives at ``configs/<profile>/<experiment>.yaml``; ``profile`` and ``experiment`` default to
those two path components. Every key has one name from YAML to log to table column (see
``docs/ARCHITECTURE.md``). Unknown keys and values of the wrong type are errors that name the dotted key and
the file (or the command-line override) they came from, so a typo never silently trains the default.

The resolved config (file + overrides, defaults filled in) is what runs, what ``config.yaml`` in the run
folder records, and what the run id hashes.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

__all__ = [
    "Config",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "ModelConfig",
    "TrainConfig",
    "apply_overrides",
    "config_from_dict",
    "effective_lr",
    "load_config",
    "to_dict",
    "validate",
    "to_yaml",
]

PAPER_MS_SCALES = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]


class ConfigError(ValueError):
    """A config file or override that does not match the schema."""


@dataclass
class ModelConfig:
    """Which network to build; for segmentation the arguments of ``encnet.models.build_model``."""

    name: str = "encnet"  # encnet | fcn, or a CIFAR name such as "EncNet-32k128d" for classification
    # CIFAR networks only: the paper's pre-activation blocks or the release's post-activation ones (§3.5).
    cifar_block: Literal["preact", "postact"] = "preact"
    backbone: str = "resnet50"  # resnet50 | resnet101 | resnet50s | resnet101s | resnet_tiny | resnet_tiny_deep
    pretrained: str = "none"  # "none", "imagenet" or a state_dict file (encnet.models.pretrained)
    # Where backbone files are read from (<dir>/<backbone>.pth for imagenet; default torchvision's cache). Not in the
    # run id: the same weights read from another folder train the same run.
    pretrained_dir: str = ""
    num_codes: int = 32  # K codewords; 0: global average pooling in place of the Encoding Layer (Figure 5)
    se_loss: bool = True
    aux: bool = True  # the auxiliary head on layer3 on/off; aux_head says which one
    # fcn: the release's FCN head (CE, weight train.aux_weight); se: the paper's stage-3 Context Encoding Module
    # trained by an SE-loss (weight train.se_weight, EncNet only; PAPER.md §2, ledger entry aux_head)
    aux_head: Literal["fcn", "se"] = "fcn"
    lateral: bool = False
    attention: str = "release"  # release: ReLU(x + x·γ); paper: x·γ (PAPER.md §2)
    # Start from a whole trained model: a run folder or checkpoint file (the VOC stages of PAPER.md §5).
    init_from: str = ""


@dataclass
class DataConfig:
    """Dataset, augmentation and loader settings (PAPER.md §5)."""

    dataset: str = "pascal_context"
    root: str | None = "data"  # generated demo data: a cache folder (null: $ENCNET_CACHE or ~/.cache/encnet)
    num_classes: int | None = None  # None: the dataset's own count (e.g. pascal_context 59; 60 w/ background)
    base_size: int = 520
    crop_size: int | list[int] = 480  # [height, width]: a non-square crop (the demo's tall "far" images)
    scale_min: float = 0.5
    scale_max: float = 2.0
    rotate_degrees: float = 0.0  # the paper mentions ±10°; the released code does not rotate
    # Which side the random scale sets to randint(scale_min·base, scale_max·base): release v0.5.0 (the recipe
    # behind the model-zoo weights) scales the short side, today's release the long side (ledger: scale_side).
    scale_side: Literal["long", "short"] = "long"
    # Probability of v0.4.2–v0.5.x's PIL Gaussian blur, radius U(0, 1), after the crop (ledger: blur).
    blur_prob: float = 0.0
    # What padding up to the crop size labels: the ignore label, or background class 0 as the release's VOC and
    # COCO datasets do (ledger: pad_label).
    pad_label: Literal["ignore", "background"] = "ignore"
    hflip: bool = True
    workers: int = 4
    train_split: str = "train"
    val_split: str = "val"
    # Extra keyword arguments for ``encnet.data.build_dataset``: the generated demo data's knobs
    # (context_scenes: seed, num_train, num_val, image_size; context_textures: seed, num_train, num_test).
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainConfig:
    """Optimisation (PAPER.md §5 for segmentation, §7 for CIFAR-10)."""

    epochs: int = 80
    batch_size: int = 16  # global: split evenly over the processes
    base_lr: float = 0.001  # for a batch of ``lr_ref_batch``; scaled linearly to ``batch_size``
    lr_ref_batch: int = 16
    head_lr_mult: float = 10.0
    momentum: float = 0.9
    weight_decay: float = 1e-4
    lr_schedule: Literal["poly", "cosine"] = "poly"
    poly_power: float = 0.9
    warmup_epochs: int = 0  # linear lr warm-up over the first N epochs (encnet.engine.schedules); the paper: none
    se_weight: float = 0.2
    aux_weight: float = 0.2
    amp: bool = False  # CUDA only; ignored with a warning on CPU. The release trained in float32 (ledger)
    # NHWC activations and weights: faster convolutions on tensor-core GPUs, the same function up to rounding.
    channels_last: bool = False
    syncbn: bool = True  # converted only when more than one process trains
    checkpoint_every: int = 1  # epochs; the last epoch is always checkpointed
    # Also checkpoint every N iterations inside an epoch (0: off), for epochs longer than a pre-emption window.
    checkpoint_every_iters: int = 0
    val_every: int = 1  # epochs between single-scale monitoring evaluations; 0: only after the last epoch
    # Watching a run (encnet/engine/progress.py): neither changes what trains, so neither is part of the run id.
    log_every: int = 50  # iterations between progress lines and progress.jsonl records; 0: one line per epoch
    tensorboard: bool = False  # event files in <run folder>/tensorboard/ (the extra: pip install -e '.[tensorboard]')


@dataclass
class EvalConfig:
    """The multi-scale + flip protocol used for reported numbers (PAPER.md §5).

    Single-scale evaluation (monitoring, and ``eval.json``) feeds the full image; the multi-scale protocol
    resizes the long side to ``base_size · scale`` and slides a ``crop_size`` window with stride
    ``stride_ratio · crop_size``. ``crop_size``/``base_size`` of None mean the data section's values.
    """

    scales: list[float] = field(default_factory=lambda: list(PAPER_MS_SCALES))
    flip: bool = True
    crop_size: int | list[int] | None = None  # [height, width]: a non-square window (the demo's tall images)
    base_size: int | None = None
    stride_ratio: float = 2.0 / 3.0
    # present: mean IoU over classes with a union (labelled or predicted); all: over every class, absent ones
    # scoring 0, as the release's metric does (ledger: miou_classes). Equal on a full validation split.
    miou: Literal["present", "all"] = "present"
    # How window and scale predictions combine (encnet/engine/inference.py); ledger entry ms_accumulate.
    accumulate: Literal["release_exp_sum", "logits", "softmax"] = "release_exp_sum"
    # Bilinear resizing of the image to each scale and of the scores back; ledger entry align_corners.
    align_corners: bool = True
    # What the validation monitor during training (train.val_every: metrics.jsonl's val_* and best_val_*) scores:
    # each image whole (full), or release v0.5.0's view, the image resized to cover the crop and its central crop
    # (centre_crop; ledger entry monitor_view). eval.json and the multi-scale numbers always score whole images.
    monitor_view: Literal["full", "centre_crop"] = "full"
    # Images (windows and their mirrors, any scale) per forward pass: bounds the activation memory to
    # max_batch windows' worth; the scores do not depend on it beyond rounding. 1: one window per forward.
    # None: the device's measured default (encnet.engine.inference.DEFAULT_MAX_BATCH: 1 on a CPU, 8 on a GPU).
    max_batch: int | None = None


@dataclass
class Config:
    experiment: str = ""
    profile: str = ""
    task: Literal["segmentation", "classification"] = "segmentation"
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def effective_lr(train: TrainConfig) -> float:
    """The paper's linear scaling: lr = base_lr / lr_ref_batch · batch_size (PAPER.md §5)."""
    return train.base_lr / train.lr_ref_batch * train.batch_size


# --------------------------------------------------------------------------------------------- conversion


# libyaml's parser where PyYAML was built with it (the wheels are): the same documents, parsed about ten times
# faster than the pure-Python parser; a dry run of the paper profile reads several hundred config files.
SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(SafeLoader):
    """YAML 1.1 reads ``1e-3`` and ``1.0e6`` as strings (its floats need a dot and a signed exponent); this
    loader reads every decimal float notation Python's ``float()`` accepts as a float, and ints stay ints."""


_PY_FLOAT = re.compile(r"""^[-+]?(?:
      (?:[0-9](?:_?[0-9])*)?\.[0-9](?:_?[0-9])*(?:[eE][-+]?[0-9](?:_?[0-9])*)?   # .5  1.5  1.5e3
    | [0-9](?:_?[0-9])*\.(?:[eE][-+]?[0-9](?:_?[0-9])*)?                     # 1.  1.e3
    | [0-9](?:_?[0-9])*[eE][-+]?[0-9](?:_?[0-9])*                             # 1e-3  1E6
    | (?:inf|infinity|nan)
    )$""", re.X | re.I)
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _PY_FLOAT, list("-+0123456789.iInN"))


def _float_constructor(loader: yaml.SafeLoader, node: yaml.Node) -> float:
    text = loader.construct_scalar(node)
    try:
        return float(text.replace("_", ""))
    except ValueError:
        return loader.construct_yaml_float(node)  # YAML's own forms: .inf, .nan, 1:30 (base 60)


_Loader.add_constructor("tag:yaml.org,2002:float", _float_constructor)


def parse_yaml(text: str) -> Any:
    """``yaml.safe_load`` with Python's float notations (see :class:`_Loader`)."""
    return yaml.load(text, Loader=_Loader)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it converted (int → float only)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)

    def fail(expected: str) -> ConfigError:
        return ConfigError(
            f"{source}: key '{key}' expects {expected}, found {value!r} ({type(value).__name__})"
        )

    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        errors = []
        for a in inner:
            try:
                return _coerce(value, a, key, source)
            except ConfigError as err:
                errors.append(err)
        raise fail(" or ".join(_type_name(a) for a in args))
    if origin is Literal:
        if value not in args:
            raise fail("one of " + ", ".join(repr(a) for a in args))
        return value
    if origin is list:
        if not isinstance(value, list):
            raise fail(f"a list of {_type_name(args[0])}")
        return [_coerce(v, args[0], f"{key}[{i}]", source) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise fail("a mapping")
        return {str(k): _coerce(v, args[1], f"{key}.{k}", source) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise fail(f"a mapping of {tp.__name__} keys")
        return _build(tp, value, key + ".", source)
    if tp is bool:
        if not isinstance(value, bool):
            raise fail("true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail("an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise fail("a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise fail("a string")
        return value
    raise TypeError(f"unsupported annotation {tp!r} for key '{key}'")


@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    # The config dataclasses never change at run time; get_type_hints evaluates every annotation string anew.
    return typing.get_type_hints(cls)


def _build(cls: type, data: dict, prefix: str, source: str) -> Any:
    hints = _type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in names]
    if unknown:
        raise ConfigError(
            f"{source}: unknown key '{prefix}{unknown[0]}' (known keys under "
            f"'{prefix.rstrip('.') or '<top level>'}': {', '.join(sorted(names))})"
        )
    kwargs = {k: _coerce(v, hints[k], prefix + k, source) for k, v in data.items()}
    return cls(**kwargs)


def config_from_dict(data: dict, source: str = "<dict>") -> Config:
    """Build a :class:`Config` from a nested mapping, checking every key and type."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, found {type(data).__name__}")
    return _build(Config, data, "", source)


def to_dict(config: Any) -> dict:
    return dataclasses.asdict(config)


def to_yaml(config: Any) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False, default_flow_style=None)


def _set_dotted(data: dict, dotted: str, value: Any, source: str) -> None:
    parts = dotted.split(".")
    node = data
    cls: Any = Config
    for depth, part in enumerate(parts[:-1]):
        hints = _type_hints(cls) if dataclasses.is_dataclass(cls) else {}
        if cls is dict or (part in hints and typing.get_origin(hints[part]) is dict):
            # a free-form mapping (data.options): the rest of the dotted key names its entries
            cls = dict
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{source}: '{'.'.join(parts[: depth + 1])}' is not a mapping")
            continue
        if part not in hints or not dataclasses.is_dataclass(hints[part]):
            raise ConfigError(f"{source}: unknown section '{'.'.join(parts[: depth + 1])}' in override "
                              f"'{dotted}'")
        cls = hints[part]
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{source}: '{'.'.join(parts[: depth + 1])}' is not a section")
    node[parts[-1]] = value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``key.sub=value`` strings (values parsed as YAML) to a nested mapping, in order."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key=value (e.g. train.se_weight=0.4)")
        key, raw = item.split("=", 1)
        # Each override is checked on its own so that an error names the override, not the file.
        value = parse_yaml(raw) if raw.strip() else ""
        _set_dotted(data, key.strip(), value, f"override '{item}'")
        config_from_dict(_plain_copy(data), f"override '{item}'")
    return data


def _plain_copy(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _plain_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_plain_copy(v) for v in data]
    return data


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read ``path`` (YAML), apply ``overrides`` and return the checked, resolved :class:`Config`.

    ``profile``/``experiment`` default to the parent folder's and the file's name
    (``configs/<profile>/<experiment>.yaml``).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist (configs live under configs/<profile>/)")
    data = parse_yaml(path.read_text()) or {}
    config = config_from_dict(data, str(path))  # errors name the file first
    data = apply_overrides(_plain_copy(data), list(overrides))
    data.setdefault("experiment", path.stem)
    data.setdefault("profile", path.parent.name)
    _check_model_keys(data, str(path))
    config = config_from_dict(data, str(path))
    if not config.experiment or not config.profile:
        raise ConfigError(f"{path}: 'experiment' and 'profile' must not be empty")
    if config.task == "segmentation" and config.model.name == "fcn":
        # FCN has no SE head; resolving the flag keeps the logged config.yaml truthful (se_loss: false).
        config.model.se_loss = False
    if config.task == "segmentation" and config.model.aux_head == "se" and not config.model.se_loss:
        # The paper's stage-3 module exists only for its SE-loss, so the paper's EncNet "w/o SE-loss" (Table 1)
        # has no auxiliary head at all: the no-SE rows of the tables and sweeps resolve to it, and config.yaml
        # says so (aux: false) instead of naming a head that is not built.
        config.model.aux = False
    validate(config, str(path))
    return config


# ------------------------------------------------------------------------------------------------- ranges

# (dotted key, test, what it must be). Other sections' keys get a line here when they have a range.
_RANGES: list[tuple[str, Any, str]] = [
    ("seed", lambda v: v >= 0, "≥ 0"),
    ("model.num_codes", lambda v: v >= 0, "≥ 0 (0: global average pooling, Figure 5)"),
    ("data.num_classes", lambda v: v is None or v >= 1, "≥ 1 (or null)"),
    ("data.base_size", lambda v: v >= 1, "≥ 1"),
    ("data.crop_size", lambda v: v >= 1 if isinstance(v, int) else len(v) == 2 and min(v) >= 1,
     "≥ 1, or [height, width] both ≥ 1"),
    ("data.scale_min", lambda v: 0 < v < math.inf, "> 0"),
    ("data.scale_max", lambda v: 0 < v < math.inf, "> 0"),
    ("data.rotate_degrees", lambda v: 0 <= v <= 180, "between 0 and 180"),
    ("data.workers", lambda v: v >= 0, "≥ 0"),
    ("train.epochs", lambda v: v >= 1, "≥ 1"),
    ("train.batch_size", lambda v: v >= 1, "≥ 1"),
    ("train.base_lr", lambda v: 0 < v < math.inf, "> 0 and finite"),
    ("train.lr_ref_batch", lambda v: v >= 1, "≥ 1"),
    ("train.head_lr_mult", lambda v: 0 <= v < math.inf, "≥ 0 and finite"),
    ("train.momentum", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("train.weight_decay", lambda v: 0 <= v < math.inf, "≥ 0 and finite"),
    ("train.poly_power", lambda v: 0 < v < math.inf, "> 0 and finite"),
    ("train.warmup_epochs", lambda v: v >= 0, "≥ 0 (0: no warm-up)"),
    ("train.se_weight", lambda v: 0 <= v < math.inf, "≥ 0 and finite"),
    ("train.aux_weight", lambda v: 0 <= v < math.inf, "≥ 0 and finite"),
    ("train.checkpoint_every", lambda v: v >= 1, "≥ 1"),
    ("train.checkpoint_every_iters", lambda v: v >= 0, "≥ 0 (0: only at epoch ends)"),
    ("train.val_every", lambda v: v >= 0, "≥ 0 (0: only after the last epoch)"),
    ("train.log_every", lambda v: v >= 0, "≥ 0 (0: one line per epoch)"),
    ("eval.scales", lambda v: len(v) > 0 and all(0 < s < math.inf for s in v), "a non-empty list of scales > 0"),
    ("eval.crop_size", lambda v: v is None or (v >= 1 if isinstance(v, int) else len(v) == 2 and min(v) >= 1),
     "≥ 1, or [height, width] both ≥ 1 (or null)"),
    ("eval.base_size", lambda v: v is None or v >= 1, "≥ 1 (or null)"),
    ("eval.stride_ratio", lambda v: 0 < v <= 1, "in (0, 1]: a window stride of at most one window"),
]


def _get_dotted(config: Any, dotted: str) -> Any:
    node = config
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def validate(config: Config, source: str = "<config>") -> None:
    """Check value ranges; the first problem is raised as a one-line :class:`ConfigError` naming the key.

    (That the global batch splits over the processes is checked when the engine starts and knows their number.)
    """
    for key, ok, want in _RANGES:
        try:
            value = _get_dotted(config, key)
        except AttributeError:
            continue
        if not ok(value):
            raise ConfigError(f"{source}: {key}={value!r} is out of range: it must be {want}")
    d, e = config.data, config.eval
    if config.train.warmup_epochs >= config.train.epochs > 0:
        raise ConfigError(f"{source}: train.warmup_epochs={config.train.warmup_epochs} is not below train.epochs="
                          f"{config.train.epochs}: the run would end before its learning rate was warmed up; "
                          f"shortening a run, shorten its warm-up too (train.warmup_epochs=0: none)")
    if d.scale_min > d.scale_max:
        raise ConfigError(f"{source}: data.scale_min={d.scale_min!r} is above data.scale_max={d.scale_max!r}")
    if config.task == "segmentation" and e.crop_size is None and not isinstance(d.crop_size, int):
        raise ConfigError(f"{source}: data.crop_size={d.crop_size} is [height, width]; set eval.crop_size, the "
                          f"multi-scale window (e.g. [height, width] of the largest scaled image)")
    if config.task == "segmentation" and e.monitor_view == "centre_crop" and _generated(d.dataset):
        raise ConfigError(f"{source}: eval.monitor_view=centre_crop is release v0.5.0's view of a real dataset's "
                          f"images; generated demo data ({d.dataset}) is scored whole (its size bins and scene band "
                          f"are defined on the whole image): remove eval.monitor_view or set it to full")
    window = e.crop_size or d.crop_size
    if config.task == "segmentation" and max(window if isinstance(window, list) else [window]) > (
            e.base_size or d.base_size) * max(e.scales):
        raise ConfigError(
            f"{source}: eval.crop_size={e.crop_size or d.crop_size} is larger than every multi-scale image "
            f"(eval.base_size {e.base_size or d.base_size} × largest scale {max(e.scales):g}): the sliding window "
            f"would only ever see padding; lower the crop or raise the base size")


def _generated(dataset: str) -> bool:
    from encnet.data import DATASETS

    return dataset in DATASETS and DATASETS[dataset][2] is not None


# Keys that configure only EncNet's Context Encoding head, and keys that segmentation models read but the CIFAR
# models take from their name ("EncNet-32k128d" fixes K and the width): a non-default value where they mean
# nothing would change the run id without changing the network, so it is an error. (Resolved config.yaml files
# list every key at its default, so only values, not the keys' presence, can be checked.)
_ENCNET_HEAD_KEYS = ("lateral", "num_codes", "attention", "aux_head")
_SEGMENTATION_MODEL_KEYS = ("backbone", "pretrained", "num_codes", "se_loss", "aux", "aux_head", "lateral",
                            "attention")


def _check_model_keys(data: dict, source: str) -> None:
    model = data.get("model") or {}
    defaults = ModelConfig()
    changed = [k for k in model if hasattr(defaults, k) and model[k] != getattr(defaults, k)]
    if data.get("task", "segmentation") == "classification":
        bad = [k for k in _SEGMENTATION_MODEL_KEYS if k in changed]
        if bad:
            raise ConfigError(
                f"{source}: model.{bad[0]} does not apply to classification models, whose name fixes their "
                f"architecture (e.g. model.name=EncNet-16k64d for K=16, width 64); remove "
                + ", ".join(f"model.{k}" for k in bad))
    elif model.get("name", defaults.name) == "fcn":
        bad = [k for k in _ENCNET_HEAD_KEYS if k in changed] + (["se_loss"] if model.get("se_loss") is True else [])
        if bad:
            raise ConfigError(
                f"{source}: model.{bad[0]} configures EncNet's Context Encoding head, which model.name=fcn does "
                f"not have; remove " + ", ".join(f"model.{k}" for k in bad))
