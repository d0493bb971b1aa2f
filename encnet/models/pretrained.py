"""Where a backbone's pretrained weights come from, and whether a file holds that backbone's tensors.

``model.pretrained`` names the weights a segmentation backbone starts from; ``model.pretrained_dir`` (the reproduce
scripts' ``--pretrained-dir DIR``) is where they are read from, one folder for every run, so offline nodes need no
download. Neither changes what is trained, so only ``model.pretrained`` is part of the run id.

- ``imagenet``: the backbone's ImageNet weights.
  With ``pretrained_dir``: the file ``<dir>/<backbone>.pth`` (``FOLDER_FILES``): ``resnet50.pth`` and
  ``resnet101.pth`` are torchvision's ``IMAGENET1K_V1`` files renamed, ``resnet50s.pth`` and ``resnet101s.pth`` the
  release's deep-stem ImageNet files.
  Without it, torchvision's cache, ``$TORCH_HOME/hub/checkpoints/<torchvision's file name>`` (``TORCH_HOME`` defaults
  to ``~/.cache/torch``): ``resnet50-0676ba61.pth``, ``resnet101-63fe2227.pth``. torchvision downloads the file
  there when it is absent (``fetch``); the deep stems have no torchvision weights.
- a path: that ``state_dict`` file, or ``<pretrained_dir>/<its file name>`` when the folder holds one. The ledger's
  release side names ``~/.encoding/models/resnet50s.pth``, where the authors' package keeps its weights; a folder's
  ``resnet50s.pth`` serves it too.
- ``none``: random initialisation. The paper's numbers come from ImageNet-pretrained backbones and cannot come back
  without them (``NO_IMAGENET``).

``locate`` finds the file without reading or downloading anything; ``check_state`` compares a file's tensors with
the backbone's (keys and shapes), so a ResNet-50 file given to a ResNet-101 run is refused before the run starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
from torchvision.models import ResNet50_Weights, ResNet101_Weights

__all__ = ["FOLDER_FILES", "IMAGENET_BACKBONES", "Located", "NO_IMAGENET", "PretrainedWeightsError",
           "TORCHVISION_WEIGHTS", "check_state", "fetch", "locate", "read_state", "torchvision_cache_file"]

TORCHVISION_WEIGHTS = {"resnet50": ResNet50_Weights.IMAGENET1K_V1, "resnet101": ResNet101_Weights.IMAGENET1K_V1}
# The authors' ImageNet weights of their deep-stem ResNets: the model store's resnet50s-a75c83cf / resnet101s-03a0f310
# (encoding/models/model_store.py; release v0.5.0 named the deep-stem ResNet-50 file resnet50-ebb6acbb).
RELEASE_FILES = {"resnet50s": "resnet50s-a75c83cf.pth", "resnet101s": "resnet101s-03a0f310.pth"}
IMAGENET_BACKBONES = (*TORCHVISION_WEIGHTS, *RELEASE_FILES)
FOLDER_FILES = {name: f"{name}.pth" for name in IMAGENET_BACKBONES}
NO_IMAGENET = ("model.pretrained=none trains the backbone from random weights: the paper's numbers come from "
               "ImageNet-pretrained backbones and cannot come back without them")
# BatchNorm fills in num_batches_tracked when a file predates it (torch < 0.4.1, as torchvision's and the authors'
# 2017-2018 files do), so its absence is not a mismatch.
_OPTIONAL = "num_batches_tracked"


class PretrainedWeightsError(FileNotFoundError):
    """``model.pretrained`` names weights that are not where they are looked for, or not this backbone's: what
    was found (``problem``) and what fixes it (``fix``)."""

    def __init__(self, problem: str, fix: str = ""):
        super().__init__(f"{problem}; {fix}" if fix else problem)
        self.problem, self.fix = problem, fix


@dataclass(frozen=True)
class Located:
    """Where one backbone's weights come from. ``path`` is None for ``none`` and for a download still to make."""

    backbone: str
    pretrained: str
    path: Path | None
    source: str  # "none" | "weights folder" | "file" | "torchvision cache" | "download"
    url: str = ""

    def describe(self) -> str:
        if self.source == "none":
            return f"{self.backbone}: none (random initialisation)"
        if self.source == "download":
            return f"{self.backbone}: not on this machine; torchvision downloads {self.url} into {self.cache_file}"
        return f"{self.backbone} ← {self.path} ({self.source})"

    @property
    def cache_file(self) -> Path | None:
        return torchvision_cache_file(self.backbone) if self.backbone in TORCHVISION_WEIGHTS else None


