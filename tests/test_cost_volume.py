"""The plane-sweep cost volume (models/cost_volume.py): the inference order (pair convolution
before the warp) builds the official volume."""

import pytest
import torch

from models.cost_volume import (build_cost_volume, build_cost_volume_projected, init_pair_fusion,
                                split_pair_conv)
from models.inference import prepare_for_inference
from tests.helpers import small_eval_model
from utils.geometry import relative_pose


def _views(seed: int = 0):
    """A reference and two sources 0.3 m to either side: many plane samples fall outside."""
    g = torch.Generator().manual_seed(seed)
    feats = [torch.randn(1, 32, 16, 20, generator=g) for _ in range(3)]
    poses = torch.eye(4).repeat(3, 1, 1)
    poses[:, 0, 3] = torch.tensor([0.0, -0.3, 0.3])
    K = torch.tensor([[[16.0, 0, 9.5], [0, 16.0, 7.5], [0, 0, 1]]])
    src_T_refs = [relative_pose(poses[:1], poses[s:s + 1]) for s in (1, 2)]
    planes = torch.linspace(0.5, 5.0, 8)[None]
    return feats, src_T_refs, K, planes


def test_split_pair_conv_halves_the_weight_reference_first():
    w = torch.arange(2 * 6 * 1.0).view(2, 6, 1, 1, 1)
    ref, src = split_pair_conv(w)
    assert ref.shape == src.shape == (2, 3, 1, 1)
    assert torch.equal(ref[:, :, 0, 0], w[:, :3, 0, 0, 0])
    assert torch.equal(src[:, :, 0, 0], w[:, 3:, 0, 0, 0])


@pytest.mark.parametrize("fold", [False, True], ids=["batch-norm", "folded"])
def test_projected_cost_volume_equals_the_official_order(fold):
    model = small_eval_model(fold)  # eval mode: batch norm with its running statistics, or folded
    feats, src_T_refs, K, planes = _views()
    with torch.no_grad():
        want = build_cost_volume(feats[0], feats[1:], src_T_refs, K, planes, model.fuse_pair)
        got = build_cost_volume_projected(feats[0], feats[1:], src_T_refs, K, planes,
                                          *model._projected_fusion())
    assert got.shape == want.shape == (1, 32, 8, 16, 20)
    assert (got - want).abs().max().item() <= 1e-5 * want.abs().max().item()


def test_fast_layers_choose_the_projected_order(monkeypatch):
    """The model runs the official order unless its fast layers are on (the trainer and the
    inference copies turn them on), in training as in inference."""
    import models.depthnet as depthnet

    calls = []
    for name in ("build_cost_volume", "build_cost_volume_projected"):
        real = getattr(depthnet, name)
        monkeypatch.setattr(depthnet, name,
                            lambda *a, _real=real, _name=name: calls.append(_name) or _real(*a))
    model = small_eval_model()
    feats, _, K, _ = _views()
    poses = torch.eye(4).repeat(1, 3, 1, 1)
    poses[0, :, 0, 3] = torch.tensor([0.0, -0.3, 0.3])
    volume = lambda m: m.cost_volume(feats, 1, poses, K, m.depth_cands[None])  # noqa: E731
    with torch.no_grad():
        volume(model)  # the official forward in eval mode: the official order
        volume(prepare_for_inference(model, fold_bn=True))
        volume(model.train())
        volume(model.use_fast_layers())
    assert calls == ["build_cost_volume", "build_cost_volume_projected", "build_cost_volume",
                     "build_cost_volume_projected"]


def test_projected_order_trains_as_the_official_one():
    """In training mode (batch statistics of the pair convolution's batch norm) the projected
    order gives the same volume and the same gradients."""
    torch.manual_seed(0)
    feats, _, K, _ = _views()
    poses = torch.eye(4).repeat(1, 3, 1, 1)
    poses[0, :, 0, 3] = torch.tensor([0.0, -0.3, 0.3])
    runs = []
    for fast in (False, True):
        model = small_eval_model().train().use_fast_layers(fast)
        leaves = [f.clone().requires_grad_() for f in feats]
        volume = model.cost_volume(leaves, 1, poses, K, model.depth_cands[None])
        volume.square().mean().backward()
        grads = [f.grad for f in leaves] + [model.pre0[0].weight.grad, model.pre1[0].weight.grad]
        runs.append((volume.detach(), grads, model.pre0[1].running_mean.clone()))
    (v0, g0, m0), (v1, g1, m1) = runs
    assert (v1 - v0).abs().max().item() <= 1e-5 * v0.abs().max().item()
    torch.testing.assert_close(m1, m0, atol=1e-6, rtol=1e-5)
    for a, b in zip(g1, g0):
        assert (a - b).abs().max().item() <= 1e-4 * b.abs().max().item()


def test_difference_init_makes_the_pair_fusion_reference_minus_source():
    conv = torch.nn.Conv3d(8, 4, 1, bias=False)
    init_pair_fusion(conv, "difference")
    ref, src = torch.randn(2, 4, 3, 5, 6), torch.randn(2, 4, 3, 5, 6)
    torch.testing.assert_close(conv(torch.cat([ref, src], dim=1)), ref - src)
    before = torch.nn.Conv3d(8, 4, 1).weight.detach().clone()
    kept = torch.nn.Conv3d(8, 4, 1)
    kept.weight.data.copy_(before)
    init_pair_fusion(kept, "random")  # leaves PyTorch's initialisation
    assert torch.equal(kept.weight, before)
    with pytest.raises(ValueError):
        init_pair_fusion(conv, "identity")
