"""The synthetic data generator: exact z-depth, determinism, texture, motion, atomic output."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from datasets.intrinsics import OFFICIAL_K_33, SEVEN_SCENES_K_33
from datasets.io import read_depth, read_intrinsics, read_pose
from datasets.synthetic import cli as synthetic_cli
from datasets.synthetic import render as render_mod
from datasets.synthetic import scene as scene_mod
from datasets.synthetic import writer

REPO = Path(__file__).resolve().parents[1]


def _look_at(position, yaw, pitch, roll=0.0) -> np.ndarray:
    """world_T_cam for an OpenCV camera (x right, y down, z forward) in a z-up world."""
    forward = np.array([np.cos(pitch) * np.cos(yaw), np.cos(pitch) * np.sin(yaw), np.sin(pitch)])
    right = np.cross(forward, [0, 0, 1])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    rotation = np.stack([right, down, forward], axis=1)
    roll_about_z = cv2.Rodrigues(np.array([0.0, 0.0, roll]))[0]
    world_T_cam = np.eye(4)
    world_T_cam[:3, :3] = rotation @ roll_about_z
    world_T_cam[:3, 3] = position
    return world_T_cam


def _expected_plane_depth(world_T_cam, K, height, width, axis, coordinate):
    """Analytic z-depth of the plane ``world[axis] == coordinate`` at every pixel."""
    y, x = np.mgrid[0:height, 0:width]
    rays_cam = np.linalg.inv(K) @ np.stack([x.ravel(), y.ravel(), np.ones(x.size)])
    rays_world = world_T_cam[:3, :3] @ rays_cam
    return ((coordinate - world_T_cam[axis, 3]) / rays_world[axis]).reshape(height, width)


@pytest.fixture(scope="module")
def scene():
    scene, _ = scene_mod.random_scene(np.random.default_rng([7, 0]))
    return scene


def test_fronto_parallel_wall_has_constant_z_depth(scene):
    room_only = dataclasses.replace(scene, boxes=[], panels=[])
    height, width = 60, 80
    K = writer.default_intrinsics("scannet", height, width)
    position = np.array([0.0, 0.0, 1.3])
    _, depth, sid = render_mod.render(room_only, _look_at(position, 0.0, 0.0), K, height, width)
    wall = sid == 1  # the x = room_hi[0] wall
    assert wall.mean() > 0.3
    # z-depth, not ray length: the same value at every pixel of a fronto-parallel plane.
    np.testing.assert_allclose(depth[wall], room_only.room_hi[0] - position[0], rtol=1e-6)


def test_depth_matches_analytic_planes_for_a_rotated_camera(scene):
    box = scene_mod.Box(center_xy=np.array([1.2, 0.1]), yaw=0.0, half_xy=np.array([0.2, 0.3]),
                        z_range=(0.0, 1.0))
    with_box = dataclasses.replace(scene, boxes=[box], panels=[])
    height, width = 60, 80
    K = writer.default_intrinsics("scannet", height, width)
    world_T_cam = _look_at(np.array([-0.3, 0.2, 1.4]), yaw=0.25, pitch=-0.3, roll=0.1)
    _, depth, sid = render_mod.render(with_box, world_T_cam, K, height, width)

    planes = {1: (0, with_box.room_hi[0]),          # far wall x = hi
              4: (2, 0.0),                           # floor
              with_box.box_sid(0) + 0: (0, 1.0)}     # box face x = 1.2 - 0.2
    for surface, (axis, coordinate) in planes.items():
        mask = sid == surface
        assert mask.sum() > 20, f"surface {surface} not in view"
        expected = _expected_plane_depth(world_T_cam, K, height, width, axis, coordinate)
        np.testing.assert_allclose(depth[mask], expected[mask], rtol=1e-5)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_bytes_and_other_seeds_differ(tmp_path):
    kwargs = dict(layout="scannet", scenes=2, frames=3, height=48, width=64, val=0, test=1)
    writer.generate(tmp_path / "a", seed=5, workers=1, **kwargs)
    writer.generate(tmp_path / "b", seed=5, workers=2, **kwargs)
    writer.generate(tmp_path / "c", seed=6, workers=1, **kwargs)
    a, b, c = (_files(tmp_path / name) for name in "abc")
    assert a == b
    assert a.keys() == c.keys() and a["scene0000_00/rgb/0.jpg"] != c["scene0000_00/rgb/0.jpg"]


def test_written_files_agree_with_the_renderer(tmp_path):
    writer.generate(tmp_path, "scannet", scenes=1, frames=3, height=48, width=64, seed=1,
                       val=0, test=0, workers=1)
    scene_dir = tmp_path / "scene0000_00"
    K = read_intrinsics(scene_dir / "intrinsic" / "intrinsic_color.txt")
    np.testing.assert_allclose(K, OFFICIAL_K_33 * [[0.1], [0.1], [1.0]], atol=1e-9)
    scene, _ = scene_mod.random_scene(np.random.default_rng([1, 0]))
    for index in range(3):
        world_T_cam = read_pose(scene_dir / "pose" / f"{index}.txt")
        _, depth, _ = render_mod.render(scene, world_T_cam, K, 48, 64)
        written = read_depth(scene_dir / "depth" / f"{index}.png")
        assert np.abs(written - depth).max() <= 0.5e-3 + 1e-6  # millimetre rounding only
    splits = tmp_path / "splits"
    assert (splits / "train_split.txt").read_text() == "scene0000_00\n"


def test_textures_are_rich_enough_to_match(scene):
    K = writer.default_intrinsics("scannet", 120, 160)
    _, trajectory = scene_mod.random_scene(np.random.default_rng([7, 0]))
    for world_T_cam in trajectory.poses(60)[::20]:
        rgb, _, _ = render_mod.render(scene, world_T_cam, K, 120, 160)
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
        gradient = np.hypot(cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1))
        patch_std = grey.reshape(15, 8, 20, 8).std(axis=(1, 3))
        assert gradient.mean() > 15.0
        assert (patch_std > 2.0).mean() > 0.8  # almost no flat 8x8 patch


def test_camera_moves_like_handheld_video_and_depth_stays_indoor():
    K = writer.default_intrinsics("scannet", 30, 40)
    for seed in range(5):
        scene, trajectory = scene_mod.random_scene(np.random.default_rng([seed, 0]))
        poses = trajectory.poses(100)
        step = np.linalg.norm(np.diff(poses[:, :3, 3], axis=0), axis=1)
        relative = np.einsum("nji,njk->nik", poses[:-1, :3, :3], poses[1:, :3, :3])
        cos_angle = (np.trace(relative, axis1=1, axis2=2) - 1) / 2
        angle = np.degrees(np.arccos(np.clip(cos_angle, -1, 1)))
        assert 0.01 < step.mean() < 0.04 and step.max() < 0.05
        assert 0.3 < angle.mean() < 1.5 and angle.max() < 2.0
        # Frames 10 apart: a baseline of a decimetre or more gives the matcher parallax.
        assert np.linalg.norm(poses[10:, :3, 3] - poses[:-10, :3, 3], axis=1).mean() > 0.08
        depths = np.concatenate([render_mod.render(scene, pose, K, 30, 40)[1].ravel()
                                 for pose in poses[::25]])
        assert 0.4 < depths.min() and depths.max() < scene_mod.MAX_DEPTH


def test_command_line_writes_the_7scenes_layout(tmp_path):
    out = tmp_path / "seven"
    subprocess.run([sys.executable, "-m", "datasets.synthetic", "--out", str(out), "--layout",
                    "7scenes", "--scenes", "1", "--frames", "2", "--height", "48", "--width", "64",
                    "--workers", "1"], cwd=REPO, check=True, capture_output=True)
    seq = out / "room0000" / "seq-01"
    assert sorted(p.name for p in seq.iterdir()) == [
        "camera-intrinsics.txt", "frame-000000.color.png", "frame-000000.depth.png",
        "frame-000000.pose.txt", "frame-000001.color.png", "frame-000001.depth.png",
        "frame-000001.pose.txt"]
    np.testing.assert_allclose(read_intrinsics(seq / "camera-intrinsics.txt"),
                               SEVEN_SCENES_K_33 * [[0.1], [0.1], [1.0]], atol=1e-9)
    assert (out / "splits" / "test.txt").read_text() == "room0000/seq-01\n"


def test_7scenes_layout_marks_far_depth_with_65535(tmp_path, monkeypatch):
    monkeypatch.setattr(writer, "MAX_DEPTH", 2.0)  # the depth writer's range
    writer.generate(tmp_path, "7scenes", scenes=1, frames=1, height=48, width=64, seed=0,
                       workers=1)
    raw = cv2.imread(str(tmp_path / "room0000" / "seq-01" / "frame-000000.depth.png"),
                     cv2.IMREAD_UNCHANGED)
    far = raw == 65535
    assert far.any() and (raw[~far] <= 2000).all() and (raw[~far] > 0).all()


def test_interrupted_generation_leaves_no_scene(tmp_path, monkeypatch):
    real_render, calls = writer.render, []

    def failing_render(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_render(*args, **kwargs)

    monkeypatch.setattr(writer, "render", failing_render)
    with pytest.raises(KeyboardInterrupt):
        writer.generate(tmp_path, "scannet", scenes=1, frames=5, height=24, width=32,
                           val=0, test=0, workers=1)
    assert list(tmp_path.iterdir()) == []


def test_existing_scenes_are_not_overwritten_by_default(tmp_path):
    kwargs = dict(layout="scannet", scenes=1, frames=1, height=24, width=32, val=0, test=0,
                  workers=1)
    writer.generate(tmp_path, **kwargs)
    with pytest.raises(FileExistsError, match="scene0000_00"):
        writer.generate(tmp_path, **kwargs)
    writer.generate(tmp_path, overwrite=True, **kwargs)


def test_synthetic_command_takes_overwrite_true_and_its_output_is_ignored(tmp_path):
    """``--overwrite True`` replaces, ``False`` refuses; data/synthetic* is git-ignored."""
    argv = ["--out", str(tmp_path), "--scenes", "1", "--frames", "2", "--height", "32",
            "--width", "32", "--val", "0", "--test", "0", "--workers", "1"]
    synthetic_cli.main(argv)
    synthetic_cli.main(argv + ["--overwrite", "True"])
    with pytest.raises(FileExistsError):
        synthetic_cli.main(argv + ["--overwrite", "False"])
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    for path in ("data/synthetic/scene0000_00/x.jpg", "data/synthetic_7scenes/room0000/y.png"):
        assert subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO).returncode == 0


def test_camera_speed_widens_the_baseline_and_keeps_the_room():
    """Same seed: the same room and camera orientations; the camera moves about ``speed``
    times as far per frame. The default (1) is the generator's original path."""
    scene_1, path_1 = scene_mod.random_scene(np.random.default_rng([0, 3]))
    scene_3, path_3 = scene_mod.random_scene(np.random.default_rng([0, 3]), camera_speed=3.0)
    np.testing.assert_array_equal(scene_1.room_hi, scene_3.room_hi)
    np.testing.assert_array_equal(scene_1.noise, scene_3.noise)
    poses_1, poses_3 = path_1.poses(6), path_3.poses(6)
    np.testing.assert_allclose(poses_1[:, :3, :3], poses_3[:, :3, :3])
    step_1 = np.linalg.norm(np.diff(poses_1[:, :3, 3], axis=0), axis=1).mean()
    step_3 = np.linalg.norm(np.diff(poses_3[:, :3, 3], axis=0), axis=1).mean()
    assert step_3 / step_1 == pytest.approx(3.0, rel=0.1)
    with pytest.raises(ValueError, match="camera_speed"):
        writer.generate("unused", camera_speed=0.0)