def torchvision_cache_file(backbone: str) -> Path:
    """Where torchvision keeps (and looks for) ``backbone``'s ImageNet file: ``$TORCH_HOME/hub/checkpoints/``."""
    url = TORCHVISION_WEIGHTS[backbone].url
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name


def _what_goes_there(backbone: str) -> str:
    if backbone in TORCHVISION_WEIGHTS:
        return (f"torchvision's {Path(urlparse(TORCHVISION_WEIGHTS[backbone].url).path).name} "
                f"({TORCHVISION_WEIGHTS[backbone].url}) renamed")
    return f"the authors' {RELEASE_FILES[backbone]} (their model store's zip, unpacked) renamed"


def _folder_fix(backbone: str) -> str:
    return f"put {_what_goes_there(backbone)} at <DIR>/{FOLDER_FILES[backbone]} and pass --pretrained-dir DIR " \
           f"(model.pretrained_dir=DIR)"


def locate(backbone: str, pretrained: str, pretrained_dir: str | Path = "") -> Located:
    """Where the weights ``pretrained`` names for ``backbone`` are read from; nothing is read or downloaded.

    Raises :class:`PretrainedWeightsError` with the fix when they are nowhere to be found."""
    if pretrained in ("none", "", None):
        return Located(backbone, "none", None, "none")
    folder = Path(pretrained_dir).expanduser() if pretrained_dir else None
    if pretrained == "imagenet":
        if backbone not in IMAGENET_BACKBONES:
            raise PretrainedWeightsError(
                f"model.pretrained=imagenet: no ImageNet weights exist for backbone {backbone!r} (only for "
                f"{', '.join(IMAGENET_BACKBONES)})", "set model.pretrained=none or give a state_dict file")
        if folder is not None:
            file = folder / FOLDER_FILES[backbone]
            if file.is_file():
                return Located(backbone, pretrained, file, "weights folder")
            raise PretrainedWeightsError(
                f"model.pretrained=imagenet for {backbone}: model.pretrained_dir={pretrained_dir} holds no "
                f"{FOLDER_FILES[backbone]}", f"put {_what_goes_there(backbone)} there")
        if backbone in TORCHVISION_WEIGHTS:
            cache = torchvision_cache_file(backbone)
            if cache.is_file():
                return Located(backbone, pretrained, cache, "torchvision cache")
            return Located(backbone, pretrained, None, "download", TORCHVISION_WEIGHTS[backbone].url)
        raise PretrainedWeightsError(
            f"model.pretrained=imagenet for {backbone}: torchvision has no ImageNet weights for the release's deep "
            f"stem", _folder_fix(backbone))
    path = Path(pretrained).expanduser()
    if folder is not None and (folder / path.name).is_file():
        return Located(backbone, pretrained, folder / path.name, "weights folder")
    if path.is_file():
        return Located(backbone, pretrained, path, "file")
    where = f"no file {path}" + (f" and no {folder / path.name}" if folder is not None else "")
    fix = (_folder_fix(backbone) if backbone in IMAGENET_BACKBONES and path.name == FOLDER_FILES[backbone]
           else "give the path of an existing state_dict file")
    raise PretrainedWeightsError(f"model.pretrained={pretrained} for {backbone}: {where}",
                                 f"{fix}, or set model.pretrained=none ({NO_IMAGENET})")


