"""ScanNet: the official training sampler and an evaluation-side frame sequence.

Layout of a scene folder (the official one)::

    <root>/<scene>/rgb/<i>.jpg                     colour, any size
                   depth/<i>.png                   uint16 millimetres, 0 = invalid
                   pose/<i>.txt                    4x4 camera-to-world
                   intrinsic/intrinsic_color.txt   4x4, for the colour images (optional)

``<i>`` is the frame number without zero padding.
"""

from __future__ import annotations

import json
import logging
from functools import partial
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from datasets.intrinsics import OFFICIAL_HW, OFFICIAL_K_33, check_principal_point, resize_intrinsics
from datasets.io import (DataError, NonFinitePoseError, image_size, listed_dirs, mask_depth_range,
                         read_color, read_depth, read_intrinsics, read_pose)
from datasets.sequence import (FrameFiles, PosedSequence, index_files, pair_frame_files,
                               read_scan_frames)
from datasets.windows import train_windows
from utils.io import save_json

logger = logging.getLogger(__name__)

INTRINSICS_MODES = ("official", "scene")
INDEX_FORMAT = "estdepth/scannet-scene-index"
INDEX_VERSION = 1


def scannet_frame_files(scene_dir: Path, frame_id: int) -> FrameFiles:
    """The canonical file names of one ScanNet frame."""
    return FrameFiles(frame_id, scene_dir / "rgb" / f"{frame_id}.jpg",
                      scene_dir / "depth" / f"{frame_id}.png",
                      scene_dir / "pose" / f"{frame_id}.txt")


def list_scannet_frames(scene_dir: Path | str) -> list[FrameFiles]:
    """Every frame of a scene sorted by frame number (colour and pose must pair up)."""
    scene_dir = Path(scene_dir)
    files = partial(scannet_frame_files, scene_dir)
    colors = index_files(scene_dir / "rgb", r"(\d+)\.jpg", lambda i: files(i).color.name)
    poses = index_files(scene_dir / "pose", r"(\d+)\.txt", lambda i: files(i).pose.name)
    return pair_frame_files(colors, poses, files, scene_dir)


def scannet_intrinsics(scene_dir: Path, mode: str):
    """``(K_33, K_hw, source)`` for a scene; ``K_hw=None`` means the colour images' size.

    ``"official"``: the fixed ESTDepth values at 640x480. ``"scene"``: the scene's own
    ``intrinsic/intrinsic_color.txt``, which describes its colour images at native size.
    """
    if mode == "official":
        return OFFICIAL_K_33, OFFICIAL_HW, "official"
    if mode == "scene":
        path = scene_dir / "intrinsic" / "intrinsic_color.txt"
        return read_intrinsics(path), None, str(path)
    raise ValueError(f"intrinsics must be one of {INTRINSICS_MODES}, got {mode!r}")


class ScanNetSequence(PosedSequence):
    """Evaluation frames of one ScanNet scene; see :class:`datasets.sequence.PosedSequence`.

    Defaults follow the official evaluation loader (``SevenScenesSeq``): every 10th
    frame, ground truth valid in 0.01..5 m at its native resolution.
    """

    def __init__(self, scene_dir: Path | str, height: int = 256, width: int = 320,
                 frame_interval: int = 10, depth_min: float = 0.01, depth_max: float = 5.0,
                 intrinsics: str = "official", depth_size: Optional[Sequence[int]] = None):
        scene_dir = Path(scene_dir)
        K_33, K_hw, source = scannet_intrinsics(scene_dir, intrinsics)
        frames, skipped = read_scan_frames(list_scannet_frames(scene_dir), frame_interval,
                                           str(scene_dir))
        super().__init__(frames, K_33, height, width, K_hw=K_hw, depth_min=depth_min,
                         depth_max=depth_max, depth_size=depth_size, name=str(scene_dir),
                         K_source=source, skipped_nonfinite=len(skipped))


def build_scene_index(scene_dir: Path, frame_interval: int, height: int, width: int,
                      depth_min: float, depth_max: float) -> dict:
    """Scan a scene once: the frames the official sampler keeps and their valid-depth ratios.

    Official ``_load_scan``: frame ids sorted numerically, every ``frame_interval``-th
    kept, and the scan ends at the first of those with a non-finite pose. The valid ratio
    of a frame is the fraction of its resized depth map inside ``[depth_min, depth_max]``.
    """
    frames = list_scannet_frames(scene_dir)[::frame_interval]
    kept, cut_at = [], None
    for frame in frames:
        try:
            read_pose(frame.pose)
        except NonFinitePoseError:
            cut_at = str(frame.pose)
            break
        kept.append(frame)

    depth_hw = image_size(kept[0].depth, "depth map") if kept else None
    ratios = []
    for frame in kept:
        depth = read_depth(frame.depth, (height, width), expect_hw=depth_hw)
        ratios.append(float(mask_depth_range(depth, depth_min, depth_max)[1].mean()))
    return {
        "format": INDEX_FORMAT,
        "version": INDEX_VERSION,
        "params": _index_params(frame_interval, height, width, depth_min, depth_max),
        "frame_ids": [frame.frame_id for frame in kept],
        "valid_ratios": ratios,
        "cut_at_nonfinite_pose": cut_at,
        "color_hw": list(image_size(kept[0].color, "colour image")) if kept else None,
        "depth_hw": list(depth_hw) if kept else None,
    }


