"""Posed captures of your own: the frame sequence every capture reader returns.

Every capture reader returns :class:`datasets.sequence.PosedFrame` s, which
:func:`datasets.captures.open_capture` (it detects the format) turns into the
:class:`datasets.sequence.PosedSequence` the evaluation reads too. This module reads the
``folder`` format (the DVMVS sample-data layout)::

    DIR/images/*.png|jpg       colour, any size (all the same)
    DIR/poses.txt              one flattened 4x4 camera-to-world per line, image-name order
      or DIR/poses/<stem>.txt  one 4x4 camera-to-world per image
    DIR/K.txt                  3x3 intrinsics of the images' native size
    DIR/depth/<stem>.png       optional uint16 millimetres, 0 = invalid

Frames are chosen by a fixed interval, or as keyframes: a frame is kept once the camera
has moved ``min_baseline`` metres or turned ``min_rotation`` degrees since the last kept one.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import numpy as np

from datasets.io import DataError, check_rigid_pose, not_found, read_intrinsics, read_pose
from datasets.sequence import PosedFrame

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def natural_key(name: str):
    """Sort key putting ``frame2`` before ``frame10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def select_frames(poses: Sequence[np.ndarray], frame_interval: int = 1,
                  min_baseline: float = 0.0, min_rotation: float = 0.0) -> list[int]:
    """Indices of the frames to use.

    With ``min_baseline`` (m) or ``min_rotation`` (degrees) > 0: keyframes, the first frame
    and then every frame whose translation or rotation from the last kept frame reaches
    either threshold. Otherwise every ``frame_interval``-th frame.
    """
    if frame_interval < 1:
        raise ValueError(f"frame_interval must be >= 1, got {frame_interval}")
    if min_baseline <= 0 and min_rotation <= 0:
        return list(range(0, len(poses), frame_interval))
    kept = [0] if len(poses) else []
    for index in range(1, len(poses)):
        last, pose = poses[kept[-1]], poses[index]
        baseline = np.linalg.norm(pose[:3, 3] - last[:3, 3])
        cos = (np.trace(last[:3, :3].T @ pose[:3, :3]) - 1) / 2
        angle = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
        if (min_baseline > 0 and baseline >= min_baseline) or \
                (min_rotation > 0 and angle >= min_rotation):
            kept.append(index)
    return kept


def _is_image_name(path: Path) -> bool:
    """An image suffix and not hidden: macOS leaves ``._frame.jpg`` (resource forks) and
    ``.DS_Store`` beside the images on foreign disks."""
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def list_images(folder: Path) -> list[Path]:
    """The colour images of ``folder`` in natural name order."""
    if not folder.is_dir():
        raise not_found(folder, "image folder")
    images = [p for p in folder.iterdir() if _is_image_name(p) and p.is_file()]
    if not images:
        raise DataError(f"no .png/.jpg images in {folder}")
    return sorted(images, key=lambda p: natural_key(p.name))


def read_poses_file(path: Path) -> list[np.ndarray]:
    """``poses.txt``: one flattened 4x4 camera-to-world per line (row-major)."""
    try:
        rows = np.loadtxt(path, dtype=np.float64, ndmin=2, comments="#")
    except ValueError as err:
        raise DataError(f"cannot parse poses file {path}: {err}") from None
    if rows.shape[1] != 16:
        raise DataError(f"poses file {path} must hold 16 numbers (a flattened 4x4 "
                        f"camera-to-world) per line, got {rows.shape[1]}")
    return [check_rigid_pose(row.reshape(4, 4), f"poses file {path}, line {i + 1}")
            for i, row in enumerate(rows)]


def _check_pose_count(poses_file: Path, count: int, images: list[Path]) -> None:
    """One pose line per image, in name order: name the first image without a pose, or
    the first line without an image."""
    if count < len(images):
        raise DataError(f"poses file {poses_file} has {count} poses but {images[0].parent} has "
                        f"{len(images)} images: no pose for {images[count].name} and any after "
                        f"it")
    if count > len(images):
        raise DataError(f"poses file {poses_file} has {count} poses but {images[0].parent} has "
                        f"{len(images)} images: line {len(images) + 1} and after have no image "
                        f"(a missing image?)")


def read_pose_dir(poses_dir: Path, images: list[Path]) -> list[np.ndarray]:
    """``poses_dir/<stem>.txt`` of every image; a pose file without an image is an error."""
    stems = {image.stem for image in images}
    extra = sorted((p.name for p in poses_dir.glob("*.txt")
                    if not p.name.startswith(".") and p.stem not in stems), key=natural_key)
    if extra:
        raise DataError(f"{poses_dir} has pose file(s) without an image in "
                        f"{images[0].parent}: {', '.join(extra[:5])}"
                        f"{f' and {len(extra) - 5} more' if len(extra) > 5 else ''}")
    poses = []
    for image in images:
        path = poses_dir / f"{image.stem}.txt"
        if not path.is_file():
            raise DataError(f"pose file missing for image {image}: {path}")
        poses.append(read_pose(path))
    return poses


def folder_frames(root: Path) -> tuple[list[PosedFrame], np.ndarray, str]:
    """Frames, native intrinsics and their source of a ``folder`` capture."""
    images = list_images(root / "images")
    poses_file, poses_dir = root / "poses.txt", root / "poses"
    if poses_file.is_file():
        poses = read_poses_file(poses_file)
        _check_pose_count(poses_file, len(poses), images)
    elif poses_dir.is_dir():
        poses = read_pose_dir(poses_dir, images)
    else:
        raise DataError(f"no poses in {root}: expected {poses_file} (one flattened 4x4 per "
                        f"line) or {poses_dir}/<image name>.txt")
    K_file = root / "K.txt"
    if not K_file.is_file():
        raise DataError(f"intrinsics file not found: {K_file} (3x3 for the images' size)")
    depth_dir = root / "depth"
    frames = [PosedFrame(image, pose, depth_dir / f"{image.stem}.png" if depth_dir.is_dir()
                         else None) for image, pose in zip(images, poses)]
    return frames, read_intrinsics(K_file), str(K_file)
