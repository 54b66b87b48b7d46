"""Camera intrinsics used by the loaders, and their resizing rule."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from datasets.io import DataError

# The official code uses ScanNet's colour intrinsics at 640x480 for every dataset
# (ScanNet and 7-Scenes alike).
OFFICIAL_K_33 = np.array([[577.87, 0.0, 319.5],
                          [0.0, 577.87, 239.5],
                          [0.0, 0.0, 1.0]])
OFFICIAL_HW = (480, 640)

# 7-Scenes' documented Kinect intrinsics at 640x480.
SEVEN_SCENES_K_33 = np.array([[585.0, 0.0, 320.0],
                              [0.0, 585.0, 240.0],
                              [0.0, 0.0, 1.0]])
SEVEN_SCENES_HW = (480, 640)


def resize_intrinsics(K_33: np.ndarray, from_hw: Sequence[int],
                      to_hw: Sequence[int]) -> np.ndarray:
    """Intrinsics of an image resized from ``from_hw`` to ``to_hw`` (both ``(height, width)``).

    Row 0 is multiplied by the width ratio and row 1 by the height ratio, the official
    convention (``cx * s``, not ``(cx + 0.5) * s - 0.5``).
    """
    K = np.array(K_33, dtype=np.float64, copy=True)
    K[0] *= to_hw[1] / from_hw[1]
    K[1] *= to_hw[0] / from_hw[0]
    return K


def check_focal_lengths(K_33: np.ndarray, source: str) -> None:
    """Reject intrinsics that are not finite or whose focal lengths are not positive.

    A zero or negative focal length would divide by zero or mirror every back-projection.
    """
    K = np.asarray(K_33, dtype=np.float64)
    if not np.all(np.isfinite(K)):
        raise DataError(f"intrinsics from {source} hold non-finite values:\n{K}")
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise DataError(f"intrinsics from {source} have focal lengths fx={K[0, 0]:g}, "
                        f"fy={K[1, 1]:g}; both must be > 0")


def check_principal_point(K_33: np.ndarray, image_hw: Sequence[int], source: str) -> None:
    """Reject intrinsics that are not finite, with a focal length <= 0, or whose principal
    point lies outside the image they describe.

    Catches the common mistake of pairing full-resolution intrinsics (e.g. ScanNet's
    1296x968 ``intrinsic_color.txt``) with downsized images.
    """
    check_focal_lengths(K_33, source)
    cx, cy = K_33[0, 2], K_33[1, 2]
    height, width = image_hw
    if not (0 < cx < width and 0 < cy < height):
        raise DataError(f"intrinsics from {source} (cx={cx:.1f}, cy={cy:.1f}) do not fit the "
                        f"{height}x{width} (HxW) colour images they are paired with")
