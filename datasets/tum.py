"""TUM RGB-D sequences as posed frames.

Layout (the benchmark's own)::

    DIR/rgb.txt          "timestamp rgb/<t>.png" per line ('#' comments)
    DIR/depth.txt        "timestamp depth/<t>.png" (16-bit PNG, 5000 units per metre)
    DIR/groundtruth.txt  "timestamp tx ty tz qx qy qz qw": the colour camera's optical
                         centre in the world (camera-to-world)

Each colour frame takes the depth map and the ground-truth pose nearest in time, both
within ``max_dt`` seconds (the benchmark's ``associate.py`` uses 0.02 s). A colour frame
without a pose that close is left out (counted and logged: the motion-capture system
loses track at times); one without depth gets no ground truth.

Intrinsics: ``--intrinsics fx,fy,cx,cy``, or the benchmark's published values for the
freiburg camera named in the folder (``rgbd_dataset_freiburg1_xyz`` -> freiburg1). The
fr1/fr2 images are not undistorted; their small distortion is ignored.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Optional

import numpy as np

from datasets.colmap import qvec_to_rotation
from datasets.intrinsics import resize_intrinsics
from datasets.io import DataError, check_rigid_pose, image_size, not_found
from datasets.sequence import PosedFrame

logger = logging.getLogger(__name__)

TUM_DEPTH_SCALE = 5000.0
TUM_HW = (480, 640)
# fx, fy, cx, cy of the colour camera at 640x480 (TUM_HW) (TUM RGB-D "file formats" page).
FREIBURG_INTRINSICS = {
    "freiburg1": (517.3, 516.5, 318.6, 255.3),
    "freiburg2": (520.9, 521.0, 325.1, 249.7),
    "freiburg3": (535.4, 539.2, 320.1, 247.6),
}


def read_timestamps(path: Path, columns: int) -> list[tuple[float, list[str]]]:
    """``[(timestamp, other fields)]`` of a TUM list file, each line ``columns`` fields."""
    if not path.is_file():
        raise not_found(path, "TUM file")
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.replace(",", " ").split()
        if len(fields) != columns:
            raise DataError(f"{path}, line {number}: expected {columns} fields, got "
                            f"{len(fields)}: {line!r}")
        try:
            stamp = float(fields[0])
        except ValueError:
            stamp = float("nan")
        if not np.isfinite(stamp):  # nan would never match and break the sorted search
            raise DataError(f"{path}, line {number}: bad timestamp {fields[0]!r}")
        rows.append((stamp, fields[1:]))
    if not rows:
        raise DataError(f"{path} lists nothing")
    return rows


def nearest(stamps: np.ndarray, query: float, max_dt: float) -> Optional[int]:
    """Index of the timestamp nearest ``query`` if within ``max_dt``, else None."""
    pos = int(np.searchsorted(stamps, query))
    best = min((i for i in (pos - 1, pos) if 0 <= i < len(stamps)),
               key=lambda i: abs(stamps[i] - query))
    return best if abs(stamps[best] - query) <= max_dt else None


def tum_pose(fields: list[str], source: str) -> np.ndarray:
    """camera-to-world of ``tx ty tz qx qy qz qw``."""
    try:
        tx, ty, tz, qx, qy, qz, qw = (float(v) for v in fields)
    except ValueError:
        raise DataError(f"{source}: cannot parse the pose {' '.join(fields)!r}") from None
    pose = np.eye(4)
    pose[:3, :3] = qvec_to_rotation(np.array([qw, qx, qy, qz]), source)
    pose[:3, 3] = (tx, ty, tz)
    return check_rigid_pose(pose, source)


def freiburg_intrinsics(root: Path) -> tuple[np.ndarray, str]:
    """The preset of the freiburg camera in the nearest folder name that names one, and
    its source (saying which folder chose it: a wrong guess must be visible)."""
    for part in reversed(root.resolve().parts):
        match = re.search(r"freiburg([123])", part)
        if match is not None:
            key = f"freiburg{match.group(1)}"
            fx, fy, cx, cy = FREIBURG_INTRINSICS[key]
            K = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]])
            return K, (f"TUM {key} preset, chosen because of the folder name {part!r} "
                       f"(pass --intrinsics fx,fy,cx,cy if that is not the camera)")
    raise DataError(f"{root}: no freiburg camera in the folder name; pass its intrinsics "
                    f"with --intrinsics fx,fy,cx,cy")


def check_listed_files(root: Path, list_file: Path, rows: list) -> None:
    """Every file a list names must exist (else frames would fail one by one later)."""
    missing = [fields[0] for _, fields in rows if not (root / fields[0]).is_file()]
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise DataError(f"{list_file} lists {len(missing)} file(s) missing under {root}: "
                        f"{', '.join(missing[:5])}{more}")


def tum_frames(root: Path, K_override: Optional[np.ndarray] = None,
               max_dt: float = 0.02) -> tuple[list[PosedFrame], np.ndarray, str]:
    """Frames (colour timestamp order), native intrinsics and their source."""
    rgb = sorted(read_timestamps(root / "rgb.txt", 2))
    depth_file = root / "depth.txt"
    depth = sorted(read_timestamps(depth_file, 2)) if depth_file.is_file() else []
    check_listed_files(root, root / "rgb.txt", rgb)
    check_listed_files(root, depth_file, depth)
    gt_file = root / "groundtruth.txt"
    gt = sorted(read_timestamps(gt_file, 8))
    depth_t = np.array([t for t, _ in depth])
    gt_t = np.array([t for t, _ in gt])
    frames, unposed = [], []
    for stamp, (name,) in rgb:
        pose_index = nearest(gt_t, stamp, max_dt)
        if pose_index is None:
            unposed.append(name)
            continue
        pose = tum_pose(gt[pose_index][1], f"{gt_file}, timestamp {gt[pose_index][0]:.6f}")
        depth_index = nearest(depth_t, stamp, max_dt) if len(depth_t) else None
        depth_path = root / depth[depth_index][1][0] if depth_index is not None else None
        frames.append(PosedFrame(root / name, pose, depth_path))
    if unposed:
        logger.warning("%s: %d of %d colour frames have no ground-truth pose within %.3f s "
                       "and are left out (e.g. %s)", root, len(unposed), len(rgb), max_dt,
                       unposed[0])
    if not frames:
        raise DataError(f"{gt_file}: no pose within {max_dt} s of any frame of "
                        f"{root / 'rgb.txt'}")
    if K_override is not None:
        return frames, K_override, "--intrinsics"
    K, source = freiburg_intrinsics(root)
    # The presets describe the 640x480 images the benchmark ships; scale to resized copies.
    K = resize_intrinsics(K, TUM_HW, image_size(frames[0].color, "colour image"))
    return frames, K, source
