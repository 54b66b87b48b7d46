"""PSMNet-style matching feature extractor: 32 channels at 1/4 resolution."""

import torch
import torch.nn.functional as F
from torch import nn

from models.layers import conv_bn

# Average-pooling windows of the spatial-pyramid branches, at 1/4 resolution. The largest
# (32) is why the images must be at least 128 pixels high and wide.
POOL_SIZES = (32, 16, 8, 4)
FEATURE_CHANNELS = 32


class BasicBlock(nn.Module):
    """Residual block without a final ReLU (PSMNet)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, downsample, pad: int, dilation: int):
        super().__init__()
        self.conv1 = nn.Sequential(conv_bn(in_ch, out_ch, 3, stride, pad, dilation),
                                   nn.ReLU(inplace=True))
        self.conv2 = conv_bn(out_ch, out_ch, 3, 1, pad, dilation)
        self.downsample = downsample

    def forward(self, x):
        out = self.conv2(self.conv1(x))
        shortcut = x if self.downsample is None else self.downsample(x)
        return out + shortcut


def _make_layer(in_ch: int, out_ch: int, blocks: int, stride: int, dilation: int):
    downsample = None
    if stride != 1 or in_ch != out_ch:
        downsample = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False),
                                   nn.BatchNorm2d(out_ch))
    layers = [BasicBlock(in_ch, out_ch, stride, downsample, 1, dilation)]
    layers += [BasicBlock(out_ch, out_ch, 1, None, 1, dilation) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


def _pool_branch(size: int):
    return nn.Sequential(nn.AvgPool2d(size, stride=size), conv_bn(128, 32, 1, 1, 0),
                         nn.ReLU(inplace=True))


class MatchingFeatureNet(nn.Module):
    """Image ``[N, 3, H, W]`` in [-1, 1] -> features ``[N, 32, H/4, W/4]`` (no final BN/ReLU)."""

    def __init__(self):
        super().__init__()
        self.firstconv = nn.Sequential(conv_bn(3, 32, 3, 2, 1), nn.ReLU(inplace=True),
                                       conv_bn(32, 32, 3, 1, 1), nn.ReLU(inplace=True),
                                       conv_bn(32, 32, 3, 1, 1), nn.ReLU(inplace=True))
        self.layer1 = _make_layer(32, 32, 3, 1, 1)
        self.layer2 = _make_layer(32, 64, 16, 2, 1)
        self.layer3 = _make_layer(64, 128, 3, 1, 1)
        self.layer4 = _make_layer(128, 128, 3, 1, 2)
        self.branch1, self.branch2, self.branch3, self.branch4 = map(_pool_branch, POOL_SIZES)
        self.lastconv = nn.Sequential(conv_bn(320, 128, 3, 1, 1), nn.ReLU(inplace=True),
                                      nn.Conv2d(128, FEATURE_CHANNELS, 1, bias=False))

    def forward(self, img_n3hw: torch.Tensor) -> torch.Tensor:
        raw = self.layer2(self.layer1(self.firstconv(img_n3hw)))
        skip = self.layer4(self.layer3(raw))
        size = skip.shape[-2:]
        # PyTorch 1.2's F.upsample(mode="bilinear") meant align_corners=False.
        pyramid = [F.interpolate(branch(skip), size, mode="bilinear", align_corners=False)
                   for branch in (self.branch4, self.branch3, self.branch2, self.branch1)]
        return self.lastconv(torch.cat([raw, skip, *pyramid], dim=1))
