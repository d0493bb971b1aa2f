"""The cache folder for generated data and derived indexes, and atomic writes into it.

Default: ``$ENCNET_CACHE``, else ``~/.cache/encnet``. Everything is built in a temporary sibling and renamed
into place, so an interrupted build never leaves something that looks complete.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable


def usual_permissions(target: int | str | Path, directory: bool = False) -> None:
    """Give a file or folder made by ``tempfile`` (0600 / 0700) the mode ``open`` or ``mkdir`` would have given it.

    Without this, everything written atomically (run logs, checkpoints, reports, generated data) is readable by its
    owner only, which breaks shared run folders and caches on a cluster. The umask is read by setting it and setting
    it back, the only portable way; the moment in between is harmless, as it only widens what ``tempfile`` narrows.
    """
    umask = os.umask(0o022)
    os.umask(umask)
    mode = (0o777 if directory else 0o666) & ~umask
    if isinstance(target, int):
        os.fchmod(target, mode)
    else:
        os.chmod(target, mode)


def default_cache_dir() -> Path:
    return Path(os.environ.get("ENCNET_CACHE") or Path.home() / ".cache" / "encnet")


def build_dir_atomically(final: Path, build: Callable[[Path], None]) -> Path:
    """Run ``build(tmp)`` in a temporary folder next to ``final``, then rename it to ``final``.

    If another process finished the same folder first, its result is kept and ours is discarded.
    """
    final = Path(final)
    if final.is_dir():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        usual_permissions(tmp, directory=True)
        build(tmp)
        try:
            os.replace(tmp, final)
        except OSError:
            if not final.is_dir():  # not a lost race: a real failure
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def write_text_atomically(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        usual_permissions(fd)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
