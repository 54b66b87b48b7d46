"""Convolution + batch-norm building blocks.

Each block is an ``nn.Sequential`` whose indices (``0`` conv, ``1`` norm, ``2`` activation)
are part of the official parameter names, so checkpoints load with ``strict=True``.
"""

import torch
import torch.nn.functional as F
from torch import nn

from models import precision


class Conv3d(nn.Conv3d):
    """``nn.Conv3d`` (same parameters, same maths) that avoids PyTorch's naive CPU kernel.

    On the CPU, PyTorch sends a 3D convolution of one small sample (``N*C*D*H <= 20480``)
    to a naive kernel instead of oneDNN. A stride-1, "same"-padded k x k x k convolution
    equals a k x k 2D convolution over the k depth-shifted slices stacked as channels, which
    oneDNN runs 2-4x faster; that is what the small volumes of CPU training use here.
    """

    NAIVE_KERNEL_LIMIT = 20480

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.with_weights(x, self.weight, self.bias)

    def with_weights(self, x: torch.Tensor, weight: torch.Tensor,
                     bias: torch.Tensor | None = None) -> torch.Tensor:
        """This convolution (kernel, stride, padding) with other weights ``[O, C, k, k, k]``,
        e.g. a slice of its own: a convolution over channel-stacked inputs is the sum of the
        convolutions of each input with its slice of the weight."""
        if not self._runs_naive_kernel(x):
            return self._conv_forward(x, weight, bias)
        n, c, d, h, w = x.shape
        k, out = self.kernel_size[0], weight.shape[0]
        padded = F.pad(x, (0, 0, 0, 0, k // 2, k // 2))
        slices = torch.stack([padded[:, :, i:i + d] for i in range(k)], dim=1)  # N,k,C,D,H,W
        slices = slices.permute(0, 3, 1, 2, 4, 5).reshape(n * d, k * c, h, w)
        weight = weight.permute(0, 2, 1, 3, 4).reshape(out, k * c, k, k)
        y = F.conv2d(slices, weight, bias, padding=k // 2)
        return y.view(n, d, out, h, w).transpose(1, 2).contiguous()

    def _runs_naive_kernel(self, x: torch.Tensor) -> bool:
        k = self.kernel_size
        return (x.device.type == "cpu" and x.dtype == torch.float32 and x.shape[0] == 1
                and x.shape[1] * x.shape[2] * x.shape[3] <= self.NAIVE_KERNEL_LIMIT
                and k[0] == k[1] == k[2] and k[0] % 2 == 1 and self.padding == (k[0] // 2,) * 3
                and self.stride == (1, 1, 1) and self.dilation == (1, 1, 1)
                and self.groups == 1 and self.padding_mode == "zeros")


class GroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` (same parameters, same maths) whose one-group statistics can come
    from a parallel reduction on a GPU.

    PyTorch's CUDA kernel computes each (sample, group) statistic in one thread block: with
    one group over a cost volume (millions of values per sample) and a batch of 1-3, a step
    runs on 1-3 of the GPU's multiprocessors (the EST ConvGRU's norms took 20 ms of an
    H100's fp16 training step). With ``parallel_statistics`` on (the model's fast layers),
    a one-group norm of a CUDA tensor runs :class:`WholeSampleNorm` instead; elsewhere
    (the CPU, where it is slower; under ``torch.compile``) the native kernel.
    """

    parallel_statistics = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # torch.compile generates its own parallel kernel for the native norm.
        if (self.parallel_statistics and self.num_groups == 1 and x.is_cuda and self.affine
                and not torch.compiler.is_compiling()):
            return WholeSampleNorm.apply(x, self.weight, self.bias, self.eps)
        return super().forward(x)


class WholeSampleNorm(torch.autograd.Function):
    """One-group group norm with per-channel affine, ``[N, C, ...]``: each sample normalised
    over all its values, computed in float32 (or wider), output in the dtype autocast gives
    ``group_norm``; statistics and gradients from reductions that use the whole device.
    Saves what the native kernel saves (the input, mean and inverse deviation)."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps):
        device = x.device.type
        # Autocast runs group_norm in float32 on CUDA, in the input's dtype on the CPU.
        autocast_fp32 = device == "cuda" and precision.active_dtype(device) is not None
        out_dtype = torch.float32 if autocast_fp32 else x.dtype
        with torch.autocast(device, enabled=False):
            n, c = x.shape[:2]
            x32 = x.to(_compute_dtype(x))
            var, mean = torch.var_mean(x32.reshape(n, -1), dim=1, correction=0)
            rstd = (var + eps).rsqrt()
            scale = rstd[:, None] * weight[None].to(x32.dtype)  # [N, C]
            shift = bias[None].to(x32.dtype) - mean[:, None] * scale
            shape = (n, c) + (1,) * (x.dim() - 2)
            y = torch.addcmul(shift.reshape(shape), x32, scale.reshape(shape))
        ctx.save_for_backward(x, weight, mean, rstd)
        return y.to(out_dtype)

    @staticmethod
    def backward(ctx, dy):
        x, weight, mean, rstd = ctx.saved_tensors
        with torch.autocast(x.device.type, enabled=False):
            n, c = x.shape[:2]
            compute = _compute_dtype(x)
            x_hat = (x.to(compute).reshape(n, c, -1) - mean[:, None, None]) * rstd[:, None, None]
            dy = dy.to(compute).reshape(n, c, -1)
            w = weight.to(compute)
            dy_sum, dy_xhat = dy.sum(-1), (dy * x_hat).sum(-1)  # [N, C]
            count = x_hat.shape[1] * x_hat.shape[2]
            # d(loss)/d(x_hat) = dy * w; x_hat's normalisation removes its mean and its
            # component along x_hat, per sample.
            g_mean = (dy_sum * w).sum(1) / count
            g_xhat_mean = (dy_xhat * w).sum(1) / count
            dx = rstd[:, None, None] * (dy * w[None, :, None] - g_mean[:, None, None]
                                        - x_hat * g_xhat_mean[:, None, None])
        return (dx.reshape(x.shape).to(x.dtype), dy_xhat.sum(0).to(weight.dtype),
                dy_sum.sum(0).to(weight.dtype), None)


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """float32, or the input's dtype when wider."""
    return torch.promote_types(x.dtype, torch.float32)


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
