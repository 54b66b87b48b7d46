"""Posed captures of your own: the frame sequence every capture reader returns.

A :class:`PosedSequence`'s items are those of the evaluation sequences
(:class:`datasets.sequence.FrameSequence`): ``img`` [3, H, W] RGB 0..255 resized to the
network size, ``cam_intr`` [3, 3] for the resized image, ``cam_pose`` [4, 4]
camera-to-world, ``dmap``/``dmask`` (or ``None`` without depth), ``img_path``,
``frame_id``. So :func:`evaluation.inference_loop.infer_windows` runs on any of them.
:func:`datasets.captures.open_capture` detects a capture's format and opens it; this module
reads the ``folder`` format (the DVMVS sample-data layout)::

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
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from datasets.intrinsics import check_principal_point, resize_intrinsics
from datasets.io import (DataError, check_rigid_pose, image_size, mask_depth_range, read_color,
                         read_depth, read_intrinsics, read_pose)
from datasets.sequence import frame_item

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass(frozen=True)
class PosedFrame:
    """One frame of a capture: colour file, camera-to-world pose, optional depth file."""

    color: Path
    world_T_cam_44: np.ndarray
    depth: Optional[Path] = None


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


class PosedSequence(Dataset):
    """The frames of a capture with known intrinsics, as the evaluation sequences yield them.

    Args:
        frames: the selected frames, in capture order.
        K_33: intrinsics of the colour images' native size.
        depth_scale: depth-PNG units per metre (1000 for millimetres, 5000 for TUM).
        depth_min, depth_max: ground-truth depth outside is invalid.
        name: the capture, for errors and logs; ``K_source`` names where K came from.
    """

    def __init__(self, frames: Sequence[PosedFrame], K_33: np.ndarray, height: int, width: int,
                 depth_scale: float = 1000.0, depth_min: float = 0.01, depth_max: float = 10.0,
                 name: str = "", K_source: str = ""):
        if not frames:
            raise DataError(f"{name}: no frames")
        self.name = name
        self.frames = list(frames)
        self.poses = [frame.world_T_cam_44 for frame in self.frames]
        self.height, self.width = height, width
        self.depth_scale = float(depth_scale)
        self.depth_min, self.depth_max = depth_min, depth_max
        self.color_hw = image_size(self.frames[0].color, "colour image")
        check_principal_point(K_33, self.color_hw, K_source or name)
        self.K_native_33 = np.asarray(K_33, dtype=np.float64)
        self.cam_intr = torch.from_numpy(
            resize_intrinsics(K_33, self.color_hw, (height, width))).to(torch.float32)
        self.missing_depth = [f.color for f in self.frames
                              if f.depth is None or not f.depth.is_file()]
        with_depth = [f for f in self.frames if f.depth is not None and f.depth.is_file()]
        self.depth_hw = image_size(with_depth[0].depth, "depth map") if with_depth else None
        self.skipped_nonfinite = 0

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> dict:
        frame = self.frames[index]
        rgb = read_color(frame.color, (self.height, self.width), expect_hw=self.color_hw)
        dmap = dmask = None
        if frame.depth is not None and frame.depth.is_file():
            depth = read_depth(frame.depth, None, cv2.INTER_NEAREST, expect_hw=self.depth_hw)
            # read_depth assumes millimetres; rescale for other units (TUM: 5000 per metre).
            depth = depth * np.float32(1000.0 / self.depth_scale)
            depth, mask = mask_depth_range(depth, self.depth_min, self.depth_max)
            dmap, dmask = torch.from_numpy(depth)[None], torch.from_numpy(mask)[None]
        return frame_item(rgb, dmap, dmask, self.poses[index], self.cam_intr, frame.color, index)


# -------------------------------------------------------------------- folder format
def list_images(folder: Path) -> list[Path]:
    """The colour images of ``folder`` in natural name order."""
    if not folder.is_dir():
        raise DataError(f"image folder not found: {folder}")
    images = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
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


def folder_frames(root: Path) -> tuple[list[PosedFrame], np.ndarray, str]:
    """Frames, native intrinsics and their source of a ``folder`` capture."""
    images = list_images(root / "images")
    poses_file, poses_dir = root / "poses.txt", root / "poses"
    if poses_file.is_file():
        poses = read_poses_file(poses_file)
        if len(poses) != len(images):
            raise DataError(f"poses file {poses_file} has {len(poses)} poses but "
                            f"{root / 'images'} has {len(images)} images")
    elif poses_dir.is_dir():
        poses = []
        for image in images:
            path = poses_dir / f"{image.stem}.txt"
            if not path.is_file():
                raise DataError(f"pose file missing for image {image}: {path}")
            poses.append(read_pose(path))
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
