"""How far an ulp at the warps' inside/outside decisions moves a training loss.

The warps zero every sample outside the source frustum, deciding from float64 coordinates
(``utils.geometry``). Exact geometry puts samples exactly on the boundary, where the
decision would follow the coordinate's last bit, and kernels that fuse multiply-adds
(torch.compile's) round it otherwise than eager code. This runs one model's training
forward (eager, train mode, no gradients) on a benchmark window with the deciding
coordinates as computed and moved by a relative -1e-13 and +1e-13, and counts the
decisions within 1e-9 of the boundary:

    python -m tools.boundary_nudge --camera sideways --slack 0   # as before BOUNDARY_SLACK
    python -m tools.boundary_nudge --camera sideways             # now
    python -m tools.boundary_nudge --resnet 18 --ndepths 8 --height 128 --width 160
"""

from __future__ import annotations

import argparse
from contextlib import contextmanager
from typing import Optional

import torch

import utils.geometry as geo
from models.depthnet import DepthNetHybrid
from tools import training_window

NUDGES = (0.0, -1e-13, 1e-13)
NEAR = 1e-9  # grid units: what counts as on the boundary


def _near_boundary(grid_coord: torch.Tensor) -> int:
    return int(((grid_coord.abs() - 1).abs() < NEAR).sum())


@contextmanager
def nudged_decisions(nudge: float, counts: Optional[dict] = None):
    """Within: the warps' float64 deciding coordinates moved by a relative ``nudge``, pixels
    about the image centre and planes about the middle plane; ``counts`` (``{"pixel",
    "plane"}``) receives how many decisions lie within :data:`NEAR` of the boundary."""
    real_grid, real_coords = geo.sampling_grid, geo._volume_coords

    def grid(pix, h, w, decide=None):
        if decide is not None:
            centre = torch.tensor([(w - 1) / 2, (h - 1) / 2], dtype=decide.dtype,
                                  device=decide.device)
            centre = centre.view(1, 2, *[1] * (decide.dim() - 2))
            if counts is not None:
                counts["pixel"] += _near_boundary((decide - centre) / centre)
            decide = (decide - centre) * (1 + nudge) + centre
        return real_grid(pix, h, w, decide)

    def coords(d, h, w, depth_min, depth_interval, src_T_ref, K):
        pix, plane = real_coords(d, h, w, depth_min, depth_interval, src_T_ref, K)
        if src_T_ref.dtype != geo.COORD_DTYPE:  # where samples land, not the decision
            return pix, plane
        if counts is not None:
            counts["plane"] += _near_boundary(plane)
        return pix, plane * (1 + nudge)

    geo.sampling_grid, geo._volume_coords = grid, coords
    try:
        yield counts
    finally:
        geo.sampling_grid, geo._volume_coords = real_grid, real_coords


def nudged_losses(model: DepthNetHybrid, window: tuple) -> dict:
    """``{nudge: {"loss", "pixel", "plane"}}`` over :data:`NUDGES` (see the module)."""
    results = {}
    for nudge in NUDGES:
        counts = {"pixel": 0, "plane": 0}
        with nudged_decisions(nudge, counts), torch.no_grad():
            _, losses = model(*window, mode="train")
        results[nudge] = {"loss": float(losses["loss"]), **counts}
    return results


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    training_window.add_arguments(parser, seed=1234)
    parser.add_argument("--slack", type=float, default=geo.BOUNDARY_SLACK,
                        help="utils.geometry.BOUNDARY_SLACK for this run (0: the official "
                             "test, as before the slack)")
    args = parser.parse_args(argv)
    model, window = training_window.build(args, torch.device("cpu"))
    model.use_fast_layers().train()
    slack, geo.BOUNDARY_SLACK = geo.BOUNDARY_SLACK, args.slack
    try:
        results = nudged_losses(model, window)
    finally:
        geo.BOUNDARY_SLACK = slack
    base = results[0.0]["loss"]
    print(f"{args.camera} window, slack {args.slack:g}; decisions within {NEAR:g} of the "
          f"boundary: {results[0.0]['pixel']} pixel, {results[0.0]['plane']} plane")
    for nudge, r in results.items():
        print(f"  nudge {nudge:+.0e}: loss {r['loss']:.7f} ({(r['loss'] - base) / base:+.2e})")
    return results


if __name__ == "__main__":
    main()
