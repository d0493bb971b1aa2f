"""Where each published EncNet/FCN checkpoint can be downloaded: today's address first, then the one of the
release that made it. The suite never downloads; these addresses are for people (the published-weights table and
the missing-file error of ``python -m encnet.evaluate --weights``).

The authors' model zoo (``encoding/models/model_store.py`` of PyTorch-Encoding) names a file
``<name>-<first 8 hex digits of its SHA1>`` and serves it zipped, ``<repo>models/<name>.zip``:

- today: ``<repo>`` = ``$ENCODING_REPO`` or https://s3.us-west-1.wasabisys.com/encoding (commit c99b108, "wasabi
  url (#288)", 2020-06-28; unchanged at HEAD ac74841). The variable overrides the host there, and here too, so a
  lab's mirror is what the messages name;
- release v0.5.0 (f891919, 2018-09-26), which trained the EncNet files: https://hangzh.s3.amazonaws.com/encoding/,
  the backbones then called resnet50/resnet101 (resnet50s/resnet101s today, the same SHA1). That bucket has
  answered 403 since 2020 (the authors' issues #90 and #273); the address is kept as the files' provenance.

mmsegmentation publishes its EncNet checkpoints under https://download.openmmlab.com/mmsegmentation/v0.5/encnet/.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ZOO_REPO", "PublishedFile", "PUBLISHED_FILES", "missing_checkpoint_message", "published_file"]

ZOO_REPO = "https://s3.us-west-1.wasabisys.com/encoding"
_ZOO_V050 = "https://hangzh.s3.amazonaws.com/encoding/models/{name}.zip"
_MMSEG = "https://download.openmmlab.com/mmsegmentation/v0.5/encnet/{folder}/{name}"


@dataclass(frozen=True)
class PublishedFile:
    stem: str  # today's name without extension
    v050_stem: str | None = None  # the authors' zoo: its name at release v0.5.0; None where v0.5.0 had no such file
    mmseg_folder: str | None = None  # mmsegmentation: the config folder it is published under

    @property
    def names(self) -> tuple[str, ...]:
        """File names it may be saved under: the zoo's unzipped .pth and its .zip, today's names first."""
        if self.mmseg_folder is not None:
            return (f"{self.stem}.pth",)
        stems = (self.stem,) + ((self.v050_stem,) if self.v050_stem and self.v050_stem != self.stem else ())
        return tuple(f"{s}{ext}" for ext in (".pth", ".zip") for s in stems)

    def addresses(self) -> tuple[str, ...]:
        """Where to download it: today's address, then release v0.5.0's (the authors' zoo)."""
        if self.mmseg_folder is not None:
            return (_MMSEG.format(folder=self.mmseg_folder, name=f"{self.stem}.pth"),)
        repo = os.environ.get("ENCODING_REPO", ZOO_REPO)
        today = f"{repo}{'' if repo.endswith('/') else '/'}models/{self.stem}.zip"
        return (today,) + ((_ZOO_V050.format(name=self.v050_stem),) if self.v050_stem else ())

    def where(self) -> str:
        """The addresses in words: 'ADDRESS (release v0.5.0: ADDRESS)'."""
        today, *v050 = self.addresses()
        if self.mmseg_folder is not None:
            return f"{today} (mmsegmentation)"
        if v050:
            return f"{today} (release v0.5.0: {v050[0]})"
        return f"{today} (not in release v0.5.0: published later)"


def _mmseg(folder: str, stamp: str) -> PublishedFile:
    return PublishedFile(f"{folder}_{stamp}", mmseg_folder=folder)


# Every file ``encnet.report.published.CATALOGUE`` evaluates. The SHA1 prefixes are model_store.py's.
PUBLISHED_FILES: dict[str, PublishedFile] = {f.stem: f for f in (
    PublishedFile("encnet_resnet50s_pcontext-4de91d59", "encnet_resnet50_pcontext-4de91d59"),
    PublishedFile("encnet_resnet101s_pcontext-9f27ea13", "encnet_resnet101_pcontext-9f27ea13"),
    PublishedFile("encnet_resnet50s_ade-07ac287c", "encnet_resnet50_ade-07ac287c"),
    PublishedFile("encnet_resnet101s_ade-3f54fa3b", "encnet_resnet101_ade-3f54fa3b"),
    # Retrained after v0.5.0: v0.5.0's fcn_resnet50_ade-fc8c0b79 is another file (another SHA1).
    PublishedFile("fcn_resnet50s_ade-662e979d", None),
    _mmseg("encnet_r50-d8_512x512_80k_ade20k", "20200622_042412-44b46b04"),
    _mmseg("encnet_r101-d8_512x512_80k_ade20k", "20200622_101128-dd35e237"),
    _mmseg("encnet_r50-d8_512x512_160k_ade20k", "20200622_101059-b2db95e0"),
    _mmseg("encnet_r101-d8_512x512_160k_ade20k", "20200622_073348-7989641f"),
)}


def published_file(name: str) -> PublishedFile | None:
    """The published file saved as ``name`` (any of its names), or None."""
    return next((f for f in PUBLISHED_FILES.values() if Path(name).name in f.names), None)


def missing_checkpoint_message(path: str | Path) -> str:
    """What to say when ``path`` is not there: the file, the folder looked in and, for a published file, where
    to download it."""
    path = Path(path)
    folder = path.parent.resolve()
    text = f"no checkpoint {path.name} in {folder}"
    published = published_file(path.name)
    if published is not None:
        text += f"; download it from {published.where()} into {folder}"
        if published.mmseg_folder is None:
            text += " (the .zip as downloaded, or the .pth inside it)"
    return text
