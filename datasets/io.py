"""File readers shared by every loader: colour, depth, pose, intrinsics and split lists.

Every reader raises :class:`DataError` naming the file and the problem; nothing is
silently skipped, replaced or defaulted. Loaders that must *react* to a non-finite pose
(the ScanNet sampler ends a scan there, evaluation skips the frame) catch
:class:`NonFinitePoseError` explicitly.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence, Tuple

import cv2
import numpy as np

# Depth PNGs store millimetres; 0 means "no measurement" and the original 7-Scenes release
# marks invalid pixels with 65535 instead.
DEPTH_SCALE = 1000.0
DEPTH_INVALID_MARKER = 65535


class DataError(ValueError):
    """A dataset file is missing, unreadable or inconsistent with the others."""


class NonFinitePoseError(DataError):
    """A pose file holds inf/nan (ScanNet marks frames its tracker lost this way)."""


def not_found(path, what: str) -> DataError:
    """The error for a missing ``path``; a symbolic link that leads nowhere (broken, or a
    loop) is named as such, since the path itself does exist."""
    if os.path.islink(path):
        try:
            os.stat(path)
        except OSError as err:
            return DataError(f"{what} {path} is a symbolic link that leads nowhere "
                             f"({err.strerror})")
    return DataError(f"{what} not found: {path}")


def _check_exists(path: Path, what: str) -> None:
    if not path.is_file():
        raise not_found(path, what)


def _check_hw(path: Path, what: str, actual_hw: Tuple[int, int],
              expect_hw: Optional[Sequence[int]]) -> None:
    if expect_hw is not None and tuple(actual_hw) != tuple(expect_hw):
        raise DataError(f"{what} {path} is {actual_hw[0]}x{actual_hw[1]} (HxW) but this "
                        f"sequence's are {expect_hw[0]}x{expect_hw[1]}")


def _resize(image: np.ndarray, size: Optional[Sequence[int]], interpolation: int) -> np.ndarray:
    if size is None or tuple(image.shape[:2]) == tuple(size):
        return image
    height, width = size
    return cv2.resize(image, (width, height), interpolation=interpolation)


# How complete files of a format end (after any trailing padding): a truncated file lacks
# it, and libjpeg decodes a truncated JPEG with grey filler, printing only a warning.
_FORMAT_ENDS = {b"\xff\xd8\xff": ("JPEG", b"\xff\xd9"),
                b"\x89PNG\r\n\x1a\n": ("PNG", b"IEND\xaeB`\x82")}


def _read_image(path: Path, what: str) -> np.ndarray:
    """Decode an image file with OpenCV (unchanged depth and channels).

    Raises:
        DataError: missing, truncated (a JPEG or PNG without its end marker) or undecodable.
    """
    _check_exists(path, what)
    data = path.read_bytes()
    if not data:  # cv2.imdecode raises on an empty buffer instead of returning None
        raise DataError(f"{what} {path} is empty (0 bytes): an interrupted copy or download?")
    for magic, (kind, end) in _FORMAT_ENDS.items():
        if data.startswith(magic) and not data.rstrip(b"\x00\r\n ").endswith(end):
            raise DataError(f"{what} {path} is truncated: the {kind} data stops after "
                            f"{len(data)} bytes without its end marker (an interrupted copy "
                            f"or download?)")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise DataError(f"cannot decode {what} {path} (corrupt or unsupported format)")
    return image


def image_size(path: Path | str, what: str = "image") -> Tuple[int, int]:
    """``(height, width)`` of an image file; ``what`` names it in errors."""
    image = _read_image(Path(path), what)
    return image.shape[0], image.shape[1]


def read_color(path: Path | str, size: Optional[Sequence[int]] = None,
               expect_hw: Optional[Sequence[int]] = None) -> np.ndarray:
    """Read an 8-bit colour image as RGB.

    Args:
        size: optional output ``(height, width)``; resized with cv2's default bilinear
            interpolation, as the official loaders do.
        expect_hw: optional ``(height, width)`` the file itself must have.
    Returns:
        rgb_hw3: ``uint8 [H, W, 3]``.
    """
    path = Path(path)
    bgr = _read_image(path, "colour image")
    if bgr.ndim != 3 or bgr.shape[2] != 3 or bgr.dtype != np.uint8:
        channels = 1 if bgr.ndim == 2 else bgr.shape[2]
        raise DataError(f"colour image {path} must be 8-bit with 3 channels, "
                        f"got {channels} channel(s) of {bgr.dtype}")
    _check_hw(path, "colour image", bgr.shape[:2], expect_hw)
    return cv2.cvtColor(_resize(bgr, size, cv2.INTER_LINEAR), cv2.COLOR_BGR2RGB)


def read_depth(path: Path | str, size: Optional[Sequence[int]] = None,
               interpolation: int = cv2.INTER_LINEAR,
               expect_hw: Optional[Sequence[int]] = None) -> np.ndarray:
    """Read a uint16 millimetre depth PNG as metres; invalid pixels (0, 65535) become 0.

    The invalid marker is zeroed *before* resizing so that 65535 never blends into valid
    depths. Resizing happens on the integer millimetres (like the official loader, which
    resizes the raw PNG and then divides by 1000), so bilinear results are bit-identical.

    Args:
        size: optional output ``(height, width)``.
        interpolation: cv2 flag for resizing (bilinear by default, as official training;
            use ``cv2.INTER_NEAREST`` to keep depth edges unblended).
        expect_hw: optional ``(height, width)`` the file itself must have.
    Returns:
        depth_hw: ``float32 [H, W]`` metres, 0 where unknown.
    """
    path = Path(path)
    raw = _read_image(path, "depth map")
    if raw.ndim != 2 or raw.dtype != np.uint16:
        raise DataError(f"depth map {path} must be single-channel uint16 millimetres, "
                        f"got shape {raw.shape} of {raw.dtype}")
    _check_hw(path, "depth map", raw.shape, expect_hw)
    raw = np.where(raw == DEPTH_INVALID_MARKER, np.uint16(0), raw)
    return _resize(raw, size, interpolation).astype(np.float32) / np.float32(DEPTH_SCALE)


def mask_depth_range(depth_hw: np.ndarray, depth_min: float, depth_max: float):
    """Official validity rule: ``depth_min <= d <= depth_max`` and finite; others set to 0.

    Returns:
        (depth_hw, mask_hw): the masked depth (a copy) and the boolean mask.
    """
    mask = (depth_hw >= depth_min) & (depth_hw <= depth_max) & np.isfinite(depth_hw)
    return np.where(mask, depth_hw, np.float32(0)).astype(np.float32), mask


def _load_matrix(path: Path, what: str) -> np.ndarray:
    _check_exists(path, what)
    try:
        return np.loadtxt(path, dtype=np.float64, ndmin=2)
    except ValueError as err:
        raise DataError(f"cannot parse {what} {path}: {err}") from None


# A rotation must satisfy |R^T R - I| and |det R - 1| below this: the real 7-Scenes poses
# (KinectFusion) are off by up to 2.2e-4, a scaled or sheared matrix by far more.
ROTATION_TOLERANCE = 1e-2
# Translations beyond this (m) are not a camera in a room; they lose all float32 precision
# (the model's) and overflow it from ~3.4e38 m.
MAX_TRANSLATION = 1e6


def read_pose(path: Path | str) -> np.ndarray:
    """Read a whitespace-separated 4x4 camera-to-world matrix (``world_T_cam``).

    Raises:
        NonFinitePoseError: the matrix holds inf or nan.
        DataError: missing file, unparsable text, wrong shape, a bottom row that is not
            ``0 0 0 1``, a rotation that is not orthonormal with determinant 1 (within
            :data:`ROTATION_TOLERANCE`) or a translation beyond :data:`MAX_TRANSLATION`.
    Returns:
        world_T_cam_44: ``float64 [4, 4]``.
    """
    path = Path(path)
    return check_rigid_pose(_load_matrix(path, "pose file"), f"pose file {path}")


def check_rigid_pose(pose_44: np.ndarray, source: str) -> np.ndarray:
    """``pose_44`` as float64 if it is a finite rigid 4x4 transform (see :func:`read_pose`).

    Raises:
        NonFinitePoseError or DataError, their message starting with ``source``.
    """
    pose = np.asarray(pose_44, dtype=np.float64)
    if pose.shape != (4, 4):
        raise DataError(f"{source} must hold a 4x4 matrix, got shape {pose.shape}")
    if not np.all(np.isfinite(pose)):
        raise NonFinitePoseError(f"{source} holds non-finite values")
    if not np.allclose(pose[3], [0.0, 0.0, 0.0, 1.0], atol=1e-6):
        raise DataError(f"{source} is not a rigid transform: bottom row {pose[3]}")
    R = pose[:3, :3]
    off_orthonormal = float(np.abs(R.T @ R - np.eye(3)).max())
    det = float(np.linalg.det(R))
    if off_orthonormal > ROTATION_TOLERANCE or abs(det - 1.0) > ROTATION_TOLERANCE:
        raise DataError(f"{source} is not a rigid transform: its rotation has "
                        f"|R^T R - I| = {off_orthonormal:.3g} and det {det:.4g} (need "
                        f"orthonormal with det 1, within {ROTATION_TOLERANCE})")
    if np.abs(pose[:3, 3]).max() > MAX_TRANSLATION:
        raise DataError(f"{source} has a translation of {pose[:3, 3]} m: beyond "
                        f"{MAX_TRANSLATION:g} m it is not a usable camera position (centre "
                        f"the coordinates)")
    return pose


def read_intrinsics(path: Path | str) -> np.ndarray:
    """Read a 3x3 intrinsic matrix, or the top-left 3x3 of a 4x4 one (ScanNet's format).

    Returns:
        K_33: ``float64 [3, 3]``.
    """
    path = Path(path)
    matrix = _load_matrix(path, "intrinsics file")
    if matrix.shape not in ((3, 3), (4, 4)):
        raise DataError(f"intrinsics file {path} must hold a 3x3 or 4x4 matrix, "
                        f"got shape {matrix.shape}")
    K = matrix[:3, :3]
    if not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0 \
            or not np.allclose(K[2], [0.0, 0.0, 1.0]):
        raise DataError(f"intrinsics file {path} is not a pinhole matrix:\n{K}")
    return K


def read_split_file(path: Path | str) -> list[str]:
    """Entries of a split/list file, one per line; blank lines are ignored."""
    path = Path(path)
    _check_exists(path, "split file")
    entries = [line.strip() for line in path.read_text().splitlines()]
    entries = [entry for entry in entries if entry]
    if not entries:
        raise DataError(f"split file {path} lists nothing")
    return entries


def listed_dirs(root: Path | str, split_file: Path | str) -> list[Path]:
    """``root/entry`` for every entry of a split file; every one must be a folder.

    Raises:
        DataError: naming the split file and the entries that are absent under ``root``,
            or that do not name a folder below it (``.``, ``..``, absolute paths).
    """
    root = Path(root)
    entries = read_split_file(split_file)
    outside = [e for e in entries
               if Path(e).is_absolute() or not Path(e).parts or ".." in Path(e).parts]
    if outside:
        raise DataError(f"split file {split_file} lists {outside[0]!r}: entries must name a "
                        f"folder below the data root {root}")
    missing = [entry for entry in entries if not (root / entry).is_dir()]
    if missing:
        shown = ", ".join(missing[:5])
        if len(missing) > 5:
            shown += f" and {len(missing) - 5} more"
        raise DataError(f"split file {split_file} lists {len(missing)} entr"
                        f"{'y' if len(missing) == 1 else 'ies'} absent under {root}: {shown}")
    return [root / entry for entry in entries]