def fetch(located: Located) -> Located:
    """Make a ``download`` local: torchvision's own download into its cache (the hash in the file name is checked).
    Anything else is returned as it is."""
    if located.source != "download":
        return located
    weights = TORCHVISION_WEIGHTS[located.backbone]
    try:
        weights.get_state_dict(progress=False, check_hash=True)
    except Exception as err:  # URLError, HTTPError, OSError, a hash mismatch: all mean "not available here"
        raise PretrainedWeightsError(
            f"model.pretrained=imagenet for {located.backbone}: torchvision could not download {located.url} "
            f"({type(err).__name__}: {err})", f"on a node without internet, pre-seed {located.cache_file} "
            f"(TORCH_HOME) or {_folder_fix(located.backbone)}") from None
    return Located(located.backbone, located.pretrained, located.cache_file, "torchvision cache", located.url)


def read_state(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a state_dict file, without the ImageNet classifier (``fc.*``); tensors only, nothing runs."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # files saved before torch 1.6 (not zip archives) cannot be memory-mapped
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise PretrainedWeightsError(f"model.pretrained: {path} is not a readable state_dict file "
                                     f"({type(err).__name__}: {err})", "give a file torch.save wrote") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PretrainedWeightsError(f"model.pretrained: {path} is not a state_dict (a mapping of names to tensors)",
                                     "give the file of a backbone's state_dict()")
    return {k: v for k, v in state.items() if not k.startswith("fc.")}


def mismatch(state: dict[str, torch.Tensor], shapes: dict[str, tuple[int, ...]]) -> str:
    """What differs between a file's tensors and a backbone's ``{key: shape}`` (empty when they fit)."""
    missing = sorted(k for k in shapes.keys() - state.keys() if not k.endswith(_OPTIONAL))
    unexpected = sorted(state.keys() - shapes.keys())
    reshaped = sorted(k for k in shapes.keys() & state.keys() if tuple(state[k].shape) != tuple(shapes[k]))
    parts = [f"{len(keys)} {what} ({', '.join(keys[:3])}{', …' if len(keys) > 3 else ''})"
             for what, keys in (("missing keys", missing), ("unexpected keys", unexpected),
                                ("tensors of another shape", reshaped)) if keys]
    return "; ".join(parts)


def check_state(located: Located, shapes: dict[str, tuple[int, ...]],
                known: dict[str, dict[str, tuple[int, ...]]] | None = None) -> dict[str, torch.Tensor]:
    """The file's tensors when they are exactly ``located.backbone``'s (``shapes``: key → shape); otherwise
    :class:`PretrainedWeightsError` naming what differs and, from ``known`` (backbone → shapes), whose they are."""
    state = read_state(located.path)
    problem = mismatch(state, shapes)
    if not problem:
        return state
    fits = [name for name, other in (known or {}).items() if name != located.backbone and not mismatch(state, other)]
    whose = f"; they are {fits[0]}'s weights" if fits else ""
    raise PretrainedWeightsError(
        f"model.pretrained={located.pretrained}: {located.path} does not fit backbone {located.backbone}: "
        f"{problem}{whose}", f"give each backbone its own file: --pretrained-dir DIR with "
        f"DIR/{FOLDER_FILES.get(located.backbone, located.backbone + '.pth')} serves every run")


def main(argv: list[str] | None = None) -> int:
    """``python -m encnet.models.pretrained fetch [--to DIR] BACKBONE ...``: torchvision's ImageNet files into its
    cache, and with ``--to`` copies named as ``--pretrained-dir`` expects; run it where there is internet (a login
    node), then point the compute nodes at the cache (TORCH_HOME) or the folder."""
    import argparse
    import shutil
    import sys

    parser = argparse.ArgumentParser(prog="python -m encnet.models.pretrained",
                                     description=main.__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["fetch"])
    parser.add_argument("backbones", nargs="+", choices=list(TORCHVISION_WEIGHTS),
                        help="torchvision backbones (the deep stems' files come from the authors' model store)")
    parser.add_argument("--to", type=Path, metavar="DIR",
                        help="also copy each file to DIR/<backbone>.pth (a --pretrained-dir folder)")
    args = parser.parse_args(argv)
    try:
        for backbone in args.backbones:
            located = fetch(locate(backbone, "imagenet"))
            print(f"{backbone}: {located.path}")
            if args.to is not None:
                args.to.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(located.path, args.to / FOLDER_FILES[backbone])
                print(f"{backbone}: copied to {args.to / FOLDER_FILES[backbone]}")
    except PretrainedWeightsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
