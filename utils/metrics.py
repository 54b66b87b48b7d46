"""Depth metrics of the paper's table, and their evaluation from saved predictions.

``depth_metrics`` holds the formulas (one place for all of them); ``window_metrics`` is the
model's ``mode="test"``. ``evaluate_saved`` / ``python -m utils.metrics`` turn the depth
maps an evaluator saved into the table the official repository never had.

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
  dataset (:data:`DEFAULT_EVAL_RANGE`): ScanNet and 7-Scenes 0.3-5 m, the range of the
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
  truth). Per scene: mean over its frames. Overall, both are reported: the mean over all
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

Outputs beside the predictions: ``metrics.json`` (everything, with the protocol),
``metrics.csv`` (one row per scene and depth kind plus the two overall rows),
``metrics_frames.csv`` (one row per frame), all written atomically; a table is printed.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import sys
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from utils.depth_kinds import DEPTH_KINDS  # noqa: F401  (the one list; importable here)
from utils.geometry import depth_reprojection_error, relative_pose

log = logging.getLogger("metrics")

METRIC_NAMES = ("abs_rel", "abs_diff", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3")
TEMPORAL_NAMES = ("tc_abs_rel", "tc_abs_diff")
# Ground-truth range (m) evaluated by default, per --eval_dataset.
DEFAULT_EVAL_RANGE = {"scannet": (0.3, 5.0), "7scenes": (0.3, 5.0), "synthetic": (0.1, 10.0)}
PRED_RESIZE_MODES = ("bilinear", "nearest")
METRICS_FORMAT = "estdepth/metrics"
METRICS_VERSION = 1
TABLE_HEADERS = {"abs_rel": "AbsRel", "abs_diff": "AbsDiff", "sq_rel": "SqRel", "rmse": "RMSE",
                 "rmse_log": "RMSElog", "a1": "d<1.25", "a2": "d<1.25^2", "a3": "d<1.25^3",
                 "tc_abs_rel": "TC-AbsRel", "tc_abs_diff": "TC-AbsDiff"}


def depth_metrics(gt: torch.Tensor, pred: torch.Tensor) -> dict:
    """Abs Rel, Abs diff, Sq Rel, RMSE, RMSE log and delta < 1.25^k (k = 1, 2, 3).

    Args:
        gt, pred: 1-D tensors of the valid pixels only (same length, gt > 0, pred > 0).
    Returns:
        dict of 0-d tensors keyed by :data:`METRIC_NAMES`.
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


# ------------------------------------------------------------------ one frame / pair
def eval_depth_range(eval_dataset: str, min_depth=None, max_depth=None) -> tuple:
    """``(min, max)`` ground-truth depth evaluated: the dataset's default unless given."""
    if eval_dataset not in DEFAULT_EVAL_RANGE:
        raise ValueError(f"no default evaluation range for {eval_dataset!r}; "
                         f"known: {sorted(DEFAULT_EVAL_RANGE)}")
    low, high = DEFAULT_EVAL_RANGE[eval_dataset]
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


# ---------------------------------------------------------------- saved predictions
def _read_run(run_dir: Path) -> dict:
    from utils.evaluation import RUN_FILE

    path = run_dir / RUN_FILE
    if not path.is_file():
        return {}
    return json.loads(path.read_text())


def find_runs(evalpath) -> list[Path]:
    """Run folders under ``evalpath``: itself when it holds ``run.json`` (or no run at all:
    official outputs), else its ``joint``/``estm`` sub-folders that do."""
    from utils.evaluation import RUN_FILE

    evalpath = Path(evalpath)
    if (evalpath / RUN_FILE).is_file():
        return [evalpath]
    runs = [evalpath / mode for mode in ("joint", "estm") if (evalpath / mode / RUN_FILE).is_file()]
    return runs or [evalpath]


class IncompleteRunError(RuntimeError):
    """Listed scenes are missing or unfinished (and ``allow_partial`` is off)."""


