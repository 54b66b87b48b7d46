"""Hybrid decoder (the official ``CostRegNet``): context + matching volumes -> depths.

Steps, each a method:
  1. ``context_volume``: a monodepth2-style 2D decoder on the ResNet features gives an
     ``ndepths``-channel context map at 1/4 resolution;
  2. ``key_value``: the 3D matching volume, with the context map as one extra channel, gives
     16-channel key and value volumes;
  3. ``stereo_head0`` on the value -> initial depth (scale 3);
  4. ``fuse_views`` (EST transformer) or nothing -> ``stereo_head1`` -> depth (scale 2);
  5. ``refine``: 2D upsampling from the scale-2 logits -> depths at scales 1 and 0.
"""

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from models import precision
from models.est_transformer import EpipolarTransformer
from models.layers import Conv3d, ConvBlock, conv_bn_relu_3d, conv_bn_tanh_3d
from models.memory import ESTMemory
from utils.geometry import COORD_DTYPE, full_precision, warp_volume

MATCHING_CHANNELS = 32  # channels of the plane-sweep matching volume
KEY_CHANNELS = MATCHING_CHANNELS // 2


def upsample2(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="nearest")


def depth_from_logits(logits_bdhw: torch.Tensor, depth_planes_d: torch.Tensor, scale: int = 4):
    """Soft-argmin depth and max probability, upsampled ``scale``x (nearest).

    The official upsamples the logits (nearest) before the softmax; nearest upsampling
    commutes with the per-pixel softmax and expectation, so computing at low resolution
    gives the same numbers with ``scale**2`` times less work.

    Returns:
        (depth ``[B, 1, sH, sW]``, prob ``[B, 1, sH, sW]``).
    """
    prob = torch.softmax(logits_bdhw, dim=1)
    depth = (prob * depth_planes_d.view(1, -1, 1, 1).to(prob.dtype)).sum(dim=1, keepdim=True)
    max_prob = prob.max(dim=1, keepdim=True).values
    up = lambda x: F.interpolate(x, scale_factor=scale, mode="nearest")  # noqa: E731
    return up(depth), up(max_prob)


@full_precision
def official_src_T_ref(world_T_ref: torch.Tensor, world_T_src: torch.Tensor) -> torch.Tensor:
    """The transform the official EST uses to move a reference voxel into a source view.

    The official computes ``inverse(world_T_src @ inverse(world_T_ref))``, i.e.
    ``world_T_ref @ inverse(world_T_src)``, where the rigid-motion answer would be
    ``inverse(world_T_src) @ world_T_ref``. The two agree for cameras that are not rotated
    relative to the world; otherwise the official moves voxels by the baseline expressed in
    world axes rather than the source camera's. The released weights were trained with the
    official expression and the official outputs depend on it (tests/test_reference.py
    fails by metres with the other), so it is kept.
    """
    return world_T_ref @ torch.linalg.inv_ex(world_T_src).inverse


