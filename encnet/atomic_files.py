"""Atomic writes: a file appears whole under its name or not at all, with the mode an ordinary ``open`` gives it.

The one implementation behind the run folders' logs and checkpoints (``encnet.engine.runs``), the data cache's
indexes and generated datasets (``encnet.data.cache``) and the HTML reports.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable


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


def write_atomically(path: str | Path, write: Callable[[BinaryIO], object]) -> None:
    """``write(handle)`` into a temporary file beside ``path``, flushed to disk, then renamed to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        usual_permissions(fd)
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)  # readers see the old file or the new one, never half of one
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomically(path: str | Path, text: str) -> None:
    """``text`` as UTF-8, through :func:`write_atomically`."""
    write_atomically(path, lambda handle: handle.write(text.encode("utf-8")))
