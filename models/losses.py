"""Training loss of ESTDepth: multi-scale L1 on valid ground-truth pixels."""

import torch

SCALES = (0, 1, 2, 3)
SCALE_WEIGHT = 0.8


def multiscale_depth_loss(outputs: dict, gt_btchw: torch.Tensor, mask_btchw: torch.Tensor,
                          depth_min: float, depth_max: float, scales=SCALES,
                          weight: float = SCALE_WEIGHT) -> dict:
    """``loss = sum_s weight**s * mean_t L1(pred[mask], gt[mask])``, with monitoring stats.

    Args:
        outputs: model outputs with ``("depth", t, s)`` of ``[B, 1, H, W]``.
        gt_btchw, mask_btchw: target depths and validity, ``[B, T, 1, H, W]``.
    Returns:
        ``loss`` and, per scale ``s``: ``loss_s``, ``delta_s`` (fraction with
        ``max(gt/pred, pred/gt) < 1.25``) and ``thred_s`` (abs rel), as the official does.
    """
    num_targets = gt_btchw.shape[1]
    losses = {}
    total = gt_btchw.new_zeros(())
    for s in scales:
        l1, delta, abs_rel = gt_btchw.new_zeros(()), gt_btchw.new_zeros(()), gt_btchw.new_zeros(())
        for t in range(num_targets):
            pred = outputs[("depth", t, s)].float()
            gt, mask = gt_btchw[:, t], mask_btchw[:, t]
            l1 = l1 + masked_mean((pred - gt).abs(), mask)
            d, r = depth_stats(gt, pred.detach(), depth_min, depth_max)
            delta, abs_rel = delta + d, abs_rel + r
        losses[f"loss_{s}"] = l1 / num_targets
        losses[f"delta_{s}"] = delta / num_targets
        losses[f"thred_{s}"] = abs_rel / num_targets
        total = total + weight ** s * losses[f"loss_{s}"]
    losses["loss"] = total
    return losses


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``x[mask].mean()`` without boolean indexing, whose output size makes the host wait
    for the device; NaN for an empty mask, as ``x[mask].mean()``."""
    return torch.where(mask, x, torch.zeros((), dtype=x.dtype, device=x.device)).sum() / mask.sum()


@torch.no_grad()
def depth_stats(gt: torch.Tensor, pred: torch.Tensor, depth_min: float, depth_max: float):
    """(delta < 1.25 ratio, abs rel) over ``depth_min < gt < depth_max``, prediction clamped."""
    valid = (gt > depth_min) & (gt < depth_max)
    pred = pred.clamp(depth_min, depth_max)
    ratio = torch.maximum(gt / pred, pred / gt)
    return masked_mean((ratio < 1.25).float(), valid), masked_mean((gt - pred).abs() / gt, valid)

