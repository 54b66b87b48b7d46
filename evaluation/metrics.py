"""Depth metrics of one predicted frame (or pair of frames), and the protocol they follow.

The formulas (:func:`depth_metrics`; :func:`window_metrics`, the official ``mode="test"``
window metrics) and their protocol applied to saved predictions: resizing, masking, the
evaluation range and temporal consistency, all pure functions. :mod:`evaluation.run_metrics` (``python -m
evaluation.run_metrics``) reads a saved run and applies them to every frame;
:mod:`evaluation.report` writes the table the official repository never had.

Protocol
--------
* Frames: every frame with a saved prediction (``init_depth/*.npy``,
  ``refined_depth/*.npy``) is compared with the ground truth of the same frame, read by the
  dataset loaders (``ScanNetSequence`` / ``SevenScenesSequence``) at its native resolution
  (640x480 for ScanNet and 7-Scenes). Joint and ESTM predict different frame sets (Joint
  no frame 0 and no tail after its last window, ESTM no first and last frame).
* Resolution: the comparison is made at the ground truth's resolution. Predictions
  (network size, e.g. 320x256) are upsampled bilinearly with the pixel-centre convention
  (``align_corners=False``, as ``cv2.resize``): the network saw an image made by
  ``cv2.resize`` (pixel centres aligned), so the inverse mapping with the same convention
  puts every prediction back over the ground-truth pixel it describes; nearest
  upsampling would instead repeat rows and columns irregularly at the 1.875 vertical
  ratio (480/256) and add a quantisation error of up to half a prediction pixel.
  ``--pred_resize nearest`` (pixel-centre nearest, ``nearest-exact``) is available.
* Valid pixels: ground truth finite and inside ``[min_depth_eval, max_depth_eval]``
  (inclusive, the loaders' rule); invalid markers (0, 65535) never count. Defaults per
  dataset (:data:`EVAL_DEPTH_RANGE`): ScanNet and 7-Scenes 0.3-5 m, the range of the
  official metric helper (``metric.compute_valid_depth_mask``) and the official
  evaluation loader's 5 m cap (depth sensors are unreliable below ~0.3 m and past 5 m);
  synthetic 0.1-10 m (its depth is exact, so the whole range of the released model's
  planes is evaluated). Unlike the official helper, pixels are never selected by the
  *prediction*'s value, which would let a model choose where it is judged.
* Predictions are not clamped (``--clamp_pred True`` clips them to the evaluation range,
  monodepth2-style). A non-finite or non-positive predicted pixel (never produced by the
  model: its depths lie in ``(0, depth_max]``) is replaced by ``min_depth_eval`` and
  counted in ``bad_pred_pixels``.
* Metrics per frame over its valid pixels: Abs Rel ``mean(|d - d*| / d*)``, Abs diff
  ``mean(|d - d*|)`` (m), Sq Rel ``mean((d - d*)^2 / d*)`` (m), RMSE ``sqrt(mean((d -
  d*)^2))`` (m), RMSE log ``sqrt(mean((log d - log d*)^2))``, and the fractions of pixels
  with ``max(d / d*, d* / d) < 1.25, 1.25^2, 1.25^3`` (``d`` predicted, ``d*`` ground
  truth), and scale-invariant Abs Rel ``si_abs_rel`` (Abs Rel of ``d * median(d*) /
  median(d)``: the shape of the depth, whatever its scale). Per scene: mean over its frames. Overall, both are reported: the mean over all
  frames of all scenes ("mean over frames", long scenes weigh more) and the mean of the
  per-scene means ("mean over scenes").
* Skipped frames, counted per scene and overall: no ground-truth file
  (``frames_missing_gt``), no valid ground-truth pixel (``frames_without_valid_gt``).
  Frames dropped by the loaders for a non-finite pose were never predicted; their count
  is reported as ``skipped_nonfinite_pose``.
* Temporal consistency (the paper's point: the memory makes consecutive depths agree),
  computed without ground truth at the prediction's resolution: for every two
  consecutive predicted frames ``t, t+1`` of the subsampled sequence, frame ``t``'s
  predicted depth is moved into camera ``t+1`` with the ground-truth poses and intrinsics
  (``utils.geometry.depth_reprojection_error``), and its depth there is compared with
  frame ``t+1``'s prediction sampled (nearest) at the projected pixel, over pixels that
  land inside frame ``t+1``. Reported: ``tc_abs_rel`` = mean of ``|z_t->t+1 - d_t+1| /
  d_t`` (normalised by frame ``t``'s predicted depth at the pixel) and ``tc_abs_diff`` =
  mean of ``|z_t->t+1 - d_t+1|`` (m), per pair, then averaged per scene, over all pairs
  and over scenes. Occlusions and non-Lambertian effects give a non-zero floor even for
  perfect depths; compare methods, not absolute values.

Outputs beside the predictions (:mod:`evaluation.report`): ``metrics.json``
(everything, with the protocol), ``metrics.csv`` (one row per scene and depth kind plus the
two overall rows), ``metrics_frames.csv`` (one row per frame), all written atomically; a
table is printed.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from utils.geometry import depth_reprojection_error, relative_pose
from utils.options import EVAL_DEPTH_RANGE

METRIC_NAMES = ("abs_rel", "abs_diff", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3",
                "si_abs_rel")


def si_abs_rel(pred_hw, gt_hw, mask_hw=None) -> float:
    """Scale-invariant Abs Rel: Abs Rel after scaling the prediction by
    ``median(gt) / median(pred)`` over the valid pixels (per-frame median scaling).

    Says whether a prediction has the right *shape*, whatever its scale: a constant depth
    scores the same as the best single value per frame.

    Args:
        pred_hw, gt_hw: same-shape arrays or tensors (any shape; e.g. ``[H, W]``).
        mask_hw: boolean, the pixels to use (default all); gt must be > 0 there.
    Returns:
        float (nan without a valid pixel).
    """
    pred = np.asarray(pred_hw, dtype=np.float64)
    gt = np.asarray(gt_hw, dtype=np.float64)
    if mask_hw is not None:
        mask = np.asarray(mask_hw, dtype=bool)
        pred, gt = pred[mask], gt[mask]
    if gt.size == 0:
        return float("nan")
    # numpy's median (mean of the two middle values): exact for the tests' hand values
    scaled = pred * (np.median(gt) / np.median(pred))
    return float(np.mean(np.abs(scaled - gt) / gt))


def depth_metrics(gt: torch.Tensor, pred: torch.Tensor) -> dict:
    """Abs Rel, Abs diff, Sq Rel, RMSE, RMSE log and delta < 1.25^k (k = 1, 2, 3).

    Args:
        gt, pred: 1-D tensors of the valid pixels only (same length, gt > 0, pred > 0).
    Returns:
        dict of 0-d tensors keyed by :data:`METRIC_NAMES` but ``si_abs_rel`` (a median,
        added by :func:`frame_metrics`; the training's window metrics stay as official).
    """
    gt, pred = gt.double(), pred.double()
    ratio = torch.maximum(gt / pred, pred / gt)
    diff = gt - pred
    return {
        "abs_rel": (diff.abs() / gt).mean(),
        "abs_diff": diff.abs().mean(),
        "sq_rel": (diff ** 2 / gt).mean(),
        "rmse": (diff ** 2).mean().sqrt(),
        "rmse_log": ((gt.log() - pred.log()) ** 2).mean().sqrt(),
        "a1": (ratio < 1.25).double().mean(),
        "a2": (ratio < 1.25 ** 2).double().mean(),
        "a3": (ratio < 1.25 ** 3).double().mean(),
    }


def window_metrics(outputs: dict, gt_btchw: torch.Tensor, mask_btchw: torch.Tensor,
                   scales=(0, 2)) -> dict:
    """Metrics averaged over the targets of a window (the official ``mode="test"``).

    Returns keys ``f"{name}_{scale}"``.
    """
    num_targets = gt_btchw.shape[1]
    out = {}
    for s in scales:
        for t in range(num_targets):
            mask = mask_btchw[:, t]
            pred = outputs[("depth", t, s)]
            for name, value in depth_metrics(gt_btchw[:, t][mask], pred[mask]).items():
                out[f"{name}_{s}"] = out.get(f"{name}_{s}", 0.0) + value / num_targets
    return out


TEMPORAL_NAMES = ("tc_abs_rel", "tc_abs_diff")
# Ground-truth range (m) evaluated by default, per --eval_dataset.
PRED_RESIZE_MODES = ("bilinear", "nearest")


def eval_depth_range(eval_dataset: str, min_depth=None, max_depth=None) -> tuple:
    """``(min, max)`` ground-truth depth evaluated: the dataset's default unless given."""
    if eval_dataset not in EVAL_DEPTH_RANGE:
        raise ValueError(f"no default evaluation range for {eval_dataset!r}; "
                         f"known: {sorted(EVAL_DEPTH_RANGE)}")
    low, high = EVAL_DEPTH_RANGE[eval_dataset]
    low = low if min_depth in (None, "") else float(min_depth)
    high = high if max_depth in (None, "") else float(max_depth)
    if not 0 < low < high:
        raise ValueError(f"need 0 < min_depth_eval < max_depth_eval, got {low}, {high}")
    return low, high


def sanitize_prediction(pred_hw: np.ndarray, fill: float) -> tuple[np.ndarray, int]:
    """float64 copy with non-finite or non-positive pixels set to ``fill``; and their count."""
    pred = np.asarray(pred_hw, dtype=np.float64).squeeze()
    if pred.ndim != 2:
        raise ValueError(f"a depth prediction must be [H, W] (or [1, H, W]), got {pred.shape}")
    bad = ~(np.isfinite(pred) & (pred > 0))
    if bad.any():
        pred = np.where(bad, fill, pred)
    return pred, int(bad.sum())


def resize_prediction(pred_hw: np.ndarray, size_hw, mode: str = "bilinear") -> np.ndarray:
    """Resize a prediction to ``size_hw`` with the pixel-centre convention (float64)."""
    if mode not in PRED_RESIZE_MODES:
        raise ValueError(f"pred_resize must be one of {PRED_RESIZE_MODES}, got {mode!r}")
    pred = np.asarray(pred_hw, dtype=np.float64)
    if tuple(pred.shape) == tuple(size_hw):
        return pred
    x = torch.from_numpy(pred)[None, None]
    if mode == "bilinear":
        out = F.interpolate(x, size=tuple(size_hw), mode="bilinear", align_corners=False)
    else:
        out = F.interpolate(x, size=tuple(size_hw), mode="nearest-exact")
    return out[0, 0].numpy()


def frame_metrics(pred_hw: np.ndarray, gt_hw: np.ndarray, valid_hw: np.ndarray,
                  pred_resize: str = "bilinear", clamp: Optional[tuple] = None) -> Optional[dict]:
    """Metrics of one frame: the prediction resized to the ground truth, over valid pixels.

    Args:
        pred_hw: positive, finite prediction (see :func:`sanitize_prediction`).
        gt_hw: ground truth in metres at its native resolution.
        valid_hw: boolean mask of the ground-truth pixels to evaluate.
        clamp: ``(low, high)`` to clip the prediction to, or None.
    Returns:
        :data:`METRIC_NAMES` as floats plus ``valid_pixels``, or None without valid pixel.
    """
    gt = np.asarray(gt_hw, dtype=np.float64).squeeze()
    valid = np.asarray(valid_hw, dtype=bool).squeeze() & np.isfinite(gt) & (gt > 0)
    if not valid.any():
        return None
    pred = resize_prediction(pred_hw, gt.shape, pred_resize)
    if clamp is not None:
        pred = np.clip(pred, *clamp)
    values = depth_metrics(torch.from_numpy(gt[valid]), torch.from_numpy(pred[valid]))
    values["si_abs_rel"] = si_abs_rel(pred[valid], gt[valid])
    out = {name: float(values[name]) for name in METRIC_NAMES}
    out["valid_pixels"] = int(valid.sum())
    return out


def temporal_consistency(depth_t: np.ndarray, depth_t1: np.ndarray, world_T_t: np.ndarray,
                         world_T_t1: np.ndarray, K_33: np.ndarray) -> Optional[dict]:
    """Agreement of two consecutive predicted depth maps through the ground-truth poses.

    Frame ``t``'s depth is moved into camera ``t+1`` and compared with frame ``t+1``'s depth
    sampled at the projected pixel (:func:`utils.geometry.depth_reprojection_error`).

    Args:
        depth_t, depth_t1: ``[H, W]`` predicted depths (positive); ``K_33`` at that size.
        world_T_t, world_T_t1: camera-to-world poses.
    Returns:
        ``{"tc_abs_rel", "tc_abs_diff", "valid_pixels"}`` or None when no pixel overlaps.
    """
    d0 = torch.as_tensor(np.asarray(depth_t, dtype=np.float64))[None, None]
    d1 = torch.as_tensor(np.asarray(depth_t1, dtype=np.float64))[None, None]
    pose_t = torch.as_tensor(np.asarray(world_T_t, dtype=np.float64))[None]
    pose_t1 = torch.as_tensor(np.asarray(world_T_t1, dtype=np.float64))[None]
    K = torch.as_tensor(np.asarray(K_33, dtype=np.float64))[None]
    err, valid = depth_reprojection_error(d0, d1, relative_pose(pose_t, pose_t1), K)
    valid = valid & torch.isfinite(err)
    if not valid.any():
        return None
    return {"tc_abs_rel": float((err / d0)[valid].mean()), "tc_abs_diff": float(err[valid].mean()),
            "valid_pixels": int(valid.sum())}


def mean_rows(rows: list, names) -> Optional[dict]:
    """Per-name mean over dict rows (None for no rows)."""
    if not rows:
        return None
    return {name: float(np.mean([row[name] for row in rows])) for name in names}
