"""The scale of a capture whose poses come from structure from motion (COLMAP).

A COLMAP reconstruction has an arbitrary scale, while the network was trained on metric
depth with fixed depth planes: on a capture whose depths miss the planes it answers
nonsense without a word. So the capture's depths are measured from its sparse 3D points
(each point seen in front of a selected camera and inside its image), and ``--pose_scale``

* ``check`` (default): uses the poses as they are when at least :data:`FIT_FRACTION` of
  those depths lie on the model's planes, and otherwise refuses with the measured range;
* ``auto``: multiplies the poses by the scale that centres the depths on the planes (in
  log-depth: the geometric mean of the 5th and 95th percentile goes to the geometric mean
  of ``depth_min`` and ``depth_max``); the same scene at any scale then gives the same
  network input;
* a number ``S``: multiplies the poses by ``S`` (the user knows the scale).

Outputs go back to the capture's own units (depths divided by the scale).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from datasets.colmap import colmap_points
from datasets.io import DataError

logger = logging.getLogger(__name__)

FIT_FRACTION = 0.8
PERCENTILES = (5, 50, 95)
MAX_POINTS = 200_000  # a deterministic subsample keeps huge models cheap to measure


def parse_pose_scale(option: str) -> str | float:
    """``check``, ``auto`` or a finite number > 0 (ValueError otherwise)."""
    if option in ("check", "auto"):
        return option
    try:
        value = float(option)
    except (TypeError, ValueError):
        value = float("nan")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"--pose_scale must be check, auto or a number > 0, got {option!r}")
    return value


def sparse_depths(points_p3: np.ndarray, world_T_cams_n44, K_33: np.ndarray,
                  hw: tuple[int, int]) -> np.ndarray:
    """Depths (z, the points' units) of the points in front of each camera and inside its
    ``hw`` image, over all cameras: ``[M]``. ``K_33``: intrinsics of that image size."""
    step = max(1, len(points_p3) // MAX_POINTS)
    points_h4p = np.concatenate([points_p3[::step].T, np.ones((1, len(points_p3[::step])))])
    height, width = hw
    depths = []
    for world_T_cam in world_T_cams_n44:
        cam_p3 = (np.linalg.inv(world_T_cam) @ points_h4p)[:3]
        z = cam_p3[2]
        front = z > 1e-9
        uv = (K_33 @ cam_p3[:, front])[:2] / z[front]
        inside = ((uv[0] >= -0.5) & (uv[0] <= width - 0.5) & (uv[1] >= -0.5)
                  & (uv[1] <= height - 0.5))
        depths.append(z[front][inside])
    return np.concatenate(depths) if depths else np.zeros(0)


def depth_summary(depths_m: np.ndarray, depth_min: float, depth_max: float) -> dict:
    """Percentiles of the sparse depths and the fraction on the planes ``[min, max]``."""
    if depths_m.size == 0:
        raise DataError("no sparse 3D point lies in front of a selected camera and inside "
                        "its image: the capture's scale cannot be measured (pass "
                        "--pose_scale S)")
    low, median, high = np.percentile(depths_m, PERCENTILES)
    on_planes = float(((depths_m >= depth_min) & (depths_m <= depth_max)).mean())
    return {"observations": int(depths_m.size), "p5": float(low), "median": float(median),
            "p95": float(high), "on_planes": on_planes}


def auto_scale(summary: dict, depth_min: float, depth_max: float) -> float:
    """The scale putting the geometric mean of ``p5`` and ``p95`` at that of the planes."""
    return math.sqrt(depth_min * depth_max) / math.sqrt(summary["p5"] * summary["p95"])


def choose_pose_scale(option: str | float, summary: dict, depth_min: float, depth_max: float,
                      source: str) -> tuple[float, str]:
    """``(scale, why)`` for ``--pose_scale`` given the measured ``summary`` (capture units).

    Raises:
        DataError with the measured range and the options when ``check`` finds a range
        that does not fit the planes.
    """
    measured = (f"{source}: the sparse points' depths are {summary['p5']:.3g}-"
                f"{summary['p95']:.3g} (5th-95th percentile, median {summary['median']:.3g}) "
                f"in the capture's units; {100 * summary['on_planes']:.0f}% lie on the model's "
                f"planes {depth_min:g}-{depth_max:g} m")
    if option == "auto":
        scale = auto_scale(summary, depth_min, depth_max)
        return scale, (f"{measured}; --pose_scale auto chose {scale:.6g}, which centres them "
                       f"on the planes (geometric mean of the 5th and 95th percentile -> "
                       f"{math.sqrt(depth_min * depth_max):.3g} m)")
    if option == "check":
        if summary["on_planes"] >= FIT_FRACTION:
            return 1.0, f"{measured}: used as metric"
        raise DataError(f"{measured} (at least {100 * FIT_FRACTION:.0f}% are needed): the "
                        f"capture's scale cannot be metric for this model. Pass --pose_scale "
                        f"auto (chooses {auto_scale(summary, depth_min, depth_max):.4g}) or "
                        f"--pose_scale S with the capture's metres per unit")
    return float(option), f"{measured}; --pose_scale {float(option):g} as given"


def scale_poses(world_T_cams: list, scale: float) -> list:
    """Camera-to-world poses with their translations multiplied by ``scale``."""
    scaled = []
    for pose in world_T_cams:
        pose = np.array(pose, copy=True)
        pose[:3, 3] *= scale
        scaled.append(pose)
    return scaled


def rescale_sequence(seq, option: str, root: Path, depth_min: float,
                     depth_max: float) -> dict:
    """``--pose_scale option`` on ``seq`` (an opened capture with a ``format``; its poses are
    scaled in place): ``{"scale", "why"}`` and, for a COLMAP capture, the sparse depths
    measured. ``depth_min``/``depth_max``: the model's planes."""
    option = parse_pose_scale(option)
    if seq.format != "colmap":
        if option == "auto":
            raise ValueError(f"--pose_scale auto measures the scale from a COLMAP model's 3D "
                             f"points; {root} is a {seq.format} capture (pass S)")
        if option == "check":
            return {"scale": 1.0, "why": f"{seq.format} captures are metric"}
        if seq.depth_hw is not None:
            raise ValueError(f"--pose_scale {option:g}: {root} holds ground-truth depth "
                             f"in metres, so its poses are metric")
        seq.poses = scale_poses(seq.poses, option)
        return {"scale": option, "why": f"--pose_scale {option:g} as given"}
    points, source = colmap_points(root, required=option == "auto")
    if points is None:
        why = f"{source} not found: the capture's scale is not checked"
        if option == "check":
            logger.warning("%s; if depths look wrong, pass --pose_scale S", why)
            return {"scale": 1.0, "why": why}
        seq.poses = scale_poses(seq.poses, option)
        return {"scale": option, "why": f"--pose_scale {option:g} as given; {why}"}
    depths = sparse_depths(points, seq.poses, seq.cam_intr.double().numpy(),
                           (seq.height, seq.width))
    summary = depth_summary(depths, depth_min, depth_max)
    scale, why = choose_pose_scale(option, summary, depth_min, depth_max, str(source))
    logger.info(why)
    if scale != 1.0:
        seq.poses = scale_poses(seq.poses, scale)
    return {"scale": scale, "why": why, "sparse_depths": summary}
