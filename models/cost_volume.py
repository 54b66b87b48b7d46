"""Plane-sweep cost volume of a reference view against its neighbours.

Built from small steps: warp every source's features onto the reference depth planes,
pair each warped volume with the reference features, fuse each pair with a learned block,
average over sources. In inference the fusion's first layer, a 1x1x1 convolution of the
pair, is applied before the warp (:func:`build_cost_volume_projected`): the same volume
with less work.
"""

from typing import Callable, Optional

import torch

from utils.geometry import homography_warp


def warp_sources(src_feats: list, depth_planes_bd: torch.Tensor, src_T_refs: list,
                 K_b33: torch.Tensor, exact_src_T_refs: Optional[list] = None) -> list:
    """Homography-warp every source ``[B, C, H, W]`` onto the reference planes in one call
    (``exact_src_T_refs``: the transforms in float64, see :func:`homography_warp`).

    Returns:
        list of ``[B, C, D, H, W]``, one per source.
    """
    n, b = len(src_feats), src_feats[0].shape[0]
    warped = homography_warp(torch.cat(src_feats), depth_planes_bd.expand(b, -1).repeat(n, 1),
                             torch.cat(src_T_refs), K_b33.expand(b, 3, 3).repeat(n, 1, 1),
                             None if exact_src_T_refs is None else torch.cat(exact_src_T_refs))
    return list(warped.split(b))


def pair_volume(ref_feat_bchw: torch.Tensor, warped_bcdhw: torch.Tensor) -> torch.Tensor:
    """``concat(reference repeated over planes, warped source)``: ``[B, 2C, D, H, W]``."""
    ref_volume = ref_feat_bchw.unsqueeze(2).expand_as(warped_bcdhw)
    return torch.cat([ref_volume, warped_bcdhw], dim=1)


def build_cost_volume(ref_feat_bchw: torch.Tensor, src_feats: list, src_T_refs: list,
                      K_b33: torch.Tensor, depth_planes_bd: torch.Tensor,
                      fuse_pair: Callable[[torch.Tensor], torch.Tensor],
                      exact_src_T_refs: Optional[list] = None) -> torch.Tensor:
    """Mean over sources of ``fuse_pair(pair_volume(ref, warped source))``.

    ``fuse_pair`` runs once per source (not batched): in training its batch-norm statistics
    are per pair, as in the official model.

    Args:
        ref_feat_bchw: ``[B, C, H, W]`` reference features.
        src_feats: list of ``[B, C, H, W]``; src_T_refs: list of ``[B, 4, 4]``.
        K_b33: intrinsics at feature resolution; depth_planes_bd: ``[B or 1, D]``.
    Returns:
        ``[B, C', D, H, W]``.
    """
    warped = warp_sources(src_feats, depth_planes_bd, src_T_refs, K_b33, exact_src_T_refs)
    volumes = [fuse_pair(pair_volume(ref_feat_bchw, w)) for w in warped]
    return torch.stack(volumes).mean(dim=0)


def split_pair_conv(weight_oc111: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference and source halves ``([O, C, 1, 1], [O, C, 1, 1])`` of the weight of a
    1x1x1 convolution over :func:`pair_volume` (reference channels first)."""
    w = weight_oc111[..., 0]
    c = w.shape[1] // 2
    return w[:, :c], w[:, c:]


def build_cost_volume_projected(ref_feat_bchw: torch.Tensor, src_feats: list, src_T_refs: list,
                                K_b33: torch.Tensor, depth_planes_bd: torch.Tensor,
                                project_ref: Callable, project_src: Callable,
                                finish: Callable[[torch.Tensor], torch.Tensor],
                                exact_src_T_refs: Optional[list] = None) -> torch.Tensor:
    """:func:`build_cost_volume` for ``fuse_pair = finish(conv1x1x1(pair))``, computed as
    ``finish(project_ref(ref) + warp(project_src(src)))``.

    ``project_ref``/``project_src`` are the reference and source halves of the convolution
    as 2D 1x1 convolutions (:func:`split_pair_conv`; the bias goes with the reference).
    Equal up to float rounding: warping commutes with a per-pixel linear map of the channels
    (every channel is sampled with the same bilinear weights, samples outside are 0) and the
    reference half is the same on every plane. So two 2D convolutions replace a 3D one over
    twice the channels, and no pair volume is built. In training the pair convolution's
    batch norm (in ``finish``) normalises the same volume, hence with the same statistics.

    Args:
        finish: the rest of the fusion block, on ``[B, O, D, H, W]``.
    """
    ref_bohw = project_ref(ref_feat_bchw)
    warped = warp_sources([project_src(src) for src in src_feats], depth_planes_bd,
                          src_T_refs, K_b33, exact_src_T_refs)
    volumes = [finish(ref_bohw.unsqueeze(2) + w) for w in warped]
    return torch.stack(volumes).mean(dim=0)


PAIR_FUSION_INITS = ("random", "difference")


def init_pair_fusion_as_difference(conv: torch.nn.Module) -> None:
    """Set a 1x1x1 convolution over :func:`pair_volume` (``2C -> C``) to the per-channel
    difference ``reference - warped source`` (bias, if any, zero).

    With it a training run from scratch starts with a cost volume that is a matching cost
    (zero where the warped source agrees with the reference) instead of a random mix of
    the two views; the architecture and the checkpoint format are unchanged.
    """
    w = conv.weight
    out_ch, in_ch = w.shape[:2]
    if in_ch != 2 * out_ch or any(k != 1 for k in w.shape[2:]):
        raise ValueError(f"need a 1x1x1 convolution 2C -> C, got weight {tuple(w.shape)}")
    with torch.no_grad():
        w.zero_()
        eye = torch.eye(out_ch, dtype=w.dtype, device=w.device)
        w[:, :out_ch, 0, 0, 0] = eye
        w[:, out_ch:, 0, 0, 0] = -eye
        if conv.bias is not None:
            conv.bias.zero_()


def init_pair_fusion(conv: torch.nn.Module, kind: str) -> None:
    """Initialise the pair fusion ``conv`` as ``kind`` (:data:`PAIR_FUSION_INITS`):
    ``random`` leaves PyTorch's initialisation, ``difference`` see
    :func:`init_pair_fusion_as_difference`."""
    if kind not in PAIR_FUSION_INITS:
        raise ValueError(f"init_cost_fusion must be one of {PAIR_FUSION_INITS}, got {kind!r}")
    if kind == "difference":
        init_pair_fusion_as_difference(conv)
