"""Write rendered scenes in the ScanNet or 7-Scenes layout, with split lists and a summary;
each scene goes to a hidden temporary folder and is renamed into place when complete."""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np

from datasets.intrinsics import (OFFICIAL_HW, OFFICIAL_K_33, SEVEN_SCENES_HW, SEVEN_SCENES_K_33,
                                 resize_intrinsics)
from datasets.io import DEPTH_INVALID_MARKER, DEPTH_SCALE
from datasets.synthetic.render import pixel_rays, render
from datasets.synthetic.scene import MAX_DEPTH, Scene, Trajectory, random_scene
from utils.io import save_json, save_text

logger = logging.getLogger(__name__)

LAYOUTS = ("scannet", "7scenes")
TMP_PREFIX = ".synthetic-tmp-"


def default_intrinsics(layout: str, height: int, width: int) -> np.ndarray:
    """ScanNet layout: the official ESTDepth values; 7-Scenes layout: 7-Scenes' own."""
    if layout == "scannet":
        return resize_intrinsics(OFFICIAL_K_33, OFFICIAL_HW, (height, width))
    return resize_intrinsics(SEVEN_SCENES_K_33, SEVEN_SCENES_HW, (height, width))


def scene_name(layout: str, index: int) -> str:
    """Folder of scene ``index``: ``scene0000_00`` (ScanNet) or ``room0000`` (7-Scenes)."""
    return f"scene{index:04d}_00" if layout == "scannet" else f"room{index:04d}"


def _format_matrix(matrix: np.ndarray) -> str:
    return "\n".join(" ".join(f"{value:.9f}" for value in row) for row in matrix) + "\n"


def _depth_png(depth_hw: np.ndarray, invalid: int) -> np.ndarray:
    valid = np.isfinite(depth_hw) & (depth_hw <= MAX_DEPTH)
    mm = np.rint(np.where(valid, depth_hw, 0.0) * DEPTH_SCALE)
    return np.where(valid, np.clip(mm, 1, 65534), invalid).astype(np.uint16)


def _frame_paths(layout: str, scene_dir: Path, index: int) -> tuple[Path, Path, Path]:
    if layout == "scannet":
        return (scene_dir / "rgb" / f"{index}.jpg", scene_dir / "depth" / f"{index}.png",
                scene_dir / "pose" / f"{index}.txt")
    stem = scene_dir / "seq-01" / f"frame-{index:06d}"
    return Path(f"{stem}.color.png"), Path(f"{stem}.depth.png"), Path(f"{stem}.pose.txt")


def _write_scene(scene_dir: Path, layout: str, scene: Scene, trajectory: Trajectory,
                 frames: int, height: int, width: int, jpeg_quality: int) -> dict:
    """Render every frame of one scene into ``scene_dir`` (which must not exist yet)."""
    K_33 = default_intrinsics(layout, height, width)
    if layout == "scannet":
        folders = [scene_dir / name for name in ("rgb", "depth", "pose", "intrinsic")]
        K_44 = np.eye(4)
        K_44[:3, :3] = K_33
        intrinsics_text = {"intrinsic/intrinsic_color.txt": _format_matrix(K_44)}
        invalid = 0
    else:
        folders = [scene_dir / "seq-01"]
        intrinsics_text = {"seq-01/camera-intrinsics.txt": _format_matrix(K_33)}
        invalid = DEPTH_INVALID_MARKER
    for folder in folders:
        folder.mkdir(parents=True)
    for name, text in intrinsics_text.items():
        (scene_dir / name).write_text(text)

    rays = pixel_rays(K_33, height, width)
    depth_lo, depth_hi = np.inf, 0.0
    for index, world_T_cam in enumerate(trajectory.poses(frames)):
        pose_text = _format_matrix(world_T_cam)
        # Render with the pose exactly as written, so files agree to the last digit.
        world_T_cam = np.array(pose_text.split(), dtype=np.float64).reshape(4, 4)
        rgb, depth, _ = render(scene, world_T_cam, K_33, height, width, rays)
        color_path, depth_path, pose_path = _frame_paths(layout, scene_dir, index)
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality] if layout == "scannet" else []
        if not cv2.imwrite(str(color_path), bgr, params) or \
                not cv2.imwrite(str(depth_path), _depth_png(depth, invalid)):
            raise OSError(f"cannot write frame {index} into {scene_dir}")
        pose_path.write_text(pose_text)
        finite = depth[np.isfinite(depth)]
        depth_lo, depth_hi = min(depth_lo, float(finite.min())), max(depth_hi, float(finite.max()))
    return {"depth_min": depth_lo, "depth_max": depth_hi}