def evaluate_saved(run_dir, datapath=None, eval_dataset=None, testlist=None, intrinsics=None,
                   frame_interval=None, min_depth_eval=None, max_depth_eval=None,
                   pred_resize=None, clamp_pred=None, save: bool = True,
                   show: bool = True, allow_partial: bool = False) -> dict:
    """Metrics of the predictions saved in one run folder (see the module's protocol).

    Unset arguments come from the run's ``run.json`` (written by the evaluators), then from
    the defaults. Without ``run.json`` (e.g. outputs of the official scripts, float16
    ``[1, H, W]`` arrays, which are read too) ``datapath`` and ``eval_dataset`` are needed.

    In a run of the evaluators only finished scenes count: a completion marker of the
    run's configuration whose files are all there at the size written. Unfinished scenes
    (interrupted, another configuration, damaged files) are left out of every row and
    listed in ``counts``.

    Raises:
        IncompleteRunError: a listed scene is missing or unfinished, unless
            ``allow_partial`` (then the table covers the finished ones, and says so).
    Returns:
        the dict saved as ``metrics.json``.
    """
    from utils.evaluation import (DEPTH_KINDS as KINDS, damaged_files, effective_intrinsics,
                                  frame_stem, list_scenes, open_sequence, read_marker)

    run_dir = Path(run_dir)
    run = _read_run(run_dir)
    cfg = run.get("config", {})

    def pick(value, key, default=None):
        return value if value is not None else cfg.get(key, default)

    eval_dataset = pick(eval_dataset, "eval_dataset")
    datapath = pick(datapath, "datapath")
    if not eval_dataset or not datapath:
        raise ValueError(f"{run_dir} has no run.json: pass --datapath and --eval_dataset")
    testlist = pick(testlist, "testlist")
    intrinsics = effective_intrinsics(eval_dataset, pick(intrinsics, "intrinsics", "official"))
    frame_interval = int(pick(frame_interval, "frame_interval", 10))
    low, high = eval_depth_range(eval_dataset, pick(min_depth_eval, "min_depth_eval"),
                                 pick(max_depth_eval, "max_depth_eval"))
    pred_resize = pick(pred_resize, "pred_resize", "bilinear")
    if pred_resize not in PRED_RESIZE_MODES:
        raise ValueError(f"pred_resize must be one of {PRED_RESIZE_MODES}, got {pred_resize!r}")
    clamp = (low, high) if pick(clamp_pred, "clamp_pred", False) else None

    scenes = list_scenes(eval_dataset, datapath, testlist)
    frame_rows = {kind: [] for kind in KINDS}
    pair_rows = {kind: [] for kind in KINDS}
    per_scene = {}
    missing_scenes, empty_scenes, unmarked, mixed, damaged = [], [], [], [], []
    ours = bool(run.get("config_hash"))  # else official outputs: no markers to check
    for name, folder in scenes:
        scene_dir = run_dir / name
        kinds = [k for k in KINDS if (scene_dir / k).is_dir()]
        marker = read_marker(scene_dir)
        if not kinds:
            # no depth at all: not evaluated yet, or only probabilities were saved
            (empty_scenes if marker is not None else missing_scenes).append(name)
            continue
        if marker is None:
            unmarked.append(name)
            if ours:
                continue  # an interrupted scene: its frames are not all there
        elif ours and marker.get("config_hash") != run["config_hash"]:
            mixed.append(name)
            continue
        elif damaged_files(scene_dir, marker):
            damaged.append(name)
            continue
        per_scene[name] = _evaluate_scene(
            name, scene_dir, kinds, marker, frame_rows, pair_rows, frame_stem,
            lambda hw, folder=folder: open_sequence(eval_dataset, folder, hw[0], hw[1],
                                                    frame_interval, intrinsics, low, high),
            low, pred_resize, clamp)

    unfinished = {"without predictions": missing_scenes,
                  "unfinished (no completion marker)": unmarked if ours else [],
                  "of another configuration than run.json's": mixed,
                  "with missing or truncated files": damaged}
    problems = [f"{len(names)} {what} (e.g. {names[0]})"
                for what, names in unfinished.items() if names]
    if problems:
        text = (f"{run_dir}: of {len(scenes)} listed scene(s), " + "; ".join(problems)
                + "; they are left out of the table")
        if not allow_partial:
            raise IncompleteRunError(text + ". Finish the evaluation (re-run it to resume), "
                                            "or pass --allow_partial True")
        log.warning("%s (--allow_partial)", text)
    if unmarked and not ours:
        log.warning("%d scene(s) have no completion marker (not written by this project): "
                    "using the predictions present (e.g. %s)", len(unmarked), unmarked[0])

    overall = {}
    for kind in KINDS:
        scene_means = [per_scene[n][kind] for n in per_scene
                       if kind in per_scene[n] and per_scene[n][kind]["frames"]]
        pair_means = [per_scene[n][kind] for n in per_scene
                      if kind in per_scene[n] and per_scene[n][kind]["tc_pairs"]]
        if not any(kind in s for s in per_scene.values()):
            continue
        overall[kind] = {
            "mean_over_frames": _with_count(mean_rows(frame_rows[kind], METRIC_NAMES),
                                            "frames", len(frame_rows[kind])),
            "mean_over_scenes": _with_count(mean_rows(scene_means, METRIC_NAMES),
                                            "scenes", len(scene_means)),
            "temporal_mean_over_pairs": _with_count(mean_rows(pair_rows[kind], TEMPORAL_NAMES),
                                                    "pairs", len(pair_rows[kind])),
            "temporal_mean_over_scenes": _with_count(mean_rows(pair_means, TEMPORAL_NAMES),
                                                     "scenes", len(pair_means)),
        }

    def total(key):
        return sum(s["counts"][key] for s in per_scene.values())

    results = {
        "format": METRICS_FORMAT,
        "version": METRICS_VERSION,
        "mode": run.get("mode"),
        "config_hash": run.get("config_hash"),
        "eval_dataset": eval_dataset,
        "protocol": {
            "min_depth_eval": low, "max_depth_eval": high,
            "gt_resolution": "native (as stored in the dataset)",
            "pred_resize": pred_resize + " (pixel centres, align_corners=False)",
            "clamp_pred": clamp is not None,
            "frame_interval": frame_interval, "intrinsics": intrinsics,
            "per_frame": "metrics over the frame's valid ground-truth pixels",
            "mean_over_frames": "mean of per-frame metrics over every frame of every scene",
            "mean_over_scenes": "mean over scenes of the per-scene mean over frames",
            "temporal": "consecutive predicted frames t, t+1: frame t's depth reprojected "
                        "into t+1 with ground-truth poses vs t+1's depth (nearest); "
                        "tc_abs_rel = mean |diff| / d_t, tc_abs_diff = mean |diff| (m)",
        },
        "overall": overall,
        "scenes": per_scene,
        "counts": {
            "scenes_listed": len(scenes),
            "scenes_evaluated": len(per_scene),
            "scenes_missing": missing_scenes,
            "scenes_without_predictions": empty_scenes,
            "scenes_without_marker": unmarked,
            "scenes_other_config": mixed,
            "scenes_damaged": damaged,
            "complete": not problems,
            "frames_predicted": total("frames_predicted"),
            "frames_missing_gt": total("frames_missing_gt"),
            "frames_without_valid_gt": total("frames_without_valid_gt"),
            "skipped_nonfinite_pose": total("skipped_nonfinite_pose"),
            "bad_pred_pixels": total("bad_pred_pixels"),
        },
    }
    counts = results["counts"]
    if counts["frames_missing_gt"] or counts["frames_without_valid_gt"]:
        log.warning("skipped %d frame(s) without a ground-truth file and %d without a valid "
                    "ground-truth pixel", counts["frames_missing_gt"],
                    counts["frames_without_valid_gt"])
    if counts["bad_pred_pixels"]:
        log.warning("%d predicted pixel(s) were non-finite or <= 0 (set to %g m)",
                    counts["bad_pred_pixels"], low)
    if save:
        _save_results(results, frame_rows, run_dir)
    if show:
        print(format_table(results, title=str(run_dir)))
    return results