class DepthHybridDecoder(nn.Module):
    def __init__(self, num_ch_enc, ndepths: int = 64, depth_max: float = 10.0,
                 IF_EST_transformer: bool = True, num_output_channels: int = 1,
                 use_skips: bool = True):
        super().__init__()
        enc = list(num_ch_enc)
        dec = [16, 32, ndepths, 128, 256]
        self.ndepths, self.depth_max, self.use_skips = ndepths, depth_max, use_skips
        self.IF_EST_transformer = IF_EST_transformer

        self.upconv_4_0 = ConvBlock(enc[4], dec[4])
        self.upconv_4_1 = ConvBlock(dec[4] + enc[3], dec[4])
        self.upconv_3_0 = ConvBlock(dec[4], dec[3])
        self.upconv_3_1 = ConvBlock(dec[3] + enc[2], dec[3])
        self.upconv_2_0 = ConvBlock(dec[3], dec[2])
        self.upconv_2_1 = ConvBlock(dec[2] + enc[1], ndepths)
        self.upconv_1_0 = ConvBlock(dec[2] + ndepths, dec[1])
        self.upconv_1_1 = ConvBlock(dec[1] + enc[0], dec[1])
        self.dispconv_1 = nn.Conv2d(dec[1], num_output_channels, 3, 1, 1)
        self.upconv_0_0 = ConvBlock(dec[1], dec[0])
        self.upconv_0_1 = ConvBlock(dec[0], dec[0])
        self.dispconv_0 = nn.Conv2d(dec[0], num_output_channels, 3, 1, 1)

        if IF_EST_transformer:
            self.epipolar_transformer = EpipolarTransformer(KEY_CHANNELS, KEY_CHANNELS, 3)
        c = MATCHING_CHANNELS
        self.dres0 = nn.Sequential(conv_bn_relu_3d(c, c), conv_bn_relu_3d(c, c))
        self.dres1 = nn.Sequential(conv_bn_relu_3d(c, c), conv_bn_relu_3d(c, c))
        self.dres2 = nn.Sequential(conv_bn_relu_3d(c + 1, c + 1))
        self.key_layer = nn.Sequential(conv_bn_relu_3d(c + 1, KEY_CHANNELS))
        self.value_layer = nn.Sequential(conv_bn_tanh_3d(c + 1, KEY_CHANNELS))
        self.stereo_head0 = self._stereo_head()
        self.stereo_head1 = self._stereo_head()
        # dres2 -> key, value without 33-channel convolutions (key_value); set with the
        # model's fast_layers.
        self.split_key_value = False

    @staticmethod
    def _stereo_head():
        return nn.Sequential(conv_bn_relu_3d(KEY_CHANNELS, KEY_CHANNELS),
                             Conv3d(KEY_CHANNELS, 1, kernel_size=1))

    def _up_block(self, x, conv0, conv1, skip):
        x = [upsample2(conv0(x))] + ([skip] if self.use_skips and skip is not None else [])
        return conv1(torch.cat(x, dim=1))

    def context_volume(self, feats: list) -> torch.Tensor:
        """ResNet features -> context map ``[N, ndepths, H/4, W/4]`` (after ReLU)."""
        x = self._up_block(feats[4], self.upconv_4_0, self.upconv_4_1, feats[3])
        x = self._up_block(x, self.upconv_3_0, self.upconv_3_1, feats[2])
        return self._up_block(x, self.upconv_2_0, self.upconv_2_1, feats[1])

    def key_value(self, cost_ncdhw: torch.Tensor, context_ndhw: torch.Tensor):
        """Matching volume + context channel -> (key, value), each ``[N, 16, D, H, W]``."""
        matching = precision.run("cost_filter", lambda x: self.dres1(self.dres0(x)), cost_ncdhw)
        if self.split_key_value:
            return self._stacked_key_value(self._split_dres2(context_ndhw.unsqueeze(1),
                                                              matching))
        x = self.dres2(torch.cat([context_ndhw.unsqueeze(1), matching], dim=1))
        return self.key_layer(x), self.value_layer(x)

    # dres2 convolves the 33 channels of (context, matching volume) stacked, and the key and
    # value layers each convolve its 33-channel output; oneDNN runs 33 input channels about
    # as slowly as 48 (and its backward more slowly still). The two methods below compute
    # the same numbers up to float rounding (sums in another order) from the same
    # parameters, so they train and load as the official layers do.
    def _split_dres2(self, context_n1dhw: torch.Tensor, matching_ncdhw: torch.Tensor):
        """``dres2(cat(context, matching))`` as the sum of a convolution of the matching
        volume and one of the context channel: no 33-channel input, no stacked volume."""
        conv = self.dres2[0][0]
        x = conv.with_weights(matching_ncdhw, conv.weight[:, 1:], conv.bias)
        # The context's part in output blocks of 32: oneDNN runs one input channel to 33
        # outputs 3-6x slower than to 32 plus to 1 (batch 3, one thread).
        for start in range(0, conv.out_channels, MATCHING_CHANNELS):
            block = slice(start, start + MATCHING_CHANNELS)
            x[:, block] += conv.with_weights(context_n1dhw, conv.weight[block, :1])
        return _after_conv(self.dres2[0], x)

    def _stacked_key_value(self, x_ncdhw: torch.Tensor):
        """``key_layer(x), value_layer(x)`` with one convolution, the outputs stacked."""
        key, value = self.key_layer[0], self.value_layer[0]
        weight = torch.cat([key[0].weight, value[0].weight])
        bias = None  # the official layers have none; folded batch norm gives both one
        if key[0].bias is not None or value[0].bias is not None:
            bias = torch.cat([c.bias if c.bias is not None else c.weight.new_zeros(
                c.out_channels) for c in (key[0], value[0])])
        kv = key[0].with_weights(x_ncdhw, weight, bias)
        return _after_conv(key, kv[:, :KEY_CHANNELS]), _after_conv(value, kv[:, KEY_CHANNELS:])

    def fuse_views(self, views: ESTMemory, num_targets: int, K_b33: torch.Tensor,
                   depth_min: float, depth_interval: float):
        """EST transformer over the targets, in order; each fused value replaces the old one
        before the next target looks at it.

        Args:
            views: the targets' keys, values and poses first, then the memory's.
        Returns:
            (fused values of the targets, their scale-2 logits ``[B, D, H, W]``).
        """
        keys, poses = views.keys_bcdhw, views.world_T_cam_b44
        values = list(views.values_bcdhw)
        fused_logits = []
        for i in range(num_targets):
            warped_keys, warped_values = [], []
            for j in range(len(keys)):
                if j == i:
                    continue
                # Keys and values share one sampling grid: warp them as one volume.
                warped = warp_volume(
                    torch.cat([keys[j], values[j]], dim=1), depth_min, depth_interval,
                    official_src_T_ref(poses[i], poses[j]), K_b33,
                    official_src_T_ref(poses[i].to(COORD_DTYPE), poses[j].to(COORD_DTYPE)))
                warped_keys.append(warped[:, :KEY_CHANNELS])
                warped_values.append(warped[:, KEY_CHANNELS:])
            values[i] = self.epipolar_transformer(keys[i], values[i], warped_keys, warped_values)
            # One head call per target: in training its batch-norm statistics are per target.
            fused_logits.append(head_logits(self.stereo_head1, values[i]))
        return values[:num_targets], fused_logits

    def refine(self, context_ndhw, logits_ndhw, feats):
        """Scale-2 logits + context -> (depth at 1/2 upsampled x2, depth at full resolution)."""
        x = self.upconv_1_0(torch.cat([context_ndhw, F.relu(logits_ndhw)], dim=1))
        x = self._up_block(x, lambda t: t, self.upconv_1_1, feats[0])
        depth_s1 = upsample2(precision.run("disparity", self._to_depth, self.dispconv_1, x))
        x = self._up_block(x, self.upconv_0_0, self.upconv_0_1, None)
        depth_s0 = precision.run("disparity", self._to_depth, self.dispconv_0, x)
        return depth_s1, depth_s0

    def _to_depth(self, dispconv: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return self.depth_max * torch.sigmoid(dispconv(x))

    def forward(self, cost_volumes: list, feats: list, world_T_cam_b44: list,
                K_b33: torch.Tensor, depth_planes_d: torch.Tensor, depth_min: float,
                depth_interval: float, memory: Optional[ESTMemory] = None,
                use_est: bool = True):
        """Decode the targets of a window.

        Args:
            cost_volumes: per target ``[B, 32, D, H/4, W/4]``.
            feats: the five ResNet feature maps of the targets, batch ``B * T`` (b-major).
            world_T_cam_b44: per target, camera-to-world.
            K_b33: intrinsics at 1/4 resolution.
            memory: views of earlier windows, or None.
            use_est: run the EST transformer (else ``stereo_head1`` on the values directly).
        Returns:
            (outputs, the memory this window hands on: one view).
        """
        num = len(cost_volumes)
        b = cost_volumes[0].shape[0]
        outputs = {}
        context = self.context_volume(feats)
        key, value = self.key_value(torch.stack(cost_volumes, dim=1).flatten(0, 1), context)
        init_depth, init_prob = precision.run("depth_softmax", depth_from_logits,
                                              head_logits(self.stereo_head0, value),
                                              depth_planes_d)
        _store(outputs, lambda i: ("depth", i, 3), init_depth, b)
        _store(outputs, lambda i: ("init_prob", i), init_prob, b)

        views = ESTMemory(_per_target(key, b), _per_target(value, b), list(world_T_cam_b44))
        if use_est:
            if memory is not None:
                views = views + memory
            fused_values, logits = self.fuse_views(views, num, K_b33, depth_min, depth_interval)
            views.values_bcdhw[:num] = fused_values
            logits = torch.stack(logits, dim=1).flatten(0, 1)
        else:
            logits = head_logits(self.stereo_head1, value)
        fused_depth, fused_prob = precision.run("depth_softmax", depth_from_logits, logits,
                                                depth_planes_d)
        _store(outputs, lambda i: ("depth", i, 2), fused_depth, b)
        _store(outputs, lambda i: ("fused_prob", i), fused_prob, b)

        depth_s1, depth_s0 = self.refine(context, logits, feats)
        _store(outputs, lambda i: ("depth", i, 1), depth_s1, b)
        _store(outputs, lambda i: ("depth", i, 0), depth_s0, b)

        # Official quirk, kept for the same reason as official_src_T_ref: the memory's pose
        # is the last of the memory-extended pose list, i.e. with memory the pose of the
        # newest memory given, not of the last target (whose key and value are handed on).
        handed_on = ESTMemory(views.keys_bcdhw[num - 1:num], views.values_bcdhw[num - 1:num],
                              views.world_T_cam_b44[-1:])
        return outputs, handed_on.detached()


def _after_conv(block: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """The layers of a conv block after its convolution (norm, activation) applied to ``x``
    (without slicing the Sequential, which builds a new module on every call)."""
    for layer in list(block)[1:]:
        x = layer(x)
    return x


def head_logits(stereo_head: nn.Sequential, value_ncdhw: torch.Tensor) -> torch.Tensor:
    """``[N, D, H, W]`` plane logits of a stereo head (its 1-channel conv in float32)."""
    x = stereo_head[0](value_ncdhw)
    return precision.run("logits", stereo_head[1], x).squeeze(1)


def _per_target(x_n: torch.Tensor, batch: int) -> list:
    """Split a b-major ``[B*T, ...]`` tensor into T tensors of ``[B, ...]``."""
    return list(x_n.unflatten(0, (batch, -1)).unbind(1))


def _store(outputs: dict, key_of, x_n: torch.Tensor, batch: int) -> None:
    """``outputs[key_of(t)] = `` target t's ``[B, ...]`` slice of a b-major tensor."""
    for t, x in enumerate(_per_target(x_n, batch)):
        outputs[key_of(t)] = x
