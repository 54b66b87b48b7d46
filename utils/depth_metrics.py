"""The formulas of the paper's depth metrics, on tensors of valid pixels.

Imports nothing of the project: the model's official ``mode="test"`` uses
:func:`window_metrics`, and the evaluation of saved predictions (:mod:`utils.metrics`)
uses :func:`depth_metrics`, so both compute the same numbers in one place.
"""

import torch

METRIC_NAMES = ("abs_rel", "abs_diff", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3")


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
