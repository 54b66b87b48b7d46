"""datasets.synthetic.random_frames: repeatable windows on exact camera paths."""

import pytest
import torch

from datasets.synthetic.random_frames import camera_pose, random_window


def test_the_training_window_ignores_the_global_random_state():
    torch.manual_seed(0)
    first = random_window(5, 128, 160, torch.device("cpu"))
    torch.rand(10)
    second = random_window(5, 128, 160, torch.device("cpu"))
    for a, b in zip(first[:3], second[:3]):
        assert torch.equal(a, b)
    assert torch.equal(first[3]["dmaps"], second[3]["dmaps"])


def test_camera_paths_are_rigid_motions_and_unknown_ones_are_refused():
    for i in range(4):
        pose = camera_pose(i).double()
        R = pose[:3, :3]
        torch.testing.assert_close(R @ R.T, torch.eye(3, dtype=torch.float64), atol=1e-6, rtol=0)
        assert torch.equal(pose[3], torch.tensor([0, 0, 0, 1.0], dtype=torch.float64))
    assert not torch.equal(camera_pose(1)[:3, :3], torch.eye(3))  # it turns
    with pytest.raises(ValueError, match="camera must be one of generic, sideways"):
        camera_pose(1, "orbit")
