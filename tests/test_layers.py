"""Building blocks (models/layers.py): the convolution parts and stacks inference copies use."""

import pytest
import torch
import torch.nn.functional as F

from models.layers import Conv3d, conv_part, stack_outputs


def _conv(cin: int, cout: int, bias: bool = True, seed: int = 0) -> Conv3d:
    torch.manual_seed(seed)
    return Conv3d(cin, cout, 3, padding=1, bias=bias)


@pytest.mark.parametrize("batch", [1, 3], ids=["naive-kernel-size", "onednn"])
def test_parts_over_the_inputs_sum_to_the_convolution(batch):
    conv = _conv(5, 4)
    x = torch.randn(batch, 5, 4, 6, 7)
    parts = [conv_part(conv, inputs=slice(0, 1)), conv_part(conv, inputs=slice(1, None),
                                                           bias=False)]
    with torch.no_grad():
        want = conv(x)
        got = parts[0](x[:, :1]) + parts[1](x[:, 1:])
    assert parts[0].bias is not None and parts[1].bias is None
    assert parts[1].weight.shape == (4, 4, 3, 3, 3)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_a_part_over_the_outputs_is_those_channels():
    conv = _conv(5, 4)
    x = torch.randn(1, 5, 4, 6, 7)
    with torch.no_grad():
        got = conv_part(conv, outputs=slice(1, 3))(x)
        want = conv(x)[:, 1:3]
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)


def test_stacked_outputs_are_each_convolution_in_order():
    a, b = _conv(5, 3, bias=True, seed=1), _conv(5, 2, bias=False, seed=2)
    x = torch.randn(2, 5, 4, 6, 7)
    stacked = stack_outputs([a, b])
    with torch.no_grad():
        got = stacked(x)
        want = torch.cat([a(x), F.conv3d(x, b.weight, padding=1)], dim=1)
    assert stacked.out_channels == 5 and stacked.bias is not None
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)


def test_stacking_convolutions_of_different_inputs_is_refused():
    with pytest.raises(ValueError, match="same input"):
        stack_outputs([_conv(5, 3), _conv(4, 3)])
    with pytest.raises(ValueError, match="same input"):
        stack_outputs([_conv(5, 3), Conv3d(5, 3, 1)])


def test_parts_are_copies():
    conv = _conv(5, 4)
    part = conv_part(conv, inputs=slice(0, 2))
    with torch.no_grad():
        part.weight.zero_()
    assert conv.weight.abs().sum() > 0
