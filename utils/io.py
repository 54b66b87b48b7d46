"""Atomic file writes: a reader never sees a half-written file, a crash leaves the old one."""

import contextlib
import json
import os
import tempfile

import numpy as np
import torch


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "wb"):
    """Open a temporary file beside ``path``; on success fsync it and rename it into place."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".",
                               suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def save_torch(obj, path: str) -> None:
    with atomic_open(path, "wb") as f:
        torch.save(obj, f)


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
