"""TSDF fusion, mesh extraction, PLY I/O and mesh metrics (evaluation/fusion.py)."""


import numpy as np
import torch
import pytest

from datasets.synthetic.render import render
from datasets.synthetic.scene import random_scene
from datasets.synthetic.writer import default_intrinsics
from evaluation import fusion
from tests.helpers import load_ply


@pytest.fixture(scope="module")
def synthetic_views():
    """A synthetic room seen by 20 frames: exact depth, its pose and intrinsics."""
    scene, trajectory = random_scene(np.random.default_rng(0))
    K = default_intrinsics("scannet", 96, 128)
    frames = []
    for pose in trajectory.poses(60)[::3]:
        _, depth, _ = render(scene, pose, K, 96, 128)
        frames.append((np.where(np.isfinite(depth), depth, 0).astype(np.float32), K, pose))
    return frames


@pytest.fixture(scope="module")
def fused(synthetic_views):
    mesh, _ = fusion.fuse_depths(synthetic_views, voxel_size=0.04, max_depth=6.0)
    # The true surface: every pixel's exact hit point (the renderer's analytic depth).
    surface = np.concatenate([fusion.depth_to_world_points(*f) for f in synthetic_views])
    return mesh, surface[::3]


def test_fused_ground_truth_matches_true_surface(fused):
    mesh, surface = fused
    result = fusion.mesh_metrics(mesh, surface, num_points=50_000)
    assert result["fscore"] >= 0.95, result
    assert result["acc"] < 0.02 and result["comp"] < 0.02, result


def test_shifted_mesh_scores_far_lower(fused):
    mesh, surface = fused
    shifted = fusion.Mesh(mesh.vertices_v3 + np.float32(0.1), mesh.faces_f3)
    result = fusion.mesh_metrics(shifted, surface, num_points=50_000)
    assert result["fscore"] < 0.3, result
    assert result["acc"] > 0.08, result


def test_single_plane_fuses_to_a_plane():
    """A wall 2 m in front of three cameras (rotated about it) gives a flat mesh at z = 2."""
    K = np.array([[60.0, 0, 31.5], [0, 60.0, 23.5], [0, 0, 1]])
    frames = []
    for dx in (-0.2, 0.0, 0.2):
        pose = np.eye(4)
        pose[0, 3] = dx
        frames.append((np.full((48, 64), 2.0, np.float32), K, pose))
    mesh, _ = fusion.fuse_depths(frames, voxel_size=0.03, max_depth=5.0)
    assert len(mesh) > 100
    z = mesh.vertices_v3[:, 2]
    assert np.abs(z - 2.0).max() < 0.005
    # Flat: the smallest principal axis of the vertices is the z axis with ~0 spread.
    centred = mesh.vertices_v3 - mesh.vertices_v3.mean(0)
    _, sing, vt = np.linalg.svd(centred, full_matrices=False)
    assert abs(abs(vt[2, 2]) - 1) < 1e-4 and sing[2] / sing[0] < 1e-3
    # It spans the cameras' common view: about 2 * 2 * 31.5 / 60 = 2.1 m wide.
    assert np.ptp(mesh.vertices_v3[:, 0]) > 1.8


def test_unobserved_space_gives_no_surface():
    """Space behind the truncation band is unknown: no face at its border."""
    K = np.array([[60.0, 0, 31.5], [0, 60.0, 23.5], [0, 0, 1]])
    frames = [(np.full((48, 64), 2.0, np.float32), K, np.eye(4))]
    volume = fusion.TSDFVolume.from_bounds([-1, -1, 1.5], [1, 1, 3.0], voxel_size=0.05)
    volume.integrate(*frames[0])
    mesh = volume.extract_mesh()
    assert np.abs(mesh.vertices_v3[:, 2] - 2.0).max() < 0.01


def test_a_saved_ply_reads_back_as_the_same_mesh(tmp_path, fused):
    mesh, _ = fused
    path = tmp_path / "mesh.ply"
    fusion.save_ply(mesh, path)
    loaded = load_ply(path)
    np.testing.assert_array_equal(loaded.vertices_v3, mesh.vertices_v3)
    np.testing.assert_array_equal(loaded.faces_f3, mesh.faces_f3)
    empty = fusion.Mesh(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int64))
    fusion.save_ply(empty, tmp_path / "empty.ply")
    assert len(load_ply(tmp_path / "empty.ply")) == 0


def test_point_metrics_equal_hand_computed_values():
    gt = np.array([[0, 0, 0], [1, 0, 0]], np.float64)
    pred = np.array([[0, 0, 0.01], [0, 0, 0.5]], np.float64)
    result = fusion.point_metrics(pred, gt, threshold=0.05)
    assert result["prec"] == 0.5 and result["recall"] == 0.5 and result["fscore"] == 0.5
    assert result["acc"] == pytest.approx((0.01 + 0.5) / 2)
    assert result["comp"] == pytest.approx((0.01 + np.sqrt(1 + 0.01 ** 2)) / 2)


