"""Honest baselines scored beside a model, on the same frames and with the same metrics.

* ``constant``: one depth everywhere, the training set's median (what a network that
  learned nothing but the data's typical depth would predict);
* ``oracle``: the same constant replaced by each frame's ground-truth median: the best
  Abs Rel a single value per frame can reach (an oracle: it reads the ground truth). Its
  scale-invariant Abs Rel equals the constant's; a model that learned any structure must
  beat it there;
* ``plane sweep``: classical multi-view matching on the model's own depth planes, no
  learning: each neighbour frame is warped onto every fronto-parallel plane of the
  reference (:func:`utils.geometry.homography_warp`), the cost is ``1 - ZNCC`` over a
  small window averaged over the neighbours that see the pixel, and the cheapest plane
  wins (with a parabola through the neighbouring costs for a sub-plane depth). The
  matching the network's cost volume should at least equal.

Every row comes from :func:`evaluation.metrics.frame_metrics` (prediction upsampled to the
ground truth's resolution like the model's) and so carries ``si_abs_rel`` too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from evaluation.metrics import METRIC_NAMES, frame_metrics, mean_rows, si_abs_rel
from evaluation.run_metrics import (load_prediction, predictions_by_frame, prediction_stems,
                                    resolve_settings, scene_status)
from evaluation.scenes import list_scenes
from utils.geometry import homography_warp, relative_pose

__all__ = ["BASELINES", "si_abs_rel", "constant_depth", "oracle_depth", "plane_sweep_depth",
           "plane_sweep_frame", "median_depth", "baseline_rows", "baseline_means",
           "run_baselines"]

BASELINES = ("constant", "oracle", "planesweep")
# A warped sample counts as seen when its bilinear footprint lies (almost) wholly inside
# the source: partly outside samples blend with the zero padding and would fake texture.
SEEN_THRESHOLD = 0.999
# Variance floor of the ZNCC (grey levels 0..255 squared): below it a window is flat and
# matches every plane equally (cost 1), instead of dividing noise by noise.
FLAT_VARIANCE = 1e-2


def constant_depth(depth_value: float, shape: Sequence[int]) -> np.ndarray:
    """``depth_value`` everywhere: float64 array of ``shape`` (e.g. ``(H, W)``)."""
    return np.full(tuple(shape), float(depth_value), dtype=np.float64)


def oracle_depth(gt_hw, mask_hw, shape: Sequence[int]) -> Optional[np.ndarray]:
    """The constant with the frame's ground-truth median over ``mask_hw`` (None if empty).

    ``gt_hw``/``mask_hw`` at the ground truth's resolution; ``shape`` the prediction's.
    """
    gt = np.asarray(gt_hw, dtype=np.float64).squeeze()
    valid = np.asarray(mask_hw, dtype=bool).squeeze() & np.isfinite(gt) & (gt > 0)
    if not valid.any():
        return None
    return constant_depth(np.median(gt[valid]), shape)


def _grey_b1hw(img_b3hw: torch.Tensor) -> torch.Tensor:
    """RGB ``[B, 3, H, W]`` (0..255) -> luminance ``[B, 1, H, W]`` float64."""
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64, device=img_b3hw.device)
    return (img_b3hw.double() * weights.view(1, 3, 1, 1)).sum(dim=1, keepdim=True)


def _box(x_bchw: torch.Tensor, window: int) -> torch.Tensor:
    """Mean over a ``window`` x ``window`` box (same size; the border averages what is in)."""
    return F.avg_pool2d(x_bchw, window, stride=1, padding=window // 2, count_include_pad=False)


def zncc_cost(ref_11hw: torch.Tensor, warped_ndhw: torch.Tensor, window: int) -> torch.Tensor:
    """``1 - ZNCC`` ``[N, D, H, W]`` (0 best, 2 worst) of each warped source and plane
    against the reference over ``window`` x ``window`` boxes; flat windows cost 1."""
    mu_r, mu_s = _box(ref_11hw, window), _box(warped_ndhw, window)
    var_r = _box(ref_11hw ** 2, window) - mu_r ** 2
    var_s = _box(warped_ndhw ** 2, window) - mu_s ** 2
    cov = _box(ref_11hw * warped_ndhw, window) - mu_r * mu_s
    flat = (var_r < FLAT_VARIANCE) | (var_s < FLAT_VARIANCE)
    zncc = cov / (var_r.clamp(min=FLAT_VARIANCE) * var_s.clamp(min=FLAT_VARIANCE)).sqrt()
    return torch.where(flat, torch.ones_like(zncc), 1.0 - zncc.clamp(-1.0, 1.0))


def _sweep_costs(ref_img_3hw, src_imgs_n3hw, src_T_ref_n44, K_33, depth_planes_d,
                 window: int):
    """Mean cost ``[D, H, W]`` over the sources that see each pixel, and their count."""
    n = src_imgs_n3hw.shape[0]
    planes_nd = depth_planes_d.double()[None].expand(n, -1)
    K_n33 = K_33.double()[None].expand(n, 3, 3)
    src = torch.cat([_grey_b1hw(src_imgs_n3hw), torch.ones_like(src_imgs_n3hw[:, :1]).double()],
                    dim=1)
    warped = homography_warp(src, planes_nd, src_T_ref_n44.double(), K_n33)  # [N, 2, D, H, W]
    grey_ndhw, cover_ndhw = warped[:, 0], warped[:, 1]
    # the whole matching window must be seen, not only its centre
    seen_ndhw = _box(cover_ndhw, window) > SEEN_THRESHOLD
    cost_ndhw = zncc_cost(_grey_b1hw(ref_img_3hw[None]), grey_ndhw, window)
    count_dhw = seen_ndhw.sum(dim=0)
    total_dhw = (cost_ndhw * seen_ndhw).sum(dim=0)
    return total_dhw / count_dhw.clamp(min=1), count_dhw


def _refine(cost_dhw: torch.Tensor, best_hw: torch.Tensor,
            planes_d: torch.Tensor) -> torch.Tensor:
    """Sub-plane depth ``[H, W]``: the vertex of the parabola through the best plane's cost
    and its two neighbours', in inverse depth (image displacement is linear in 1/depth,
    so the cost is symmetric there and not in depth); kept within half a plane, and on
    the plane at the ends or where it is not a minimum."""
    d = cost_dhw.shape[0]
    lo, hi = (best_hw - 1).clamp(min=0), (best_hw + 1).clamp(max=d - 1)
    c0 = cost_dhw.gather(0, best_hw[None])[0]
    cm, cp = cost_dhw.gather(0, lo[None])[0], cost_dhw.gather(0, hi[None])[0]
    x0, xm, xp = 1.0 / planes_d[best_hw], 1.0 / planes_d[lo], 1.0 / planes_d[hi]
    # vertex of the parabola through (xm, cm), (x0, c0), (xp, cp)
    num = (x0 - xm) ** 2 * (c0 - cp) - (x0 - xp) ** 2 * (c0 - cm)
    den = (x0 - xm) * (c0 - cp) - (x0 - xp) * (c0 - cm)
    inner = (best_hw > 0) & (best_hw < d - 1) & (cm > c0) & (cp > c0) & torch.isfinite(cm + cp)
    vertex = x0 - 0.5 * num / torch.where(inner, den, torch.ones_like(den))
    bound_a, bound_b = 0.5 * (x0 + xm), 0.5 * (x0 + xp)
    vertex = torch.minimum(torch.maximum(vertex, torch.minimum(bound_a, bound_b)),
                           torch.maximum(bound_a, bound_b))
    return torch.where(inner, 1.0 / vertex, planes_d[best_hw])


def plane_sweep_depth(ref_img_3hw: torch.Tensor, src_imgs_n3hw: torch.Tensor,
                      world_T_ref_44: torch.Tensor, world_T_src_n44: torch.Tensor,
                      K_33: torch.Tensor, depth_planes_d: torch.Tensor, window: int = 5,
                      refine: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Classical plane-sweep depth of a reference image from posed source images.

    Args:
        ref_img_3hw: ``[3, H, W]`` RGB 0..255; src_imgs_n3hw: ``[N, 3, H, W]``.
        world_T_ref_44, world_T_src_n44: camera-to-world poses ``[4, 4]``, ``[N, 4, 4]``.
        K_33: intrinsics of the ``H`` x ``W`` images; depth_planes_d: ``[D]`` increasing.
        window: side of the ZNCC box; refine: parabola sub-plane refinement.
    Returns:
        (depth_hw float64, with nan where no source sees the pixel on any plane;
        valid_hw bool).
    """
    src_T_ref_n44 = relative_pose(world_T_ref_44.double()[None].expand_as(world_T_src_n44),
                                  world_T_src_n44.double())
    cost_dhw, count_dhw = _sweep_costs(ref_img_3hw, src_imgs_n3hw, src_T_ref_n44, K_33,
                                       depth_planes_d, window)
    cost_dhw = torch.where(count_dhw > 0, cost_dhw, torch.full_like(cost_dhw, float("inf")))
    best_hw = cost_dhw.argmin(dim=0)
    valid_hw = (count_dhw > 0).any(dim=0)
    planes_d = depth_planes_d.double().to(best_hw.device)
    depth_hw = _refine(cost_dhw, best_hw, planes_d) if refine else planes_d[best_hw]
    return torch.where(valid_hw, depth_hw, torch.full_like(depth_hw, float("nan"))), valid_hw