def _generate_one(job: tuple) -> dict:
    """Worker: render scene ``index`` into a temporary folder, then rename it into place."""
    out, layout, index, frames, height, width, seed, jpeg_quality, camera_speed = job
    scene, trajectory = random_scene(np.random.default_rng([seed, index]), camera_speed)
    final = out / scene_name(layout, index)
    tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{final.name}-", dir=out))
    try:
        stats = _write_scene(tmp / "scene", layout, scene, trajectory, frames, height, width,
                             jpeg_quality)
        os.replace(tmp / "scene", final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"scene": final.name, **stats}


def _write_splits(out: Path, layout: str, names: Sequence[str], val: int, test: int) -> dict:
    splits_dir = out / "splits"
    splits_dir.mkdir(exist_ok=True)
    if layout == "7scenes":
        lists = {"test.txt": [f"{name}/seq-01" for name in names]}
    else:
        n_train = len(names) - val - test
        lists = {"train_split.txt": names[:n_train],
                 "val_split.txt": names[n_train:n_train + val],
                 "test_split.txt": names[n_train + val:]}
    for filename, entries in lists.items():
        save_text("".join(f"{entry}\n" for entry in entries), str(splits_dir / filename))
    return {filename: len(entries) for filename, entries in lists.items()}


def _check_arguments(layout, scenes, frames, val, test, camera_speed) -> None:
    """ValueError naming the first argument :func:`generate` cannot use."""
    if not (np.isfinite(camera_speed) and camera_speed > 0):
        raise ValueError(f"camera_speed must be a finite number > 0, got {camera_speed}")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if layout == "scannet" and (val < 0 or test < 0 or val + test > scenes):
        raise ValueError(f"cannot hold out val={val} and test={test} of {scenes} scenes")
    if scenes < 1 or frames < 1:
        raise ValueError(f"need at least one scene and one frame, got {scenes} and {frames}")


def generate(out: Path | str, layout: str = "scannet", scenes: int = 10, frames: int = 100,
             height: int = 480, width: int = 640, seed: int = 0, val: int = 1, test: int = 1,
             workers: Optional[int] = None, overwrite: bool = False,
             jpeg_quality: int = 95, camera_speed: float = 1.0) -> dict:
    """Generate a synthetic dataset; returns its summary (also saved as ``<out>/synthetic.json``).

    Args:
        layout: ``"scannet"`` (scenes ``scene%04d_00``; ``splits/{train,val,test}_split.txt``
            with the last ``test`` scenes for test and the ``val`` before them for val) or
            ``"7scenes"`` (``room%04d/seq-01``; ``splits/test.txt`` lists every sequence).
        workers: processes rendering scenes in parallel (default: one per CPU, at most
            one per scene). The output does not depend on it.
        overwrite: replace scene folders that already exist (otherwise an error).
        camera_speed: multiplies the camera paths' translation rate (wider baselines).
    """
    _check_arguments(layout, scenes, frames, val, test, camera_speed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = [scene_name(layout, index) for index in range(scenes)]
    existing = [name for name in names if (out / name).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{out} already holds {', '.join(existing[:3])}"
                              f"{' ...' if len(existing) > 3 else ''}; pass overwrite=True "
                              f"(--overwrite) to replace them")
    for name in existing:
        shutil.rmtree(out / name)

    jobs = [(out, layout, index, frames, height, width, seed, jpeg_quality, camera_speed)
            for index in range(scenes)]
    workers = max(1, min(workers or os.cpu_count() or 1, scenes))
    start = time.perf_counter()
    try:
        if workers == 1:
            results = [_generate_one(job) for job in jobs]
        else:
            with multiprocessing.get_context("spawn").Pool(workers) as pool:
                results = pool.map(_generate_one, jobs)
    finally:
        # A killed worker cannot clean up after itself.
        for stale in out.glob(f"{TMP_PREFIX}*"):
            shutil.rmtree(stale, ignore_errors=True)

    summary = {
        "generator": "datasets.synthetic", "layout": layout, "scenes": scenes, "frames": frames,
        "height": height, "width": width, "seed": seed, "camera_speed": camera_speed,
        "intrinsics": default_intrinsics(layout, height, width).tolist(),
        "splits": _write_splits(out, layout, names, val, test),
        "depth_range": [min(r["depth_min"] for r in results),
                        max(r["depth_max"] for r in results)],
    }
    save_json(summary, str(out / "synthetic.json"))
    logger.info("wrote %d %s-layout scenes x %d frames (%dx%d) to %s in %.1f s; depth %.2f-%.2f m",
                scenes, layout, frames, height, width, out, time.perf_counter() - start,
                *summary["depth_range"])
    return summary