def _index_params(frame_interval, height, width, depth_min, depth_max) -> dict:
    return {"frame_interval": int(frame_interval), "height": int(height), "width": int(width),
            "depth_min": float(depth_min), "depth_max": float(depth_max)}


class ScanNetTrainDataset(Dataset):
    """Training windows of ScanNet exactly as the official sampler builds them.

    Frames: every ``frame_interval``-th frame of a scene in frame-number order, the scan
    ending at the first non-finite pose (:func:`build_scene_index`). Windows: ``n_frames``
    consecutive frames starting at ``s in range(0, len(frames) - 2 * n_frames,
    n_frames // 2)`` (:func:`datasets.windows.train_windows` derives this from the official
    ``build_dataset_index_train`` + ``read_sample_train``).

    The official loader asserts that every frame has more than ``min_valid_ratio`` valid
    depth and, when that fails, silently loads a random other sample. Here the check is made
    once, when the index is built: such windows are excluded, counted in
    ``excluded_windows`` and logged; nothing is ever substituted, and any load error raises.

    The per-scene scan is cached like the official ``scene.npy``, as JSON written atomically
    beside the scene (``<scene>/estdepth_index_<params>.json``) or under
    ``cache_dir/<scene>/``. It records a format version and the parameters it depends on
    (interval, size, depth range); a cache that does not match is rebuilt, and
    ``reloadscan=True`` always rebuilds (needed after the scene's files change). When the
    cache cannot be written (read-only data) the index is kept in memory.

    Items are dicts: ``imgs`` float32 [N, 3, H, W] RGB 0..255; ``dmaps`` float32
    [N, 1, H, W] metres, 0 invalid; ``dmasks`` bool [N, 1, H, W]; ``cam_poses`` float32
    [N, 4, 4] camera-to-world; ``cam_intr`` float32 [3, 3]; ``img_paths`` list of str;
    ``frame_ids`` list of int; ``scene`` str.
    """

    def __init__(self, root: Path | str, split_file: Path | str, height: int = 256,
                 width: int = 320, n_frames: int = 5, frame_interval: int = 10,
                 depth_min: float = 0.1, depth_max: float = 10.0, reloadscan: bool = False,
                 intrinsics: str = "official", min_valid_ratio: float = 0.5,
                 cache_dir: Optional[Path | str] = None):
        if n_frames < 3:
            raise ValueError(f"n_frames must be >= 3 (the targets are the inner frames), "
                             f"got {n_frames}")
        if intrinsics not in INTRINSICS_MODES:
            raise ValueError(f"intrinsics must be one of {INTRINSICS_MODES}, got {intrinsics!r}")
        self.root = Path(root)
        self.height, self.width, self.n_frames = height, width, n_frames
        self.depth_min, self.depth_max = depth_min, depth_max
        self.min_valid_ratio = min_valid_ratio
        self.params = _index_params(frame_interval, height, width, depth_min, depth_max)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._cache_write_failed = False

        self.scenes: list[dict] = []
        self.windows: list[tuple[int, list[int]]] = []
        self.excluded_windows = 0
        self.cut_scans: dict[str, str] = {}
        scene_dirs = listed_dirs(self.root, split_file)
        for scene_dir in scene_dirs:
            self._add_scene(scene_dir, reloadscan, intrinsics)

        logger.info("ScanNet %s: %d windows of %d frames from %d scenes; excluded %d window(s) "
                    "with a frame of <= %.0f%% valid depth; %d scan(s) cut at a non-finite pose",
                    split_file, len(self.windows), n_frames, len(scene_dirs),
                    self.excluded_windows, 100 * min_valid_ratio, len(self.cut_scans))

    def _add_scene(self, scene_dir: Path, reloadscan: bool, intrinsics: str) -> None:
        index = self._scene_index(scene_dir, reloadscan)
        if index["cut_at_nonfinite_pose"] is not None:
            self.cut_scans[scene_dir.name] = index["cut_at_nonfinite_pose"]
            logger.info("%s: scan cut at non-finite pose %s (%d frames kept)", scene_dir.name,
                        index["cut_at_nonfinite_pose"], len(index["frame_ids"]))
        if not index["frame_ids"]:
            return

        K_33, K_hw, source = scannet_intrinsics(scene_dir, intrinsics)
        if K_hw is None:
            check_principal_point(K_33, index["color_hw"], source)
            K_hw = index["color_hw"]
        scene_id = len(self.scenes)
        self.scenes.append({
            "dir": scene_dir,
            "color_hw": tuple(index["color_hw"]),
            "depth_hw": tuple(index["depth_hw"]),
            "cam_intr": torch.from_numpy(resize_intrinsics(K_33, K_hw, (self.height, self.width)))
            .to(torch.float32),
        })

        excluded = 0
        ids, ratios = index["frame_ids"], index["valid_ratios"]
        if len(ids) <= 2 * self.n_frames:
            logger.warning("%s: only %d frames after taking every %d-th; the official sampler "
                           "needs more than %d for one window, so this scan gives none",
                           scene_dir.name, len(ids), self.params["frame_interval"],
                           2 * self.n_frames)
        for window in train_windows(len(ids), self.n_frames):
            if min(ratios[i] for i in window) > self.min_valid_ratio:
                self.windows.append((scene_id, [ids[i] for i in window]))
            else:
                excluded += 1
        if excluded:
            logger.info("%s: excluded %d window(s) with a frame of <= %.0f%% valid depth",
                        scene_dir.name, excluded, 100 * self.min_valid_ratio)
        self.excluded_windows += excluded

    def _cache_path(self, scene_dir: Path) -> Path:
        # One file per parameter set, so datasets built with different sizes or ranges
        # (e.g. train and validation configs) do not keep overwriting each other's cache.
        p = self.params
        name = (f"estdepth_index_i{p['frame_interval']}_{p['height']}x{p['width']}"
                f"_d{p['depth_min']:g}-{p['depth_max']:g}.json")
        if self.cache_dir is not None:
            return self.cache_dir / scene_dir.name / name
        return scene_dir / name

    def _scene_index(self, scene_dir: Path, reloadscan: bool) -> dict:
        path = self._cache_path(scene_dir)
        if not reloadscan and path.is_file():
            cached = self._read_cache(path)
            if cached is not None:
                return cached
        index = build_scene_index(scene_dir, **self.params)
        self._write_cache(path, index)
        return index

    def _read_cache(self, path: Path) -> Optional[dict]:
        """A cached index, or ``None`` when it is stale or unreadable (it is then rebuilt)."""
        try:
            cached = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            logger.warning("rebuilding unreadable index cache %s (%s)", path, err)
            return None
        if (not isinstance(cached, dict) or cached.get("format") != INDEX_FORMAT
                or cached.get("version") != INDEX_VERSION or cached.get("params") != self.params):
            logger.info("rebuilding index cache %s: built by another version or with other "
                        "parameters", path)
            return None
        return cached

    def _write_cache(self, path: Path, index: dict) -> None:
        try:
            save_json(index, str(path))
        except OSError as err:
            # Read-only datasets are common (shared storage); the index still works in memory.
            if not self._cache_write_failed:
                logger.warning("cannot write index cache %s (%s); keeping scene indices in "
                               "memory (pass cache_dir to persist them)", path, err)
            self._cache_write_failed = True

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> dict:
        scene_id, frame_ids = self.windows[index]
        scene = self.scenes[scene_id]
        size = (self.height, self.width)
        imgs, dmaps, dmasks, poses, paths = [], [], [], [], []
        for frame_id in frame_ids:
            files = scannet_frame_files(scene["dir"], frame_id)
            imgs.append(read_color(files.color, size, expect_hw=scene["color_hw"]))
            depth = read_depth(files.depth, size, expect_hw=scene["depth_hw"])
            depth, mask = mask_depth_range(depth, self.depth_min, self.depth_max)
            if mask.mean() <= self.min_valid_ratio:
                raise DataError(f"{files.depth} has <= {100 * self.min_valid_ratio:.0f}% valid "
                                f"depth, unlike when the cached index was built: the data "
                                f"changed, pass reloadscan=True")
            dmaps.append(depth)
            dmasks.append(mask)
            poses.append(read_pose(files.pose))
            paths.append(str(files.color))
        return {
            # One contiguous float32 copy in NCHW (a permuted view would be copied again
            # by the first convolution and cannot be pinned as is).
            "imgs": torch.from_numpy(np.ascontiguousarray(
                np.stack(imgs).transpose(0, 3, 1, 2), dtype=np.float32)),
            "dmaps": torch.from_numpy(np.stack(dmaps))[:, None],
            "dmasks": torch.from_numpy(np.stack(dmasks))[:, None],
            "cam_poses": torch.from_numpy(np.stack(poses)).to(torch.float32),
            "cam_intr": scene["cam_intr"].clone(),
            "img_paths": paths,
            "frame_ids": list(frame_ids),
            "scene": scene["dir"].name,
        }
