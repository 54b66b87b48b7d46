"""The one posed frame sequence: ScanNet and 7-Scenes scans and your own captures.

A layout or capture reader only says which files make its frames and which intrinsics
apply; this module does everything else: listing and pairing scan files, subsampling every
``frame_interval`` frames, skipping (and counting) frames whose pose is non-finite, and
reading one frame (:class:`PosedSequence`).
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
from datasets.io import (DataError, NonFinitePoseError, image_size, mask_depth_range, not_found,
                         read_color, read_depth, read_pose)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FrameFiles:
    """The files of one scan frame. ``depth`` may not exist (see :class:`PosedSequence`)."""

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
        raise not_found(folder, "folder")
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
    """One frame in the layout every sequence returns (``dmap``/``dmask`` None where the
    frame has no depth)."""
    return {
        "img": torch.from_numpy(rgb_hw3).permute(2, 0, 1).to(torch.float32),
        "dmap": dmap_1hw,
        "dmask": dmask_1hw,
        "cam_pose": torch.from_numpy(world_T_cam_44).to(torch.float32),
        "cam_intr": cam_intr_33.clone(),
        "img_path": str(img_path),
        "frame_id": frame_id,
    }


@dataclass(frozen=True)
class PosedFrame:
    """One frame: colour file, camera-to-world pose, optional depth file, and its id
    (``None``: its position in the sequence)."""

    color: Path
    world_T_cam_44: np.ndarray
    depth: Optional[Path] = None
    frame_id: Optional[int] = None


def read_scan_frames(frames: Sequence[FrameFiles], frame_interval: int,
                     name: str) -> tuple[list[PosedFrame], list[Path]]:
    """Every ``frame_interval``-th frame of a scan with its pose read; frames whose pose is
    non-finite are dropped and returned apart (logged with the file names).

    As in the official ``prepare_seqs`` (``data/general_eval_seq.py``), the frames at list
    positions ``0, interval, 2 * interval, ...`` are taken; unlike it, the drop is counted.
    """
    if frame_interval < 1:
        raise ValueError(f"frame_interval must be >= 1, got {frame_interval}")
    posed, skipped = [], []
    for frame in frames[::frame_interval]:
        try:
            posed.append(PosedFrame(frame.color, read_pose(frame.pose), frame.depth,
                                    frame.frame_id))
        except NonFinitePoseError:
            skipped.append(frame.pose)
    if skipped:
        logger.warning("%s: skipped %d frame(s) with a non-finite pose: %s", name,
                       len(skipped), ", ".join(str(p) for p in skipped))
    if not posed:
        raise DataError(f"{name}: no frame with a finite pose")
    return posed, skipped


class PosedSequence(Dataset):
    """The frames of a scan or a capture, as the evaluation, ``predict.py`` and the demo
    read them.

    A missing ground-truth depth map is not an error: the item then has ``dmap`` and
    ``dmask`` set to ``None`` (the metrics skip and count such frames); the frames are
    listed in ``missing_depth``. Every frame must share the first frame's native sizes.

    Items are dicts:
        ``img`` float32 [3, H, W] RGB 0..255 resized to ``height`` x ``width`` (bilinear);
        ``dmap`` float32 [1, h, w] metres, 0 invalid, at the depth map's native size (or
        ``depth_size``, nearest resizing), or ``None``;
        ``dmask`` bool [1, h, w] (``depth_min <= d <= depth_max``) or ``None``;
        ``cam_pose`` float32 [4, 4] camera-to-world; ``cam_intr`` float32 [3, 3] for the
        resized image; ``img_path`` str; ``frame_id`` int.
    """

    def __init__(self, frames: Sequence[PosedFrame], K_33: np.ndarray, height: int, width: int,
                 *, K_hw: Optional[Sequence[int]] = None, depth_scale: float = 1000.0,
                 depth_min: float = 0.01, depth_max: float = 10.0,
                 depth_size: Optional[Sequence[int]] = None, name: str = "",
                 K_source: str = "", skipped_nonfinite: int = 0):
        """
        Args:
            frames: the selected frames, in order.
            K_33: intrinsics of images of size ``K_hw`` (``(height, width)``); ``None``: of
                the colour images' native size (checked against it; ``K_source`` names
                where K came from in errors).
            depth_scale: depth-PNG units per metre (1000 for millimetres, 5000 for TUM).
            name: the scan or capture, for log lines and errors.
            skipped_nonfinite: frames the reader dropped for a non-finite pose (reported).
        """
        if not frames:
            raise DataError(f"{name}: no frames")
        self.name, self.frames = name, list(frames)
        self.poses = [frame.world_T_cam_44 for frame in self.frames]
        self.height, self.width = height, width
        self.depth_scale = float(depth_scale)
        self.depth_min, self.depth_max = depth_min, depth_max
        self.depth_size = tuple(depth_size) if depth_size is not None else None
        self.skipped_nonfinite = skipped_nonfinite
        # where K came from, for errors, the log and predict.py's summary
        self.K_source = K_source or "unknown"
        logger.info("%s: intrinsics from %s", name, self.K_source)
        self.missing_depth = [f.depth or f.color for f in self.frames
                              if f.depth is None or not f.depth.is_file()]
        if len(self.missing_depth) == len(self.frames):  # a capture without depth (COLMAP)
            logger.info("%s: no ground-truth depth", name)
        elif self.missing_depth:
            logger.warning("%s: %d frame(s) have no ground-truth depth: %s", name,
                           len(self.missing_depth), ", ".join(str(p) for p in self.missing_depth))
        self.color_hw = image_size(self.frames[0].color, "colour image")
        with_depth = [f for f in self.frames if f.depth is not None and f.depth.is_file()]
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
        if frame.depth is not None and frame.depth.is_file():
            depth = read_depth(frame.depth, self.depth_size, cv2.INTER_NEAREST,
                               expect_hw=self.depth_hw)
            if self.depth_scale != 1000.0:  # read_depth reads millimetres
                depth = depth * np.float32(1000.0 / self.depth_scale)
            depth, mask = mask_depth_range(depth, self.depth_min, self.depth_max)
            dmap, dmask = torch.from_numpy(depth)[None], torch.from_numpy(mask)[None]
        frame_id = index if frame.frame_id is None else frame.frame_id
        return frame_item(rgb, dmap, dmask, self.poses[index], self.cam_intr, frame.color,
                          frame_id)


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