def load_prediction(path: Path) -> np.ndarray:
    """A saved depth map; an unreadable or truncated file is an error naming it."""
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise ValueError(f"cannot read the prediction {path} (truncated or not a .npy "
                         f"file?): {err}") from None


def _with_count(values: Optional[dict], key: str, count: int) -> Optional[dict]:
    return None if values is None else {**values, key: count}


def _evaluate_scene(name, scene_dir, kinds, marker, frame_rows, pair_rows, frame_stem,
                    make_sequence, fill, pred_resize, clamp) -> dict:
    stems = {kind: sorted(p.name[:-len(".npy")] for p in (scene_dir / kind).glob("*.npy"))
             for kind in kinds}
    if marker is not None:
        for kind in kinds:
            if set(stems[kind]) != set(marker["frames"]):
                log.warning("%s: %s holds %d predictions, its marker lists %d frames", name,
                            kind, len(stems[kind]), len(marker["frames"]))
    first = next((scene_dir / k / f"{stems[k][0]}.npy" for k in kinds if stems[k]), None)
    counts = {"frames_predicted": max(len(s) for s in stems.values()), "frames_missing_gt": 0,
              "frames_without_valid_gt": 0, "skipped_nonfinite_pose": 0, "bad_pred_pixels": 0}
    result = {"counts": counts, "marker": marker is not None}
    if first is None:
        for kind in kinds:
            result[kind] = {"frames": 0, **dict.fromkeys(METRIC_NAMES), "tc_pairs": 0,
                            **dict.fromkeys(TEMPORAL_NAMES)}
        return result
    seq = make_sequence(load_prediction(first).squeeze().shape)
    counts["skipped_nonfinite_pose"] = seq.skipped_nonfinite
    index_of = {frame_stem(str(frame.color)): i for i, frame in enumerate(seq.frames)}
    by_index = {}
    for kind in kinds:
        for stem in stems[kind]:
            if stem not in index_of:
                raise ValueError(f"{scene_dir / kind / stem}.npy: no frame {stem!r} among the "
                                 f"{len(seq)} frames of {seq.name} at this frame interval "
                                 f"(check --frame_interval and --datapath)")
            by_index.setdefault(index_of[stem], []).append(kind)

    rows = {kind: [] for kind in kinds}
    pairs = {kind: [] for kind in kinds}
    previous = {}
    K = seq.cam_intr.double().numpy()
    for index in sorted(by_index):
        item = seq[index]
        stem = frame_stem(item["img_path"])
        evaluated = False
        for kind in by_index[index]:
            pred, bad = sanitize_prediction(load_prediction(scene_dir / kind / f"{stem}.npy"),
                                            fill)
            counts["bad_pred_pixels"] += bad
            if item["dmap"] is not None:
                values = frame_metrics(pred, item["dmap"].numpy(), item["dmask"].numpy(),
                                       pred_resize, clamp)
                if values is not None:
                    evaluated = True
                    row = {"scene": name, "frame": stem, "frame_id": item["frame_id"], **values}
                    rows[kind].append(row)
                    frame_rows[kind].append(row)
            before = previous.get(kind)
            if before is not None and before[0] == index - 1:
                tc = temporal_consistency(before[1], pred, seq.poses[index - 1],
                                          seq.poses[index], K)
                if tc is not None:
                    pairs[kind].append(tc)
                    pair_rows[kind].append(tc)
            previous[kind] = (index, pred)
        if item["dmap"] is None:
            counts["frames_missing_gt"] += 1
        elif not evaluated:
            counts["frames_without_valid_gt"] += 1

    for kind in kinds:
        means = mean_rows(rows[kind], METRIC_NAMES) or dict.fromkeys(METRIC_NAMES)
        tc = mean_rows(pairs[kind], TEMPORAL_NAMES) or dict.fromkeys(TEMPORAL_NAMES)
        result[kind] = {"frames": len(rows[kind]), **means, "tc_pairs": len(pairs[kind]), **tc}
    return result


