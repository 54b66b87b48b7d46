"""utils/io.py: atomic writes. A failed write names the file and keeps the old one; what is
written follows the umask."""

from __future__ import annotations

import errno
import os
import re

import numpy as np
import pytest

from models.depthnet import DepthNetHybrid
from utils import checkpoint as ckpt_io
from utils import io as io_utils


def _disk_full(fd):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    """No temporary file is left behind either (arrays and checkpoints alike)."""
    target = tmp_path / "depth.npy"
    io_utils.save_npy(np.zeros(3), str(target))
    ckpt_path = tmp_path / "model_000000.ckpt"
    model = DepthNetHybrid(ndepths=4, depth_min=0.5, depth_max=5.0, resnet=18)
    monkeypatch.setattr(io_utils.os, "fsync", _disk_full)
    with pytest.raises(OSError, match=f"cannot write {re.escape(str(target))}.*ENOSPC"):
        io_utils.save_npy(np.ones(3), str(target))
    with pytest.raises(OSError, match=f"{re.escape(str(ckpt_path))}.*ENOSPC"):
        ckpt_io.save_checkpoint(str(ckpt_path), model)
    monkeypatch.undo()
    assert np.load(target).tolist() == [0, 0, 0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["depth.npy"]


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_outputs_respect_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        io_utils.save_json({"a": 1}, str(tmp_path / "a.json"))
        io_utils.save_torch({"a": 1}, str(tmp_path / "a.ckpt"))
        for name in ("a.json", "a.ckpt"):
            assert (tmp_path / name).stat().st_mode & 0o777 == mode
        assert io_utils.current_umask() == umask
    finally:
        os.umask(old)


@pytest.mark.parametrize("code, cause", [(errno.ENOSPC, "disk full"),
                                         (errno.EFBIG, "file too large"),
                                         (errno.EACCES, "permission denied")])
def test_a_failed_write_names_the_file_and_the_cause(tmp_path, monkeypatch, code, cause):
    target = tmp_path / "summary.json"

    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(io_utils.os, "fsync", fail)
    with pytest.raises(OSError, match=rf"cannot write {re.escape(str(target))}: {cause} "
                                      rf"\(.*{errno.errorcode[code]}\)") as info:
        io_utils.save_json({"a": 1}, str(target))
    assert info.value.errno == code and info.value.filename == str(target)
    monkeypatch.setattr(io_utils.tempfile, "mkstemp", fail)  # the temporary file's creation
    with pytest.raises(OSError, match=rf"{re.escape(str(target))}: {cause}"):
        io_utils.save_json({"a": 1}, str(target))
    assert not target.exists()


class _FillingFile:
    """A file on a disk that fills up after ``room`` bytes."""

    def __init__(self, f, room: int = 1000):
        self.f, self.room = f, room

    def write(self, data) -> int:
        self.room -= len(data)
        if self.room < 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self.f.__exit__(*exc)


def test_a_checkpoint_written_to_a_full_disk_says_the_disk_is_full(tmp_path, monkeypatch):
    real_fdopen = os.fdopen
    monkeypatch.setattr(io_utils.os, "fdopen", lambda *a, **k: _FillingFile(real_fdopen(*a, **k)))
    path = tmp_path / "model_000000.ckpt"
    with pytest.raises(OSError, match=f"cannot write {re.escape(str(path))}: disk full"):
        io_utils.save_torch({"weights": np.zeros(10_000)}, str(path))
    assert not list(tmp_path.iterdir())
