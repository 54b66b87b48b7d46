"""Convolution + batch-norm building blocks.

Each block is an ``nn.Sequential`` whose indices (``0`` conv, ``1`` norm, ``2`` activation)
are part of the official parameter names, so checkpoints load with ``strict=True``.
"""

import torch
import torch.nn.functional as F
from torch import nn


class Conv3d(nn.Conv3d):
    """``nn.Conv3d`` (same parameters, same maths) that avoids PyTorch's naive CPU kernel.

    On the CPU, PyTorch sends a 3D convolution of one small sample (``N*C*D*H <= 20480``)
    to a naive kernel instead of oneDNN. A stride-1, "same"-padded k x k x k convolution
    equals a k x k 2D convolution over the k depth-shifted slices stacked as channels, which
    oneDNN runs 2-4x faster; that is what the small volumes of CPU training use here.
    """

    NAIVE_KERNEL_LIMIT = 20480

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._runs_naive_kernel(x):
            return super().forward(x)
        n, c, d, h, w = x.shape
        k = self.kernel_size[0]
        padded = F.pad(x, (0, 0, 0, 0, k // 2, k // 2))
        slices = torch.stack([padded[:, :, i:i + d] for i in range(k)], dim=1)  # N,k,C,D,H,W
        slices = slices.permute(0, 3, 1, 2, 4, 5).reshape(n * d, k * c, h, w)
        weight = self.weight.permute(0, 2, 1, 3, 4).reshape(self.out_channels, k * c, k, k)
        y = F.conv2d(slices, weight, self.bias, padding=k // 2)
        return y.view(n, d, self.out_channels, h, w).transpose(1, 2).contiguous()

    def _runs_naive_kernel(self, x: torch.Tensor) -> bool:
        k = self.kernel_size
        return (x.device.type == "cpu" and x.dtype == torch.float32 and x.shape[0] == 1
                and x.shape[1] * x.shape[2] * x.shape[3] <= self.NAIVE_KERNEL_LIMIT
                and k[0] == k[1] == k[2] and k[0] % 2 == 1 and self.padding == (k[0] // 2,) * 3
                and self.stride == (1, 1, 1) and self.dilation == (1, 1, 1)
                and self.groups == 1 and self.padding_mode == "zeros")


@torch.no_grad()
def conv_part(conv: nn.Conv3d, inputs: slice = slice(None), outputs: slice = slice(None),
              bias: bool = True) -> Conv3d:
    """A new :class:`Conv3d` computing ``conv``'s output channels ``outputs`` from its input
    channels ``inputs`` alone (weights copied; the bias only when ``bias``).

    A convolution over channel-concatenated inputs is the sum of such parts, one per input.
    """
    weight = conv.weight[outputs, inputs]
    part = Conv3d(weight.shape[1], weight.shape[0], conv.kernel_size, stride=conv.stride,
                  padding=conv.padding, dilation=conv.dilation,
                  bias=bias and conv.bias is not None, device=weight.device, dtype=weight.dtype)
    part.weight.copy_(weight)
    if part.bias is not None:
        part.bias.copy_(conv.bias[outputs])
    return part.requires_grad_(conv.weight.requires_grad)


@torch.no_grad()
def stack_outputs(convs: list) -> Conv3d:
    """One :class:`Conv3d` computing the outputs of ``convs`` (same input, same geometry),
    stacked along the channels in order."""
    first = convs[0]
    geometry = lambda c: (c.in_channels, c.kernel_size, c.stride, c.padding, c.dilation,  # noqa: E731
                          c.groups, c.padding_mode)
    if any(geometry(c) != geometry(first) for c in convs):
        raise ValueError("stack_outputs needs convolutions of the same input and geometry")
    weight = torch.cat([c.weight for c in convs])
    has_bias = [c.bias is not None for c in convs]
    stacked = Conv3d(weight.shape[1], weight.shape[0], first.kernel_size, stride=first.stride,
                     padding=first.padding, dilation=first.dilation, bias=any(has_bias),
                     device=weight.device, dtype=weight.dtype)
    stacked.weight.copy_(weight)
    if stacked.bias is not None:
        stacked.bias.copy_(torch.cat([c.bias if c.bias is not None
                                      else weight.new_zeros(c.out_channels) for c in convs]))
    return stacked.requires_grad_(first.weight.requires_grad)


def conv_bn(in_ch: int, out_ch: int, kernel: int, stride: int, pad: int, dilation: int = 1):
    """2D conv (no bias) + BatchNorm; a dilated conv pads by its dilation."""
    padding = dilation if dilation > 1 else pad
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=padding, dilation=dilation,
                  bias=False),
        nn.BatchNorm2d(out_ch))


def conv_bn_3d(in_ch: int, out_ch: int, kernel: int, stride: int, pad: int, act=None):
    """3D conv (no bias) + BatchNorm3d, optionally followed by an activation module."""
    layers = [Conv3d(in_ch, out_ch, kernel, stride=stride, padding=pad, bias=False),
              nn.BatchNorm3d(out_ch)]
    if act is not None:
        layers.append(act)
    return nn.Sequential(*layers)


def conv_bn_relu_3d(in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1, pad: int = 1):
    return conv_bn_3d(in_ch, out_ch, kernel, stride, pad, act=nn.ReLU(inplace=True))


def conv_bn_tanh_3d(in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1, pad: int = 1):
    return conv_bn_3d(in_ch, out_ch, kernel, stride, pad, act=nn.Tanh())


class ConvBlock(nn.Module):
    """3x3 conv + BN + ReLU of the 2D depth decoder (parameters under ``conv``)."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv = conv_bn(in_ch, out_ch, 3, 1, 1)
        self.nonlin = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.nonlin(self.conv(x))
