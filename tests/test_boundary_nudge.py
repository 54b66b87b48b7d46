"""tools/boundary_nudge.py: an ulp at the warps' border decisions and the training loss."""

import pytest
import torch

import utils.geometry as geo
from tools import boundary_nudge

TINY = ["--resnet", "18", "--ndepths", "4", "--height", "128", "--width", "160"]


@pytest.mark.parametrize("camera,slack,moves", [("generic", None, False),
                                                ("sideways", None, False),
                                                ("sideways", "0", True)])
def test_an_ulp_at_the_frustum_boundary_moves_no_training_loss(camera, slack, moves):
    """The sideways window puts its nearest and farthest EST planes exactly on the
    boundary: without BOUNDARY_SLACK an outward ulp moves its loss (what made compiled and
    eager training losses differ on a GPU); the generic window has no sample there."""
    argv = TINY + ["--camera", camera] + (["--slack", slack] if slack else [])
    results = boundary_nudge.main(argv)
    losses = {nudge: r["loss"] for nudge, r in results.items()}
    on_boundary = results[0.0]["plane"] + results[0.0]["pixel"]
    assert (on_boundary > 0) == (camera == "sideways")
    assert (len(set(losses.values())) > 1) == moves, losses
    assert geo.BOUNDARY_SLACK == 1e-9  # the run's slack is put back


def test_the_nudge_is_undone_on_leaving():
    real = geo.sampling_grid, geo._volume_coords
    with pytest.raises(RuntimeError):
        with boundary_nudge.nudged_decisions(1e-13):
            assert geo.sampling_grid is not real[0]
            raise RuntimeError("inside")
    assert (geo.sampling_grid, geo._volume_coords) == real
    pix = torch.tensor([[[0.0], [0.0]]], dtype=torch.float64)  # one pixel at the corner
    counts = {"pixel": 0, "plane": 0}
    with boundary_nudge.nudged_decisions(0.0, counts):
        geo.sampling_grid(pix.float(), 4, 6, pix)
    assert counts == {"pixel": 2, "plane": 0}  # x = 0 and y = 0: both on the border