# ------------------------------------------------------------------- tables & files
def _csv(rows: list, columns: list) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore",
                            lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    return buffer.getvalue()


def summary_rows(results: dict) -> list[dict]:
    """One row per depth kind and scene, after the two overall rows of that kind."""
    rows = []
    for kind, overall in results["overall"].items():
        frames, scenes = overall["mean_over_frames"] or {}, overall["mean_over_scenes"] or {}
        pairs, tc_scenes = (overall["temporal_mean_over_pairs"] or {},
                            overall["temporal_mean_over_scenes"] or {})
        rows.append({"depth": kind, "scene": "ALL (mean over frames)",
                     "frames": frames.get("frames", 0), **frames,
                     "tc_pairs": pairs.get("pairs", 0), **pairs})
        rows.append({"depth": kind, "scene": "ALL (mean over scenes)",
                     "frames": frames.get("frames", 0), **scenes,
                     "tc_pairs": pairs.get("pairs", 0), **tc_scenes})
        for name, scene in results["scenes"].items():
            if kind in scene:
                rows.append({"depth": kind, "scene": name, **scene[kind]})
    return rows


SUMMARY_COLUMNS = ["depth", "scene", "frames", *METRIC_NAMES, "tc_pairs", *TEMPORAL_NAMES]
FRAME_COLUMNS = ["depth", "scene", "frame", "frame_id", "valid_pixels", *METRIC_NAMES]


