"""Open a posed capture of your own, whatever its format.

Formats (``open_capture(path, fmt="auto")`` detects them from the folder):

* ``folder`` (the DVMVS sample-data layout), see :mod:`datasets.posed`;
* ``colmap``: a sparse model (text or binary), see :mod:`datasets.colmap`;
* ``tum``: a TUM RGB-D sequence, see :mod:`datasets.tum`;
* ``7scenes`` and ``scannet``: the layouts the evaluations read (a ScanNet ``.sens``
  file is first exported with ``python -m datasets.scannet_export``).

Every format gives a :class:`datasets.sequence.PosedSequence` (7-Scenes and ScanNet folders
their dataset's subclass of it).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import numpy as np

from datasets.colmap import colmap_frames, find_model
from datasets.io import DataError, not_found
from datasets.posed import folder_frames, select_frames
from datasets.scannet import ScanNetSequence
from datasets.sequence import PosedSequence
from datasets.seven_scenes import SevenScenesSequence
from datasets.tum import TUM_DEPTH_SCALE, tum_frames

logger = logging.getLogger(__name__)

FORMATS = ("auto", "folder", "colmap", "tum", "7scenes", "scannet")


def detect_format(root: Path) -> str:
    """The capture format of ``root`` from the files it holds."""
    if root.is_file() and root.suffix == ".sens":
        raise DataError(f"{root} is a ScanNet .sens file: export it first with "
                        f"`python -m datasets.scannet_export {root} OUT_DIR`")
    if not root.is_dir():
        raise not_found(root, "capture folder")
    if (root / "rgb.txt").is_file() and (root / "groundtruth.txt").is_file():
        return "tum"
    if (root / "images").is_dir() and ((root / "poses.txt").is_file()
                                       or (root / "poses").is_dir()):
        return "folder"
    if find_model(root, required=False) is not None:
        return "colmap"
    if any(root.glob("frame-*.color.png")):
        return "7scenes"
    if (root / "rgb").is_dir() and (root / "pose").is_dir():
        return "scannet"
    raise DataError(f"cannot tell the capture format of {root}: expected images/ with "
                    f"poses.txt and K.txt (folder), a COLMAP sparse model (cameras/images "
                    f".txt or .bin, also under sparse/ or sparse/0), rgb.txt with "
                    f"groundtruth.txt (TUM), frame-*.color.png (7-Scenes) or rgb/ with pose/ "
                    f"(ScanNet); name it with --format")


def parse_intrinsics(text: str) -> Optional[np.ndarray]:
    """``"fx,fy,cx,cy"`` as a 3x3 matrix; ``None`` for ``auto`` and the dataset modes."""
    if text in (None, "", "auto", "official", "dataset", "scene"):
        return None
    try:
        fx, fy, cx, cy = (float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--intrinsics must be auto or fx,fy,cx,cy (pixels at the images' "
                         f"native size), got {text!r}") from None
    values = np.array([fx, fy, cx, cy])
    # refused here, before any image is read: nan or 0 would only surface as nan depths
    if not np.all(np.isfinite(values)) or fx <= 0 or fy <= 0:
        raise ValueError(f"--intrinsics {text!r}: fx, fy, cx, cy must be finite and fx, fy "
                         f"> 0")
    return np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], dtype=np.float64)


def open_capture(path, fmt: str = "auto", height: int = 256, width: int = 320,
                 frame_interval: int = 1, min_baseline: float = 0.0, min_rotation: float = 0.0,
                 intrinsics: str = "auto", depth_min: float = 0.01, depth_max: float = 10.0,
                 tum_max_dt: float = 0.02):
    """The sequence of a posed capture in any supported format (see the module doc).

    ``intrinsics``: ``auto`` (the capture's own), or ``fx,fy,cx,cy`` at the native size
    (overrides the capture's; needed for TUM sequences without a freiburg name).
    """
    root = Path(path)
    if fmt not in FORMATS:
        raise ValueError(f"--format must be one of {FORMATS}, got {fmt!r}")
    K_override = parse_intrinsics(intrinsics)  # a bad option before any file is read
    fmt = detect_format(root) if fmt == "auto" else fmt
    if fmt in ("7scenes", "scannet"):
        if K_override is not None or min_baseline > 0 or min_rotation > 0:
            raise ValueError(f"{fmt} captures take their own intrinsics and --frame_interval "
                             f"only")
        cls = SevenScenesSequence if fmt == "7scenes" else ScanNetSequence
        seq = cls(root, height=height, width=width, frame_interval=frame_interval,
                  depth_min=depth_min, depth_max=depth_max,
                  intrinsics="dataset" if fmt == "7scenes" else "scene")
        seq.format = fmt
        return seq

    depth_scale = 1000.0
    if fmt == "folder":
        frames, K, K_source = folder_frames(root)
    elif fmt == "colmap":
        frames, K, K_source = colmap_frames(root)
    elif fmt == "tum":
        frames, K, K_source = tum_frames(root, K_override, tum_max_dt)
        depth_scale = TUM_DEPTH_SCALE
    if K_override is not None:
        K, K_source = K_override, f"--intrinsics {intrinsics}"
    keep = select_frames([f.world_T_cam_44 for f in frames], frame_interval, min_baseline,
                         min_rotation)
    logger.info("%s (%s): %d of %d frames selected", root, fmt, len(keep), len(frames))
    seq = PosedSequence([frames[i] for i in keep], K, height, width, depth_scale=depth_scale,
                        depth_min=depth_min, depth_max=depth_max, name=str(root),
                        K_source=K_source)
    seq.format = fmt
    return seq
