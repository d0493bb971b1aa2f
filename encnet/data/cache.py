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

from encnet.atomic_files import usual_permissions, write_text_atomically

__all__ = ["build_dir_atomically", "default_cache_dir", "write_text_atomically"]


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
