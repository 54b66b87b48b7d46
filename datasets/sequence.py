"""Evaluation-side frame sequences, shared by the ScanNet and 7-Scenes layouts.

A layout only says how its frame files are named and which intrinsics apply; this
module does everything else: listing, subsampling every ``frame_interval`` frames,
skipping (and counting) frames whose pose is non-finite, and reading one frame.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from datasets.intrinsics import check_principal_point, resize_intrinsics
from datasets.io import (DataError, NonFinitePoseError, image_size, mask_depth_range, read_color,
                         read_depth, read_pose)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FrameFiles:
    """The files of one frame. ``depth`` may not exist (see :class:`FrameSequence`)."""

    frame_id: int
    color: Path
    depth: Path
    pose: Path


def index_files(folder: Path, pattern: str, canonical: Callable[[int], str]) -> dict[int, Path]:
    """Files of ``folder`` whose name fully matches ``pattern``, keyed by its integer group.

    Each name must equal ``canonical(frame_id)``: loaders rebuild paths from ids, so a
    differently padded name would otherwise be read as a missing file later.
    """
    if not folder.is_dir():
        raise DataError(f"folder not found: {folder}")
    regex = re.compile(pattern)
    found = {}
    for path in folder.iterdir():
        match = regex.fullmatch(path.name)
        if match:
            frame_id = int(match.group(1))
            if path.name != canonical(frame_id):
                raise DataError(f"{path}: unexpected file name, this layout names frame "
                                f"{frame_id} {canonical(frame_id)}")
            found[frame_id] = path
    return found


def pair_frame_files(color_by_id: dict[int, Path], pose_by_id: dict[int, Path],
                     frame_files: Callable[[int], FrameFiles], where: Path) -> list[FrameFiles]:
    """Frames sorted by id; every colour image needs a pose file and vice versa.

    Frame ids are sorted numerically (the official ``sorted(int(...))``/``natsorted``).
    A frame with only one of the two is an error naming the missing file, because a gap
    would shift which frames the every-``interval``-th subsampling picks.
    """
    for ids, field, what in ((color_by_id.keys() - pose_by_id.keys(), "pose", "pose file"),
                             (pose_by_id.keys() - color_by_id.keys(), "color", "colour image")):
        if ids:
            missing = getattr(frame_files(min(ids)), field)
            raise DataError(f"{what} missing: {missing} ({len(ids)} frame(s) of {where} "
                            f"lack one)")
    if not color_by_id:
        raise DataError(f"no frames found in {where}")
    return [frame_files(frame_id) for frame_id in sorted(color_by_id)]


def frame_item(rgb_hw3, dmap_1hw, dmask_1hw, world_T_cam_44, cam_intr_33, img_path,
               frame_id) -> dict:
    """One evaluation frame in the layout every sequence reader returns (``dmap``/``dmask``
    None where the frame has no depth)."""
    return {
        "img": torch.from_numpy(rgb_hw3).permute(2, 0, 1).to(torch.float32),
        "dmap": dmap_1hw,
        "dmask": dmask_1hw,
        "cam_pose": torch.from_numpy(world_T_cam_44).to(torch.float32),
        "cam_intr": cam_intr_33.clone(),
        "img_path": str(img_path),
        "frame_id": frame_id,
    }


class FrameSequence(Dataset):
    """Frames of one scan, every ``frame_interval``-th in frame-id order, for evaluation.

    As in the official ``prepare_seqs`` (``data/general_eval_seq.py``), the frames at
    list positions ``0, interval, 2 * interval, ...`` are taken and those whose pose is
    non-finite are dropped; unlike it, the drop is counted in ``skipped_nonfinite`` and
    logged with the file names. A missing colour image or pose file is an error.

    A missing ground-truth depth map is not: the item then has ``dmap`` and ``dmask`` set
    to ``None`` (the metrics skip and count such frames); the paths are listed in
    ``missing_depth``.

    Items are dicts:
        ``img`` float32 [3, H, W] RGB 0..255 resized to ``height`` x ``width`` (bilinear);
        ``dmap`` float32 [1, h, w] metres, 0 invalid, at the depth map's native size (or
        ``depth_size``, nearest resizing), or ``None``;
        ``dmask`` bool [1, h, w] (``depth_min <= d <= depth_max``) or ``None``;
        ``cam_pose`` float32 [4, 4] camera-to-world; ``cam_intr`` float32 [3, 3] for the
        resized image; ``img_path`` str; ``frame_id`` int.
    """

    def __init__(self, frames: Sequence[FrameFiles], K_33: np.ndarray,
                 K_hw: Optional[Sequence[int]], height: int, width: int, frame_interval: int,
                 depth_min: float, depth_max: float,
                 depth_size: Optional[Sequence[int]] = None, name: str = "",
                 K_source: str = ""):
        """
        Args:
            frames: every frame of the scan, sorted by id.
            K_33: intrinsics of images of size ``K_hw`` (``(height, width)``); ``K_hw=None``
                means "of the colour images' native size" (a file shipped with the data,
                named by ``K_source`` in errors).
            name: the scan, for log lines and errors.
        """
        if frame_interval < 1:
            raise ValueError(f"frame_interval must be >= 1, got {frame_interval}")
        self.name = name
        self.height, self.width = height, width
        self.depth_min, self.depth_max = depth_min, depth_max
        self.depth_size = tuple(depth_size) if depth_size is not None else None

        self.frames: list[FrameFiles] = []
        self.poses: list[np.ndarray] = []
        skipped = []
        for frame in frames[::frame_interval]:
            try:
                self.poses.append(read_pose(frame.pose))
                self.frames.append(frame)
            except NonFinitePoseError:
                skipped.append(frame.pose)
        self.skipped_nonfinite = len(skipped)
        if skipped:
            logger.warning("%s: skipped %d frame(s) with a non-finite pose: %s", name,
                           len(skipped), ", ".join(str(p) for p in skipped))
        if not self.frames:
            raise DataError(f"{name}: no frame with a finite pose")

        self.missing_depth = [f.depth for f in self.frames if not f.depth.is_file()]
        if self.missing_depth:
            logger.warning("%s: %d frame(s) have no ground-truth depth: %s", name,
                           len(self.missing_depth), ", ".join(str(p) for p in self.missing_depth))
        # Every frame of a scan must share the first frame's native sizes; a stray
        # resolution would silently break intrinsics or metric batching.
        self.color_hw = image_size(self.frames[0].color, "colour image")
        with_depth = [f for f in self.frames if f.depth.is_file()]
        self.depth_hw = image_size(with_depth[0].depth, "depth map") if with_depth else None

        if K_hw is None:
            check_principal_point(K_33, self.color_hw, K_source or name)
            K_hw = self.color_hw
        self.cam_intr = torch.from_numpy(
            resize_intrinsics(K_33, K_hw, (height, width))).to(torch.float32)

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> dict:
        frame = self.frames[index]
        rgb = read_color(frame.color, (self.height, self.width), expect_hw=self.color_hw)
        dmap = dmask = None
        if frame.depth.is_file():
            depth = read_depth(frame.depth, self.depth_size, cv2.INTER_NEAREST,
                               expect_hw=self.depth_hw)
            depth, mask = mask_depth_range(depth, self.depth_min, self.depth_max)
            dmap, dmask = torch.from_numpy(depth)[None], torch.from_numpy(mask)[None]
        return frame_item(rgb, dmap, dmask, self.poses[index], self.cam_intr, frame.color,
                          frame.frame_id)


def stack_frames(items: Sequence[dict]) -> dict:
    """Stack sequence items into one window, the input layout of the model.

    Returns:
        dict with ``imgs`` [N, 3, H, W], ``cam_poses`` [N, 4, 4], ``cam_intr`` [3, 3],
        ``dmaps``/``dmasks`` (lists, entries may be ``None``), ``img_paths``, ``frame_ids``.
    """
    return {
        "imgs": torch.stack([item["img"] for item in items]),
        "cam_poses": torch.stack([item["cam_pose"] for item in items]),
        "cam_intr": items[0]["cam_intr"],
        "dmaps": [item["dmap"] for item in items],
        "dmasks": [item["dmask"] for item in items],
        "img_paths": [item["img_path"] for item in items],
        "frame_ids": [item["frame_id"] for item in items],
    }
