"""Building blocks (models/layers.py): a convolution with other weights."""

import pytest
import torch

from models.layers import Conv3d


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
