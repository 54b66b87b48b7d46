"""Plane-sweep cost volume of a reference view against its neighbours.

Built from small steps: warp every source's features onto the reference depth planes,
pair each warped volume with the reference features, fuse each pair with a learned block,
average over sources.
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
