"""datasets/io.py: the colour, depth, pose and intrinsics readers and their errors."""

from __future__ import annotations

import re

import cv2
import numpy as np
import pytest

from datasets.intrinsics import OFFICIAL_K_33
from datasets.io import (DataError, NonFinitePoseError, read_color, read_depth, read_intrinsics,
                         read_pose)
from tests.helpers import write_matrix


def test_read_depth_converts_millimetres_and_zeroes_invalid(tmp_path):
    raw = np.full((24, 32), 1500, np.uint16)
    raw[:4] = 0
    raw[-4:] = 65535
    path = tmp_path / "d.png"
    cv2.imwrite(str(path), raw)
    depth = read_depth(path)
    assert depth.dtype == np.float32
    assert (depth[:4] == 0).all() and (depth[-4:] == 0).all()
    np.testing.assert_allclose(depth[4:-4], 1.5)
    # Resizing matches the official "resize the raw PNG, then divide by 1000" bit for bit.
    zeroed = np.where(raw == 65535, 0, raw).astype(np.uint16)
    expected = cv2.resize(zeroed, (16, 12)).astype(np.float32) / 1000.0
    np.testing.assert_array_equal(read_depth(path, (12, 16)), expected)


def test_read_depth_rejects_wrong_size_and_format(tmp_path):
    path = tmp_path / "d.png"
    cv2.imwrite(str(path), np.ones((12, 16), np.uint16))
    with pytest.raises(DataError, match=r"d\.png is 12x16 .* are 24x32"):
        read_depth(path, expect_hw=(24, 32))
    cv2.imwrite(str(path), np.ones((12, 16), np.uint8))
    with pytest.raises(DataError, match=r"d\.png must be single-channel uint16"):
        read_depth(path)


def test_read_color_returns_rgb_and_names_bad_files(tmp_path):
    path = tmp_path / "c.png"
    bgr = np.zeros((8, 8, 3), np.uint8)
    bgr[..., 0] = 200  # blue
    cv2.imwrite(str(path), bgr)
    rgb = read_color(path, (4, 6))
    assert rgb.shape == (4, 6, 3) and (rgb[..., 2] == 200).all() and (rgb[..., 0] == 0).all()
    with pytest.raises(DataError, match=r"not found: .*missing\.png"):
        read_color(tmp_path / "missing.png")
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"cannot decode colour image .*bad\.jpg"):
        read_color(tmp_path / "bad.jpg")
    cv2.imwrite(str(tmp_path / "grey.png"), np.zeros((8, 8), np.uint8))
    with pytest.raises(DataError, match=r"grey\.png must be 8-bit with 3 channels"):
        read_color(tmp_path / "grey.png")


def test_read_pose_checks_shape_and_finiteness(tmp_path):
    path = tmp_path / "p.txt"
    pose = np.eye(4)
    pose[:3, 3] = [1, 2, 3]
    write_matrix(path, pose)
    np.testing.assert_array_equal(read_pose(path), pose)
    with pytest.raises(DataError, match=r"not found: .*none\.txt"):
        read_pose(tmp_path / "none.txt")
    write_matrix(path, pose[:3])
    with pytest.raises(DataError, match=r"p\.txt must hold a 4x4 matrix"):
        read_pose(path)
    pose[0, 0] = -np.inf
    write_matrix(path, pose)
    with pytest.raises(NonFinitePoseError, match=r"p\.txt holds non-finite"):
        read_pose(path)
    write_matrix(path, np.ones((4, 4)))
    with pytest.raises(DataError, match=r"p\.txt is not a rigid transform"):
        read_pose(path)


def test_read_intrinsics_accepts_3x3_and_4x4(tmp_path):
    K_44 = np.eye(4)
    K_44[:3, :3] = OFFICIAL_K_33
    write_matrix(tmp_path / "k4.txt", K_44)
    write_matrix(tmp_path / "k3.txt", OFFICIAL_K_33)
    for name in ("k3.txt", "k4.txt"):
        np.testing.assert_array_equal(read_intrinsics(tmp_path / name), OFFICIAL_K_33)
    write_matrix(tmp_path / "k2.txt", np.eye(2))
    with pytest.raises(DataError, match=r"k2\.txt must hold a 3x3 or 4x4"):
        read_intrinsics(tmp_path / "k2.txt")


def test_truncated_jpeg_and_png_are_errors_naming_the_file(tmp_path):
    rng = np.random.default_rng(0)
    jpg, png = tmp_path / "0.jpg", tmp_path / "0.png"
    cv2.imwrite(str(jpg), rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    cv2.imwrite(str(png), rng.integers(500, 4000, (64, 64)).astype(np.uint16))
    read_color(jpg)
    read_depth(png)
    for path, reader in ((jpg, read_color), (png, read_depth)):
        data = path.read_bytes()
        path.write_bytes(data[:len(data) * 2 // 3])
        with pytest.raises(DataError, match=f"{re.escape(str(path))} is truncated"):
            reader(path)
    # bytes after the end marker (zero padding) are not a truncation
    cv2.imwrite(str(jpg), rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    jpg.write_bytes(jpg.read_bytes() + b"\x00" * 16)
    assert read_color(jpg).shape == (64, 64, 3)


@pytest.mark.parametrize("change, message", [
    (lambda p: p.__setitem__((slice(0, 3), slice(0, 3)), 1.1 * p[:3, :3]), "rigid"),
    (lambda p: p.__setitem__((slice(0, 3), slice(0, 3)), 0.0), "rigid"),
    (lambda p: p.__setitem__((0, 1), 0.2), "rigid"),
    (lambda p: p.__setitem__((slice(0, 3), 0), -p[:3, 0]), "det"),
    (lambda p: p.__setitem__((0, 3), 1e39), "translation"),
])
def test_poses_that_are_not_rigid_transforms_name_the_file(tmp_path, change, message):
    pose = np.eye(4)
    pose[:3, 3] = [0.5, -1.0, 2.0]
    path = tmp_path / "frame-000007.pose.txt"
    np.savetxt(path, pose)
    read_pose(path)
    change(pose)
    np.savetxt(path, pose)
    with pytest.raises(DataError, match=message) as err:
        read_pose(path)
    assert str(path) in str(err.value)


def test_real_7scenes_poses_pass_the_rigidity_check(redkitchen):
    for path in sorted(redkitchen.glob("*.pose.txt")):
        read_pose(path)


def test_a_looping_or_broken_link_is_named_as_such(tmp_path):
    from datasets.captures import open_capture

    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    (tmp_path / "broken").symlink_to(tmp_path / "nowhere")
    for name in ("loop", "broken"):
        with pytest.raises(DataError, match=f"{name} is a symbolic link that leads nowhere"):
            open_capture(tmp_path / name)
    with pytest.raises(DataError, match="capture folder not found"):
        open_capture(tmp_path / "absent")