def _save_results(results: dict, frame_rows: dict, run_dir: Path) -> None:
    from utils.io import save_json, save_text

    save_json(results, str(run_dir / "metrics.json"))
    save_text(_csv(summary_rows(results), SUMMARY_COLUMNS), str(run_dir / "metrics.csv"))
    frames = [{"depth": kind, **row} for kind, rows in frame_rows.items() for row in rows]
    save_text(_csv(frames, FRAME_COLUMNS), str(run_dir / "metrics_frames.csv"))


def format_table(results: dict, title: str = "") -> str:
    """The metrics as a fixed-width text table."""
    names = [*METRIC_NAMES, *TEMPORAL_NAMES]
    rows = summary_rows(results)
    width = max([24] + [len(str(r["scene"])) for r in rows])
    head = f"{'depth':<14}{'scene':<{width}} {'frames':>6} " + " ".join(
        f"{TABLE_HEADERS[n]:>10}" for n in names)
    lines = [f"{results.get('mode') or ''} {results['eval_dataset']} {title}".strip(), head,
             "-" * len(head)]
    for row in rows:
        cells = " ".join(f"{row[n]:>10.4f}" if row.get(n) is not None else f"{'-':>10}"
                         for n in names)
        lines.append(f"{row['depth']:<14}{str(row['scene']):<{width}} {row['frames']:>6} {cells}")
    c = results["counts"]
    lines.append(f"{c['scenes_evaluated']}/{c['scenes_listed']} scenes, "
                 f"{c['frames_predicted']} predicted frames; skipped: {c['frames_missing_gt']} "
                 f"without ground truth, {c['frames_without_valid_gt']} without a valid pixel, "
                 f"{c['skipped_nonfinite_pose']} for a non-finite pose (never predicted)")
    return "\n".join(lines)


# Metric options of the eval configuration; left unset they come from each run's run.json.
RUN_OPTIONS = ("datapath", "eval_dataset", "testlist", "intrinsics", "frame_interval",
               "min_depth_eval", "max_depth_eval", "pred_resize", "clamp_pred")


def main(argv=None) -> dict:
    """``python -m utils.metrics --evalpath RUN [...]``; returns ``{run folder: results}``.

    Takes the evaluators' configuration (configs/default.yaml, section ``eval``); the
    options of :data:`RUN_OPTIONS` default to what each run's ``run.json`` recorded.
    ``--evalpath`` is a run folder (``<evalpath>/joint`` or ``/estm``), the ``--evalpath``
    given to the evaluators (every run below it), or a folder of official outputs.
    """
    from utils.config import build_parser
    from utils.logs import setup_logging

    parser = build_parser("eval", description="Depth metrics of saved ESTDepth predictions "
                                              "(protocol: utils/metrics.py)")
    parser.set_defaults(**{key: None for key in RUN_OPTIONS})
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    return {str(run_dir): evaluate_saved(run_dir, allow_partial=args.allow_partial,
                                         **{k: getattr(args, k) for k in RUN_OPTIONS})
            for run_dir in find_runs(args.evalpath)}


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except IncompleteRunError as err:
        sys.exit(f"error: {err}")
