"""The training loss (models/losses.py): the official masked L1 and statistics, computed
without boolean indexing (no wait for the device)."""

import math

import torch

from models.losses import depth_stats, masked_mean, multiscale_depth_loss


def test_masked_mean_equals_indexing_and_is_nan_when_empty():
    g = torch.Generator().manual_seed(0)
    x, mask = torch.rand(2, 1, 8, 8, generator=g), torch.rand(2, 1, 8, 8, generator=g) > 0.5
    assert torch.allclose(masked_mean(x, mask), x[mask].mean(), rtol=1e-6)
    assert math.isnan(masked_mean(x, torch.zeros_like(mask)).item())


def test_loss_and_statistics_equal_the_official_indexed_computation():
    g = torch.Generator().manual_seed(1)
    gt = 4 * torch.rand(1, 3, 1, 16, 16, generator=g)
    gt[gt < 0.5] = 0  # invalid pixels, as in ScanNet's depth holes
    mask = gt > 0
    outputs = {("depth", t, s): (0.2 + 5 * torch.rand(1, 1, 16, 16, generator=g)).requires_grad_()
               for t in range(3) for s in range(4)}
    losses = multiscale_depth_loss(outputs, gt, mask, 0.1, 10.0)
    total = 0.0
    for s in range(4):
        per_target = [(outputs[("depth", t, s)][mask[:, t]] - gt[:, t][mask[:, t]]).abs().mean()
                      for t in range(3)]
        want = sum(per_target) / 3
        assert torch.allclose(losses[f"loss_{s}"], want, rtol=1e-6)
        total = total + 0.8 ** s * want
        gt0, pred0 = gt[:, 0], outputs[("depth", 0, s)].detach()
        valid = (gt0 > 0.1) & (gt0 < 10)
        g_, p_ = gt0[valid], pred0.clamp(0.1, 10)[valid]
        delta, abs_rel = depth_stats(gt0, pred0, 0.1, 10.0)
        assert torch.allclose(delta, (torch.maximum(g_ / p_, p_ / g_) < 1.25).float().mean())
        assert torch.allclose(abs_rel, ((g_ - p_).abs() / g_).mean(), rtol=1e-6)
    assert torch.allclose(losses["loss"], total, rtol=1e-6)
    losses["loss"].backward()
    grad = outputs[("depth", 0, 0)].grad
    assert torch.isfinite(grad).all() and (grad[~mask[:, 0]] == 0).all()
