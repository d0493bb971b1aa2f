"""Files and folders written atomically get the mode a plain ``open`` or ``mkdir`` gives under the same umask.

``tempfile`` creates 0600 files and 0700 folders; renamed into place unchanged, run logs, checkpoints, reports and
generated data would be readable by their owner only (a shared run folder or cache on a cluster breaks). The oracle
is a file and a folder made the ordinary way beside them.
"""

import os
import stat

import pytest

from encnet.atomic_files import write_text_atomically
from encnet.data.cache import build_dir_atomically
from encnet.engine.runs import atomic_save, atomic_write_text, save_checkpoint


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture(params=[0o022, 0o027, 0o002])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def test_atomic_writes_have_the_modes_of_plain_ones(tmp_path, umask):
    plain_file = tmp_path / "plain.txt"
    plain_file.write_text("x")
    plain_dir = tmp_path / "plain_dir"
    plain_dir.mkdir()
    assert mode(plain_file) == 0o666 & ~umask  # the oracle itself, so a surprise in the platform shows here

    atomic_write_text(tmp_path / "eval.json", "{}")
    atomic_save({"a": 1}, tmp_path / "model.pt")
    checkpoint = save_checkpoint({"a": 1}, tmp_path / "run")
    write_text_atomically(tmp_path / "cache" / "index.txt", "x")
    built = build_dir_atomically(tmp_path / "cache" / "dataset", lambda folder: (folder / "a.png").write_bytes(b"x"))

    for path in (tmp_path / "eval.json", tmp_path / "model.pt", checkpoint, tmp_path / "cache" / "index.txt",
                 built / "a.png"):
        assert mode(path) == mode(plain_file), path
    assert mode(built) == mode(plain_dir)
    assert os.umask(umask) == umask  # the helper put the umask back
