"""Atomic file writes: a reader never sees a half-written file, a crash leaves the old one.

Files get the permissions of an ordinary ``open()`` (0666 less the process umask), a
failed write names the file and the cause (``ENOSPC`` ...), and :func:`remove_stale_temps`
clears what a killed writer left. :func:`folder_lock` keeps two runs out of one folder.
"""

import contextlib
import hashlib
import io
import errno
import json
import os
import re
import socket
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

TEMP_SUFFIX = ".tmp"
# ".<name>.<8 random characters of mkstemp>.tmp": only files of this shape are ours.
_TEMP_NAME = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")
LOCK_FILE = ".lock"


class FolderLockedError(RuntimeError):
    """Another process holds the lock of an output folder."""


def shared_dir() -> Path:
    """The project's shared material (reference fixture, 7-Scenes sample):
    ``$ESTDEPTH_SHARED``, else the ``shared`` folder beside the project."""
    default = Path(__file__).resolve().parents[2] / "shared"
    return Path(os.environ.get("ESTDEPTH_SHARED", default))


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux >= 4.7)."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o022)  # elsewhere the only way is to set it and put it back
    os.umask(mask)
    return mask


# What a write error means to the person running the job; strerror alone ("File too
# large") is easy to misread as a problem of the data rather than of the disk.
WRITE_CAUSES = {errno.ENOSPC: "disk full", errno.EFBIG: "file too large",
                errno.EACCES: "permission denied", errno.EPERM: "permission denied",
                errno.EROFS: "read-only file system", errno.EDQUOT: "disk quota exceeded",
                errno.EIO: "input/output error (a failing disk or network mount?)"}


def _write_error(err: OSError, path: str) -> OSError:
    """``err`` restated with the file being written, the cause in words and the errno."""
    code = err.errno
    if code is None:
        return OSError(f"cannot write {path}: {err}")
    name = errno.errorcode.get(code, str(code))
    cause = WRITE_CAUSES.get(code, os.strerror(code))
    # OSError(errno, ...) picks the matching subclass (PermissionError for EACCES, ...)
    return OSError(code, f"cannot write {path}: {cause} ({os.strerror(code)}, {name})", path)


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "wb"):
    """Open a temporary file beside ``path``; on success fsync it and rename it into place.

    Raises:
        OSError naming ``path`` and the errno (e.g. ``ENOSPC`` on a full disk); the
        temporary file is removed and an existing ``path`` is left as it was.
    """
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".",
                                   suffix=TEMP_SUFFIX)
    except OSError as err:
        raise _write_error(err, path) from err
    try:
        # mkstemp creates 0600; give what open() would, so a lab group can read results
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        if isinstance(err, OSError):
            raise _write_error(err, path) from err
        raise


def remove_stale_temps(folder: str, recursive: bool = False) -> list:
    """Delete the temporary files a killed :func:`atomic_open` left in ``folder``.

    Call it only when no other writer can be working in ``folder`` (at a run's start,
    under its lock). Returns the removed paths.
    """
    removed = []
    if not os.path.isdir(folder):
        return removed
    walk = os.walk(folder) if recursive else [(folder, [], os.listdir(folder))]
    for directory, _, names in walk:
        for name in names:
            path = os.path.join(directory, name)
            if _TEMP_NAME.match(name) and os.path.isfile(path):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path)
                    removed.append(path)
    return removed


@contextlib.contextmanager
def folder_lock(folder: str, what: str = ""):
    """Hold an advisory lock on ``folder`` (``folder/.lock``) for the duration.

    The lock file records who holds it (pid, host, start time, command line, ``what``)
    and is removed on release; the kernel releases the lock when the holder dies, however
    it ends, and the next run takes the stale file over.

    Raises:
        FolderLockedError naming the run that holds the lock.
    """
    try:
        import fcntl
    except ImportError:  # not POSIX: no advisory locks, run unprotected
        yield
        return
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, LOCK_FILE)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            with contextlib.suppress(FileNotFoundError), open(path) as f:
                holder = f.read().strip()
            raise FolderLockedError(
                f"{folder} is in use by another run ({holder or 'details not written yet'}); "
                f"wait for it to finish or use another output folder") from None
        with contextlib.suppress(FileNotFoundError):
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                break  # not a file its previous holder removed while we opened it
        os.close(fd)
    try:
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
                "command": " ".join(sys.argv), "what": what}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)  # still holding the lock: nobody else can have taken it
        os.close(fd)


def save_torch(obj, path: str) -> None:
    """``torch.save`` atomically. Serialised in memory first: torch's writer turns a full
    disk into an opaque "unexpected pos" error, a plain write says what happened."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with atomic_open(path, "wb") as f:
        f.write(buffer.getbuffer())


def save_npy(array: np.ndarray, path: str) -> None:
    with atomic_open(path, "wb") as f:
        np.save(f, array)


def save_text(text: str, path: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def save_json(obj, path: str) -> None:
    save_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", path)


def save_image(path: str, image_hwc_bgr: np.ndarray) -> None:
    """Encode with OpenCV (format from the extension) and write atomically."""
    import cv2  # imported here: only the writers of pictures need OpenCV

    ok, buf = cv2.imencode(os.path.splitext(path)[1], image_hwc_bgr)
    if not ok:
        raise ValueError(f"could not encode an image for {path}")
    with atomic_open(path, "wb") as f:
        f.write(buf.tobytes())


def file_sha256(path, chunk: int = 1 << 22) -> str:
    """SHA-256 of a file's content, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def config_hash(hashed: dict) -> str:
    """A run's identity: 16 hex digits of the SHA-256 of ``hashed`` as sorted JSON."""
    return hashlib.sha256(json.dumps(hashed, sort_keys=True).encode()).hexdigest()[:16]