def neighbours(index: int, length: int) -> list:
    """The sources of frame ``index``: the previous and next frame of the sequence."""
    return [i for i in (index - 1, index + 1) if 0 <= i < length]


def plane_sweep_frame(seq, index: int, depth_planes_d: torch.Tensor,
                      fill: float) -> tuple[np.ndarray, float]:
    """Plane-sweep depth ``[H, W]`` of ``seq[index]`` from its neighbours; pixels no
    neighbour sees get the median of the swept ones (``fill`` if none: no ground truth
    used). Returns the depth and the fraction of pixels swept."""
    ref = seq[index]
    srcs = [seq[i] for i in neighbours(index, len(seq))]
    if not srcs:
        return constant_depth(fill, ref["img"].shape[1:]), 0.0
    depth_hw, valid_hw = plane_sweep_depth(
        ref["img"], torch.stack([s["img"] for s in srcs]), ref["cam_pose"],
        torch.stack([s["cam_pose"] for s in srcs]), ref["cam_intr"], depth_planes_d)
    depth, valid = depth_hw.numpy(), valid_hw.numpy()
    fill = float(np.median(depth[valid])) if valid.any() else fill
    return np.where(valid, depth, fill), float(valid.mean())


def median_depth(sequences, frame_step: int = 5, pixel_step: int = 4) -> float:
    """Median ground-truth depth (m) over every ``frame_step``-th frame of ``sequences``
    (``PosedSequence``-like), every ``pixel_step``-th row and column, valid pixels only.
    The subsampling keeps it cheap; the median of tens of thousands of pixels is stable."""
    values = []
    for seq in sequences:
        for index in range(0, len(seq), frame_step):
            item = seq[index]
            if item["dmap"] is None:
                continue
            gt = item["dmap"][0, ::pixel_step, ::pixel_step].double().numpy()
            valid = item["dmask"][0, ::pixel_step, ::pixel_step].numpy() & (gt > 0)
            values.append(gt[valid])
    values = np.concatenate(values) if values else np.zeros(0)
    if values.size == 0:
        raise ValueError("no valid ground-truth pixel to take a median of")
    return float(np.median(values))


