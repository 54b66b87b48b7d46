"""Building blocks (models/layers.py): a convolution with other weights, group norm from
parallel statistics."""

import pytest
import torch
import torch.nn.functional as F

from models.layers import Conv3d, GroupNorm, WholeSampleNorm


@pytest.mark.parametrize("batch", [1, 3], ids=["naive-kernel-size", "onednn"])
def test_a_convolution_of_stacked_inputs_is_the_sum_over_weight_slices(batch):
    torch.manual_seed(0)
    conv = Conv3d(5, 4, 3, padding=1, bias=True)
    x = torch.randn(batch, 5, 4, 6, 7)
    assert conv._runs_naive_kernel(x) == (batch == 1)  # both code paths are exercised
    with torch.no_grad():
        want = conv(x)
        got = (conv.with_weights(x[:, :1], conv.weight[:, :1], conv.bias)
               + conv.with_weights(x[:, 1:], conv.weight[:, 1:]))
        outputs = conv.with_weights(x, conv.weight[1:3], conv.bias[1:3])
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(outputs, want[:, 1:3], atol=1e-6, rtol=1e-6)


def test_with_weights_passes_gradients_to_the_weight_slices():
    torch.manual_seed(0)
    conv = Conv3d(5, 4, 3, padding=1, bias=False)
    x = torch.randn(1, 5, 4, 6, 7)
    conv(x).square().sum().backward()
    want = conv.weight.grad.clone()
    conv.weight.grad = None
    y = conv.with_weights(x[:, :2], conv.weight[:, :2]) + conv.with_weights(x[:, 2:],
                                                                             conv.weight[:, 2:])
    y.square().sum().backward()
    torch.testing.assert_close(conv.weight.grad, want, atol=1e-4, rtol=1e-5)


def _norm_inputs(batch=2, dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    x = (3 + 2 * torch.randn(batch, 4, 3, 5, 6, generator=g, dtype=dtype)).requires_grad_()
    weight = torch.randn(4, generator=g, dtype=dtype).requires_grad_()
    bias = torch.randn(4, generator=g, dtype=dtype).requires_grad_()
    return x, weight, bias


def test_whole_sample_norm_equals_one_group_norm_forward_and_backward():
    """Values and every gradient against F.group_norm, in float32 on volumes of the EST's
    shape kind (batch 1 and 3), and gradcheck's finite differences in float64."""
    torch.manual_seed(0)
    for batch in (1, 3):
        x = (1 + 5 * torch.randn(batch, 16, 8, 12, 10)).requires_grad_()
        w, b = torch.randn(16, requires_grad=True), torch.randn(16, requires_grad=True)
        dy = torch.randn_like(x)
        outs, grads = [], []
        for fn in (lambda: F.group_norm(x, 1, w, b, 1e-5),
                   lambda: WholeSampleNorm.apply(x, w, b, 1e-5)):
            y = fn()
            outs.append(y.detach())
            grads.append(torch.autograd.grad(y, (x, w, b), dy))
        torch.testing.assert_close(outs[1], outs[0], atol=2e-5, rtol=1e-5)
        for got, want in zip(grads[1], grads[0]):
            torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    assert torch.autograd.gradcheck(lambda x, w, b: WholeSampleNorm.apply(x, w, b, 1e-5),
                                    _norm_inputs())


def test_whole_sample_norm_gives_the_dtype_cpu_autocast_gives_group_norm():
    """(CUDA autocast runs group_norm in float32: tests/test_cuda.py.)"""
    x, w, b = (t.detach().float() for t in _norm_inputs())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want = F.group_norm(x.bfloat16(), 1, w, b, 1e-5)
        got = WholeSampleNorm.apply(x.bfloat16(), w, b, 1e-5)
    assert got.dtype == want.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), want.float(), atol=0.02, rtol=0.01)
    assert WholeSampleNorm.apply(x.double(), w.double(), b.double(), 1e-5).dtype == torch.float64


def test_group_norm_takes_the_parallel_path_only_on_a_gpu_when_asked(monkeypatch):
    calls = []
    monkeypatch.setattr(WholeSampleNorm, "apply", lambda *a: calls.append(a) or a[0])
    norm = GroupNorm(1, 4)
    x = torch.randn(1, 4, 3, 5, 6)
    torch.testing.assert_close(norm(x), F.group_norm(x, 1, norm.weight, norm.bias))
    norm.parallel_statistics = True
    norm(x)  # the CPU: the native kernel is faster there
    assert not calls
    monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda self: True))
    norm(x)
    assert len(calls) == 1
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    norm(x)  # inductor makes its own kernel for the native norm
    assert len(calls) == 1
    monkeypatch.undo()
    monkeypatch.setattr(WholeSampleNorm, "apply", lambda *a: calls.append(a) or a[0])
    monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda self: True))
    two_groups = GroupNorm(2, 4)
    two_groups.parallel_statistics = True
    two_groups(x)  # only one group is a whole-sample norm
    assert len(calls) == 1


def test_the_fast_layers_switch_the_est_norms():
    from models.depthnet import DepthNetHybrid

    model = DepthNetHybrid(ndepths=4, depth_min=0.5, depth_max=5.0, resnet=18)
    norms = [m for m in model.modules() if isinstance(m, GroupNorm)]
    assert len(norms) == 3 and not any(n.parallel_statistics for n in norms)
    model.use_fast_layers()
    assert all(n.parallel_statistics for n in norms)
    model.use_fast_layers(False)
    assert not any(n.parallel_statistics for n in norms)
