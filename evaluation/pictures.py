"""What predict.py writes besides depth maps, for people to look at: confidence maps (16-bit
PNG), coloured point clouds (one per frame and one merged, voxel-downsampled; PLY) and a
video of colour | depth | confidence with a legend in metres (MP4)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch.nn.functional as F

from evaluation.fusion import depth_to_world_points
from utils.io import atomic_open, save_image
from utils.visualization import colorize, colorize_depth

CONFIDENCE_MAX = 65535  # confidence PNG: round(confidence * 65535)
LEGEND_WIDTH = 64


def confidence_map(outputs: dict, t: int, hw: tuple[int, int]) -> np.ndarray:
    """Target ``t``'s confidence ``[H, W]`` in 0..1: the largest probability over the depth
    planes of its final cost volume (``fused_prob`` after the EST transformer, else
    ``init_prob``), upsampled bilinearly from 1/4 resolution to ``hw``."""
    prob = outputs.get(("fused_prob", t), outputs.get(("init_prob", t)))
    if prob is None:
        raise KeyError(f"no probability volume for target {t} in the model outputs")
    peak = prob.float().amax(dim=1, keepdim=True)  # [B, 1, h, w]
    peak = F.interpolate(peak, size=hw, mode="bilinear", align_corners=False)
    return peak[0, 0].clamp(0, 1).cpu().numpy()


def save_confidence_png(confidence_hw: np.ndarray, path: Path) -> None:
    """uint16 PNG, ``round(confidence * 65535)``, written atomically."""
    values = np.rint(np.clip(confidence_hw, 0, 1) * CONFIDENCE_MAX).astype(np.uint16)
    save_image(str(path), values)


def read_confidence_png(path: Path) -> np.ndarray:
    values = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if values is None or values.dtype != np.uint16:
        raise ValueError(f"{path}: not a 16-bit confidence PNG")
    return values.astype(np.float32) / CONFIDENCE_MAX


def frame_cloud(depth_hw: np.ndarray, rgb_hw3: np.ndarray, K_33: np.ndarray,
                world_T_cam_44: np.ndarray, max_depth: float) -> tuple[np.ndarray, np.ndarray]:
    """World points ``[n, 3]`` and their colours ``[n, 3]`` uint8 of the pixels with
    ``0 < depth <= max_depth`` (``rgb_hw3`` and ``K_33`` at the depth map's size)."""
    depth = np.where(depth_hw <= max_depth, depth_hw, 0).astype(np.float32)
    points = depth_to_world_points(depth, K_33, world_T_cam_44)
    valid = (np.isfinite(depth) & (depth > 0)).reshape(-1)
    return points, rgb_hw3.reshape(-1, 3)[valid]


def voxel_downsample(points_n3: np.ndarray, colours_n3: np.ndarray,
                     voxel: float) -> tuple[np.ndarray, np.ndarray]:
    """One point per occupied ``voxel``-sized cell: the mean position and colour of its
    points (cells ordered by their integer coordinates)."""
    if len(points_n3) == 0:
        return points_n3.reshape(0, 3).astype(np.float32), colours_n3.reshape(0, 3)
    cells = np.floor(points_n3 / voxel).astype(np.int64)
    _, inverse, counts = np.unique(cells, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    sums = np.zeros((len(counts), 6))
    np.add.at(sums, inverse, np.hstack([points_n3, colours_n3]).astype(np.float64))
    means = sums / counts[:, None]
    return means[:, :3].astype(np.float32), np.rint(means[:, 3:]).astype(np.uint8)


def save_cloud_ply(points_n3: np.ndarray, colours_n3: np.ndarray, path: Path) -> None:
    """Binary little-endian PLY: float32 x y z, uchar red green blue; written atomically."""
    rows = np.empty(len(points_n3), dtype=[("xyz", "<f4", (3,)), ("rgb", "u1", (3,))])
    rows["xyz"], rows["rgb"] = points_n3, colours_n3
    header = ("ply\nformat binary_little_endian 1.0\ncomment estdepth predicted depth\n"
              f"element vertex {len(rows)}\nproperty float x\nproperty float y\n"
              "property float z\nproperty uchar red\nproperty uchar green\n"
              "property uchar blue\nend_header\n")
    with atomic_open(str(path), "wb") as f:
        f.write(header.encode("ascii"))
        f.write(rows.tobytes())


def read_cloud_ply(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(points, colours)`` of a PLY written by :func:`save_cloud_ply`."""
    data = Path(path).read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    rows = np.frombuffer(data[end:], dtype=[("xyz", "<f4", (3,)), ("rgb", "u1", (3,))])
    return rows["xyz"].copy(), rows["rgb"].copy()


def legend(height: int, max_depth: float, width: int = LEGEND_WIDTH) -> np.ndarray:
    """A vertical colour bar of :func:`colorize_depth` (0 at the top, ``max_depth`` at the
    bottom) with ticks labelled in metres: RGB ``[height, width, 3]``."""
    values = np.linspace(0, max_depth, height, dtype=np.float32)[:, None].repeat(12, 1)
    bar = colorize(values, 0.0, max_depth)
    canvas = np.full((height, width, 3), 255, np.uint8)
    canvas[:, 2:14] = bar
    ticks = np.arange(0, max_depth + 1e-6, 1.0 if max_depth <= 6 else 2.0)
    for value in ticks:
        y = int(round(value / max_depth * (height - 1)))
        cv2.line(canvas, (14, y), (18, y), (0, 0, 0), 1)
        baseline = min(max(y + 4, 9), height - 2)
        cv2.putText(canvas, f"{value:g} m", (20, baseline), cv2.FONT_HERSHEY_SIMPLEX, 0.33,
                    (0, 0, 0), 1, cv2.LINE_AA)
    return canvas


def video_frame(rgb_hw3: np.ndarray, depth_hw: np.ndarray, confidence_hw: np.ndarray,
                max_depth: float) -> np.ndarray:
    """colour | depth | legend | confidence (grey, white = 1), RGB uint8."""
    h, w = depth_hw.shape
    rgb = cv2.resize(rgb_hw3, (w, h), interpolation=cv2.INTER_AREA)
    conf = np.repeat((np.clip(confidence_hw, 0, 1) * 255).astype(np.uint8)[..., None], 3, 2)
    gap = np.full((h, 4, 3), 255, np.uint8)
    return np.hstack([rgb, gap, colorize_depth(depth_hw, max_depth), legend(h, max_depth), conf])


class VideoWriter:
    """An MP4 (``mp4v``) written to a temporary file and renamed into place by
    :meth:`close`, so a reader never sees a half-written video."""

    def __init__(self, path: Path, fps: float):
        self.path, self.fps, self.writer, self.frames = Path(path), fps, None, 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self.tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.",
                                        suffix=".mp4")
        os.close(fd)

    def write(self, rgb_hw3: np.ndarray) -> None:
        if self.writer is None:
            h, w = rgb_hw3.shape[:2]
            self.writer = cv2.VideoWriter(self.tmp, cv2.VideoWriter_fourcc(*"mp4v"), self.fps,
                                          (w, h))
            if not self.writer.isOpened():
                raise OSError(f"{self.path}: OpenCV cannot write MP4 video here")
        self.writer.write(cv2.cvtColor(rgb_hw3, cv2.COLOR_RGB2BGR))
        self.frames += 1

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is not None:
            self.discard()

    def close(self) -> None:
        if self.writer is None:
            self.discard()
            raise ValueError(f"{self.path}: no frame to write")
        self.writer.release()
        os.replace(self.tmp, self.path)

    def discard(self) -> None:
        if self.writer is not None:
            self.writer.release()
        if os.path.exists(self.tmp):
            os.remove(self.tmp)



class PictureWriter:
    """predict.py's optional per-frame pictures and the merged cloud.

    Depths and poses come in the network's metres; clouds are written in the capture's
    units (divided by ``pose_scale``), the video and previews in metres.
    """

    def __init__(self, out: Path, K_33: np.ndarray, pose_scale: float, *, confidence: bool,
                 clouds: bool, video_fps: float | None, voxel: float, max_depth: float,
                 color_max_depth: float):
        self.out, self.K, self.scale = Path(out), K_33, pose_scale
        self.confidence, self.clouds, self.voxel = confidence, clouds, voxel
        self.max_depth, self.color_max_depth = max_depth, color_max_depth
        self.video = VideoWriter(self.out / "video.mp4", video_fps) if video_fps else None
        self.merged: list[tuple[np.ndarray, np.ndarray]] = []

    def add(self, stem: str, depth_hw: np.ndarray, confidence_hw: np.ndarray,
            rgb_hw3: np.ndarray, world_T_cam_44: np.ndarray) -> list[str]:
        """Write one frame's pictures; returns their paths relative to the output."""
        files = []
        if self.confidence:
            save_confidence_png(confidence_hw, self.out / "confidence" / f"{stem}.png")
            files.append(f"confidence/{stem}.png")
        if self.clouds:
            points, colours = frame_cloud(depth_hw, rgb_hw3, self.K, world_T_cam_44,
                                          self.max_depth)
            save_cloud_ply(points / self.scale, colours, self.out / "cloud" / f"{stem}.ply")
            files.append(f"cloud/{stem}.ply")
            self.merged.append(voxel_downsample(points, colours, self.voxel))
        if self.video is not None:
            self.video.write(video_frame(rgb_hw3, depth_hw, confidence_hw,
                                         self.color_max_depth))
        return files

    def finish(self) -> list[str]:
        """The merged cloud and the video, written last; their paths."""
        files = []
        if self.clouds:
            points, colours = voxel_downsample(
                np.concatenate([p for p, _ in self.merged]).reshape(-1, 3),
                np.concatenate([c for _, c in self.merged]).reshape(-1, 3), self.voxel)
            save_cloud_ply(points / self.scale, colours, self.out / "cloud.ply")
            files.append("cloud.ply")
        if self.video is not None:
            self.video.close()
            files.append("video.mp4")
        return files

    def __enter__(self) -> "PictureWriter":
        return self

    def __exit__(self, *exc) -> None:
        """On an error, no half-written video is left behind (its temporary is removed)."""
        if self.video is not None:
            self.video.__exit__(*exc)