def _row(pred_hw, item, pred_resize: str, clamp) -> Optional[dict]:
    """``frame_metrics`` of one baseline prediction (None without valid ground truth)."""
    return frame_metrics(pred_hw, item["dmap"].numpy(), item["dmask"].numpy(), pred_resize,
                         clamp)


def baseline_rows(seq, indices: Sequence[int], depth_value: float,
                  depth_planes_d: torch.Tensor, pred_resize: str = "bilinear",
                  clamp: Optional[tuple] = None) -> dict:
    """Per-frame metrics of the three baselines on the frames ``indices`` of ``seq``.

    Args:
        seq: ``PosedSequence``-like (items ``img`` [3, H, W] at the predictions' size,
            ``cam_pose``, ``cam_intr``, ``dmap`` [1, h, w] or None, ``dmask``).
        indices: the frames a run predicted (frames without valid ground truth skipped).
        depth_value: the constant (m); depth_planes_d: ``[D]`` planes of the sweep.
        pred_resize, clamp: as the model's predictions were scored.
    Returns:
        ``{baseline: [row]}`` for :data:`BASELINES`; rows as ``frame_metrics`` plus
        ``frame_id`` (and ``swept_fraction`` for the plane sweep).
    """
    rows = {name: [] for name in BASELINES}
    for index in indices:
        item = seq[index]
        if item["dmap"] is None:
            continue
        shape = item["img"].shape[1:]
        oracle = oracle_depth(item["dmap"].numpy(), item["dmask"].numpy(), shape)
        if oracle is None:
            continue
        sweep, swept = plane_sweep_frame(seq, index, depth_planes_d, depth_value)
        preds = {"constant": constant_depth(depth_value, shape), "oracle": oracle,
                 "planesweep": sweep}
        for name, pred in preds.items():
            row = _row(pred, item, pred_resize, clamp)
            if row is not None:
                extra = {"swept_fraction": swept} if name == "planesweep" else {}
                rows[name].append({**row, "frame_id": item["frame_id"], **extra})
    return rows


