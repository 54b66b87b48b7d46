"""Convolution + batch-norm building blocks.

Each block is an ``nn.Sequential`` whose indices (``0`` conv, ``1`` norm, ``2`` activation)
are part of the official parameter names, so checkpoints load with ``strict=True``.
"""

from torch import nn


def conv_bn(in_ch: int, out_ch: int, kernel: int, stride: int, pad: int, dilation: int = 1):
    """2D conv (no bias) + BatchNorm; a dilated conv pads by its dilation."""
    padding = dilation if dilation > 1 else pad
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=padding, dilation=dilation,
                  bias=False),
        nn.BatchNorm2d(out_ch))


def conv_bn_3d(in_ch: int, out_ch: int, kernel: int, stride: int, pad: int, act=None):
    """3D conv (no bias) + BatchNorm3d, optionally followed by an activation module."""
    layers = [nn.Conv3d(in_ch, out_ch, kernel, stride=stride, padding=pad, bias=False),
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