def test_volume_too_large_is_refused():
    with pytest.raises(ValueError, match="exceeds"):
        fusion.TSDFVolume.from_bounds([0, 0, 0], [100, 100, 100], voxel_size=0.01)


def test_the_frustum_box_updates_exactly_what_a_pass_over_every_voxel_does():
    """A camera in a corner of a large volume: integrating its frustum's box only gives the
    volume a pass over every voxel gives, bit for bit."""
    K = np.array([[60.0, 0, 31.5], [0, 60.0, 23.5], [0, 0, 1]])
    depth = np.random.default_rng(0).uniform(0.5, 1.5, size=(48, 64)).astype(np.float32)
    pose = np.eye(4)
    pose[:3, 3] = [0.3, 0.2, 0.1]
    boxed = fusion.TSDFVolume([-2.0, -2.0, -2.0], (80, 80, 80), 0.05)
    boxed.integrate(depth, K, pose)
    every = fusion.TSDFVolume([-2.0, -2.0, -2.0], (80, 80, 80), 0.05)
    cam_T_world = torch.linalg.inv(torch.as_tensor(pose)).float()
    every._integrate_voxels(torch.arange(every.tsdf.numel()), torch.from_numpy(depth),
                            torch.as_tensor(K, dtype=torch.float32), cam_T_world)
    assert torch.equal(boxed.tsdf, every.tsdf) and torch.equal(boxed.weight, every.weight)
    assert 0 < int((boxed.weight > 0).sum()) < boxed.weight.numel() // 10


def test_the_fusion_speed_tool_times_both_ways_on_one_volume():
    from dev import fusion_speed

    result = fusion_speed.main(["--dims", "48", "--voxel_size", "0.1", "--reps", "1"])
    assert result["box_s"] > 0 and result["every_s"] > 0


@pytest.mark.slow
def test_a_growing_volume_equals_one_allocated_with_the_final_bounds(synthetic_views):
    """Frame by frame, the volume grows (re-allocating several times); its voxels and its
    mesh equal, bit for bit, those of one volume that covers every frame from the start."""
    frames = synthetic_views[::2]
    growing = fusion.GrowingTSDF(voxel_size=0.04, max_depth=4.0)
    for depth, K, pose in frames:
        growing.integrate(depth, K, pose)
    assert growing.grown >= 2 and growing.frames == len(frames)
    # One volume, allocated once, over a box much larger than the grown one.
    vol = growing.volume
    lo = (vol.origin_ijk - 5) * 0.04
    fixed = fusion.TSDFVolume(lo, tuple(d + 13 for d in vol.dims), 0.04)
    for depth, K, pose in frames:
        fixed.integrate(np.where(depth <= 4.0, depth, 0), K, pose)
    tsdf, weight = fixed.grids()
    inner = tuple(slice(5, 5 + d) for d in vol.dims)
    assert weight.sum() == weight[inner].sum()  # nothing fused outside the grown volume
    np.testing.assert_array_equal(tsdf[inner], vol.grids()[0])
    np.testing.assert_array_equal(weight[inner], vol.grids()[1])
    mesh, expected = growing.extract_mesh(), fixed.extract_mesh()
    assert len(mesh) > 1000
    np.testing.assert_array_equal(mesh.vertices_v3, expected.vertices_v3)
    np.testing.assert_array_equal(mesh.faces_f3, expected.faces_f3)
    # fuse_depths (offline) fuses the same way.
    offline, _ = fusion.fuse_depths(frames, voxel_size=0.04, max_depth=4.0, progress=False)
    np.testing.assert_array_equal(offline.vertices_v3, mesh.vertices_v3)


def test_voxel_centres_lie_on_the_world_grid():
    volume = fusion.TSDFVolume([0.013, -0.5, 1.0], (4, 4, 4), 0.1)
    assert volume.origin_ijk.tolist() == [0, -5, 10]
    centres = volume._voxel_centres(torch.arange(64)).numpy()
    np.testing.assert_allclose(centres / 0.1, np.rint(centres / 0.1), atol=1e-4)


def test_a_growing_volume_refuses_to_exceed_its_voxel_budget():
    K = np.array([[60.0, 0, 31.5], [0, 60.0, 23.5], [0, 0, 1]])
    growing = fusion.GrowingTSDF(voxel_size=0.05, max_depth=5.0, max_voxels=50 ** 3)
    growing.integrate(np.full((48, 64), 1.0, np.float32), K, np.eye(4))
    far = np.eye(4)
    far[0, 3] = 20.0
    with pytest.raises(ValueError, match="exceeds"):
        growing.integrate(np.full((48, 64), 1.0, np.float32), K, far)