def baseline_means(rows: dict) -> dict:
    """``{baseline: metric means over frames plus frames}`` (None for a baseline without
    rows)."""
    out = {}
    for name, frame_rows in rows.items():
        means = mean_rows(frame_rows, METRIC_NAMES)
        out[name] = None if means is None else {**means, "frames": len(frame_rows)}
    return out


def run_baselines(run_dir, depth_value: float, depth_planes_d: torch.Tensor,
                  kind: str = "refined_depth") -> dict:
    """The baselines on the frames a saved run predicted (its ``kind`` depths), scored with
    the run's own settings (data, frame interval, intrinsics, range, resizing, clamping).

    Returns:
        ``{baseline: [row]}`` over every finished scene of the run (rows gain ``scene``).
    """
    settings = resolve_settings(Path(run_dir))
    rows = {name: [] for name in BASELINES}
    for name, folder in list_scenes(settings.eval_dataset, settings.datapath,
                                    settings.testlist):
        status, scene = scene_status(settings, name, folder)
        if scene is None or kind not in scene.kinds or (status != "ok" and settings.ours):
            continue
        stems = prediction_stems(scene)
        if not stems[kind]:
            continue
        size_hw = load_prediction(scene.scene_dir / kind / f"{stems[kind][0]}.npy").squeeze().shape
        seq = settings.sequence(scene.folder, size_hw)
        indices = sorted(i for i, kinds in predictions_by_frame(scene, stems, seq).items()
                         if kind in kinds)
        scene_rows = baseline_rows(seq, indices, depth_value, depth_planes_d,
                                   settings.pred_resize, settings.clamp)
        for baseline, frame_rows in scene_rows.items():
            rows[baseline] += [{"scene": name, **row} for row in frame_rows]
    return rows
