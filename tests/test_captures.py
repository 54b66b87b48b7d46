"""Readers of posed captures (datasets/captures.py, posed.py, colmap.py, tum.py) on files
written here in each format's documented layout."""

import re
import struct

import cv2
import numpy as np
import pytest
import torch

from datasets.captures import detect_format, open_capture
from datasets.colmap import MODEL_IDS, qvec_to_rotation
from datasets.io import DataError
from datasets.posed import select_frames
from datasets.sequence import PosedFrame, PosedSequence
from datasets.tum import FREIBURG_INTRINSICS
from tests.helpers import rotation_to_qvec

HEIGHT, WIDTH = 150, 200  # native size of the written images (not 640x480)
K_NATIVE = np.array([[180.0, 0, 99.5], [0, 170.0, 74.5], [0, 0, 1]])
NET_HW = (64, 96)


def make_poses(count: int) -> np.ndarray:
    """camera-to-world poses moving 5 cm and turning 2 degrees per frame."""
    poses = np.tile(np.eye(4), (count, 1, 1))
    for i in range(count):
        angle = np.radians(2.0 * i)
        poses[i, :3, :3] = [[np.cos(angle), 0, np.sin(angle)], [0, 1, 0],
                            [-np.sin(angle), 0, np.cos(angle)]]
        poses[i, :3, 3] = [0.05 * i, 0.01 * i, -0.02 * i]
    return poses


def write_images(folder, count: int, ext: str = ".png") -> list:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    names = []
    for i in range(count):
        name = f"frame{i}{ext}"  # unpadded: frame10 must come after frame9
        cv2.imwrite(str(folder / name), rng.integers(0, 255, (HEIGHT, WIDTH, 3), np.uint8))
        names.append(name)
    return names


def write_depth(path, metres: float, scale: float = 1000.0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((HEIGHT, WIDTH), round(metres * scale), np.uint16))


def expected_intr(K=K_NATIVE, hw=(HEIGHT, WIDTH)) -> np.ndarray:
    K = K.copy()
    K[0] *= NET_HW[1] / hw[1]
    K[1] *= NET_HW[0] / hw[0]
    return K


# ----------------------------------------------------------------------- folder format
def write_folder(root, count: int = 12, per_frame_poses: bool = False):
    names = write_images(root / "images", count)
    poses = make_poses(count)
    if per_frame_poses:
        (root / "poses").mkdir()
        for name, pose in zip(names, poses):
            np.savetxt(root / "poses" / f"{name.rsplit('.', 1)[0]}.txt", pose)
    else:
        np.savetxt(root / "poses.txt", poses.reshape(count, 16))
    np.savetxt(root / "K.txt", K_NATIVE)
    for i, name in enumerate(names):
        write_depth(root / "depth" / name, 1.0 + 0.1 * i)
    return poses


@pytest.mark.parametrize("per_frame", [False, True])
def test_folder_reader(tmp_path, per_frame):
    poses = write_folder(tmp_path, per_frame_poses=per_frame)
    assert detect_format(tmp_path) == "folder"
    seq = open_capture(tmp_path, height=NET_HW[0], width=NET_HW[1], frame_interval=1)
    assert isinstance(seq, PosedSequence) and len(seq) == 12
    item = seq[10]
    assert item["img_path"].endswith("frame10.png")  # natural order, not frame1, frame10, ...
    assert item["img"].shape == (3, *NET_HW)
    np.testing.assert_allclose(item["cam_pose"].numpy(), poses[10], atol=1e-6)
    np.testing.assert_allclose(item["cam_intr"].numpy(), expected_intr(), rtol=1e-6)
    assert item["dmap"].shape == (1, HEIGHT, WIDTH)
    assert torch.allclose(item["dmap"], torch.tensor(2.0))
    assert bool(item["dmask"].all())


def test_folder_interval_and_keyframes(tmp_path):
    write_folder(tmp_path)
    seq = open_capture(tmp_path, height=NET_HW[0], width=NET_HW[1], frame_interval=5)
    assert [item["img_path"].rsplit("/", 1)[1] for item in seq] == \
        ["frame0.png", "frame5.png", "frame10.png"]
    # keyframes: 5 cm of motion per frame (plus 1 and 2 cm sideways) -> every 3rd frame for 15 cm
    seq = open_capture(tmp_path, height=NET_HW[0], width=NET_HW[1], min_baseline=0.15)
    assert len(seq) == 4


def test_select_frames_rotation():
    poses = make_poses(10)
    for pose in poses:
        pose[:3, 3] = 0  # rotation only, 2 degrees per frame
    assert select_frames(poses, min_rotation=5.0) == [0, 3, 6, 9]
    assert select_frames(poses, frame_interval=4) == [0, 4, 8]


def test_folder_errors_name_the_file(tmp_path):
    write_folder(tmp_path)
    np.savetxt(tmp_path / "poses.txt", make_poses(11).reshape(11, 16))
    with pytest.raises(DataError, match=r"poses\.txt has 11 poses but .*images has 12"):
        open_capture(tmp_path, fmt="folder")
    (tmp_path / "poses.txt").unlink()
    with pytest.raises(DataError, match=r"no poses in .*poses\.txt"):
        open_capture(tmp_path, fmt="folder")
    np.savetxt(tmp_path / "poses.txt", make_poses(12).reshape(12, 16))
    (tmp_path / "K.txt").unlink()
    with pytest.raises(DataError, match=r"K\.txt"):
        open_capture(tmp_path, fmt="folder")
    np.savetxt(tmp_path / "K.txt", K_NATIVE)
    bad = make_poses(12)
    bad[3, :3, :3] *= 2  # a scaled rotation
    np.savetxt(tmp_path / "poses.txt", bad.reshape(12, 16))
    with pytest.raises(DataError, match=r"poses\.txt, line 4"):
        open_capture(tmp_path, fmt="folder")


def test_folder_ignores_hidden_files_and_image_named_folders(tmp_path):
    write_folder(tmp_path, count=4)
    (tmp_path / "images" / "._frame1.png").write_bytes(b"\0\x05\x16\x07")  # macOS fork
    (tmp_path / "images" / ".DS_Store").write_bytes(b"Bud1")
    (tmp_path / "images" / "x.png").mkdir()
    seq = open_capture(tmp_path, height=NET_HW[0], width=NET_HW[1])
    assert [f.color.name for f in seq.frames] == [f"frame{i}.png" for i in range(4)]


def test_pose_image_mismatch_names_the_image(tmp_path):
    write_folder(tmp_path, count=4)
    np.savetxt(tmp_path / "poses.txt", make_poses(3).reshape(3, 16))
    with pytest.raises(DataError, match=r"no pose for frame3\.png"):
        open_capture(tmp_path)
    np.savetxt(tmp_path / "poses.txt", make_poses(5).reshape(5, 16))
    with pytest.raises(DataError, match=r"line 5 and after have no image"):
        open_capture(tmp_path)
    (tmp_path / "poses.txt").unlink()
    (tmp_path / "poses").mkdir()
    for i, pose in enumerate(make_poses(5)):
        np.savetxt(tmp_path / "poses" / f"frame{i}.txt", pose)
    with pytest.raises(DataError, match=r"pose file\(s\) without an image in .*: frame4\.txt"):
        open_capture(tmp_path)


@pytest.mark.parametrize("kind", ["colour image", "depth map"])
def test_zero_byte_images_name_the_file(tmp_path, kind):
    write_folder(tmp_path, count=4)
    path = tmp_path / ("images" if kind == "colour image" else "depth") / "frame2.png"
    path.write_bytes(b"")
    seq = open_capture(tmp_path, height=NET_HW[0], width=NET_HW[1])
    with pytest.raises(DataError, match=rf"{kind} {re.escape(str(path))} is empty \(0 bytes\)"):
        seq[2]


def test_undetectable_folder(tmp_path):
    with pytest.raises(DataError, match="cannot tell the capture format"):
        open_capture(tmp_path)
    sens = tmp_path / "scene.sens"
    sens.write_bytes(b"")
    with pytest.raises(DataError, match="scannet_export"):
        open_capture(sens)


# ------------------------------------------------------------------------------ COLMAP
def colmap_camera(model: str):
    fx, fy, cx, cy = K_NATIVE[0, 0], K_NATIVE[1, 1], K_NATIVE[0, 2] + 0.5, K_NATIVE[1, 2] + 0.5
    return {"PINHOLE": [fx, fy, cx, cy], "SIMPLE_PINHOLE": [fx, cx, cy],
            "OPENCV": [fx, fy, cx, cy, 0, 0, 0, 0], "RADIAL": [fx, cx, cy, 0, 0]}[model]


def write_colmap(root, binary: bool, model: str = "PINHOLE", params=None, count: int = 6):
    """A sparse model in sparse/0 with images in images/ (listed out of order)."""
    names = write_images(root / "images", count, ".jpg")
    poses = make_poses(count)
    params = colmap_camera(model) if params is None else params
    sparse = root / "sparse" / "0"
    sparse.mkdir(parents=True)
    order = list(reversed(range(count)))
    entries = []
    for i in order:
        cam_T_world = np.linalg.inv(poses[i])
        entries.append((i + 1, rotation_to_qvec(cam_T_world[:3, :3]), cam_T_world[:3, 3], names[i]))
    if binary:
        with open(sparse / "cameras.bin", "wb") as f:
            f.write(struct.pack("<Q", 1))
            f.write(struct.pack("<iiQQ", 1, MODEL_IDS[model], WIDTH, HEIGHT))
            f.write(struct.pack(f"<{len(params)}d", *params))
        with open(sparse / "images.bin", "wb") as f:
            f.write(struct.pack("<Q", len(entries)))
            for image_id, q, t, name in entries:
                f.write(struct.pack("<i4d3di", image_id, *q, *t, 1))
                f.write(name.encode() + b"\0")
                f.write(struct.pack("<Q", 2))
                f.write(struct.pack("<ddqddq", 1.0, 2.0, 5, 3.0, 4.0, -1))
    else:
        (sparse / "cameras.txt").write_text(
            "# Camera list with one line of data per camera:\n"
            "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]\n# Number of cameras: 1\n"
            f"1 {model} {WIDTH} {HEIGHT} {' '.join(repr(float(p)) for p in params)}\n")
        lines = ["# Image list with two lines of data per image:",
                 "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME",
                 "#   POINTS2D[] as (X, Y, POINT3D_ID)"]
        for k, (image_id, q, t, name) in enumerate(entries):
            lines.append(f"{image_id} {' '.join(repr(float(v)) for v in q)} {' '.join(repr(float(v)) for v in t)} 1 {name}")
            lines.append("" if k % 2 else "1.0 2.0 5 3.0 4.0 -1")  # empty points lines occur
        (sparse / "images.txt").write_text("\n".join(lines) + "\n")
    return poses


@pytest.mark.parametrize("binary", [False, True])
@pytest.mark.parametrize("model", ["PINHOLE", "SIMPLE_PINHOLE", "OPENCV", "RADIAL"])
def test_colmap_reader(tmp_path, binary, model):
    poses = write_colmap(tmp_path, binary, model)
    assert detect_format(tmp_path) == "colmap"
    seq = open_capture(tmp_path, height=NET_HW[0], width=NET_HW[1])
    assert len(seq) == 6
    assert [item["img_path"].rsplit("/", 1)[1] for item in seq] == \
        [f"frame{i}.jpg" for i in range(6)]
    for i in range(6):
        np.testing.assert_allclose(seq[i]["cam_pose"].numpy(), poses[i], atol=1e-5)
    K = K_NATIVE.copy()
    if model in ("SIMPLE_PINHOLE", "RADIAL"):
        K[1, 1] = K[0, 0]  # one focal length
    np.testing.assert_allclose(seq.cam_intr.numpy(), expected_intr(K), rtol=1e-6)


@pytest.mark.parametrize("binary", [False, True])
def test_colmap_refuses_distortion_and_unknown_models(tmp_path, binary):
    params = colmap_camera("OPENCV")
    params[4] = -0.1
    write_colmap(tmp_path / "a", binary, "OPENCV", params)
    with pytest.raises(DataError, match=r"cameras\.(txt|bin), camera 1: .*OPENCV has "
                                        r"distortion.*image_undistorter"):
        open_capture(tmp_path / "a")
    write_colmap(tmp_path / "b", binary, "OPENCV_FISHEYE", colmap_camera("OPENCV"))
    with pytest.raises(DataError, match=r"cameras\.(txt|bin), camera 1: camera model "
                                        r"OPENCV_FISHEYE is not supported"):
        open_capture(tmp_path / "b")


def test_colmap_missing_image(tmp_path):
    write_colmap(tmp_path, binary=False)
    (tmp_path / "images" / "frame3.jpg").unlink()
    with pytest.raises(DataError, match=r"frame3\.jpg named in .*images\.txt not found"):
        open_capture(tmp_path)


def test_quaternion_convention():
    """90 degrees about z: (w, x, y, z) = (cos 45, 0, 0, sin 45) maps x to y."""
    R = qvec_to_rotation(np.array([np.cos(np.pi / 4), 0, 0, np.sin(np.pi / 4)]))
    np.testing.assert_allclose(R @ [1, 0, 0], [0, 1, 0], atol=1e-12)


# --------------------------------------------------------------------------------- TUM
def write_tum(root, count: int = 8):
    """rgb at 30 Hz, depth 5 ms later, ground truth at 100 Hz from 0.1 s in."""
    names = write_images(root / "rgb", count)
    poses = make_poses(count)
    t0 = 1305031102.0
    rgb = ["# color images", "# timestamp filename"]
    depth = ["# depth maps"]
    gt = ["# ground truth trajectory", "# timestamp tx ty tz qx qy qz qw"]
    for i, name in enumerate(names):
        stamp = t0 + i / 30
        rgb.append(f"{stamp:.6f} rgb/{name}")
        write_depth(root / "depth" / name, 1.0 + 0.1 * i, scale=5000.0)
        depth.append(f"{stamp + 0.005:.6f} depth/{name}")
    for i in range(count):
        if i == 0:
            continue  # the first colour frame has no pose within 20 ms
        w, x, y, z = rotation_to_qvec(poses[i][:3, :3])
        tx, ty, tz = poses[i][:3, 3]
        gt.append(f"{t0 + i / 30 - 0.004:.4f} {tx} {ty} {tz} {x} {y} {z} {w}")
        gt.append(f"{t0 + i / 30 + 0.012:.4f} 9 9 9 0 0 0 1")  # a farther, wrong sample
    for name, lines in (("rgb.txt", rgb), ("depth.txt", depth), ("groundtruth.txt", gt)):
        (root / name).write_text("\n".join(lines) + "\n")
    return poses


def test_tum_reader(tmp_path):
    root = tmp_path / "rgbd_dataset_freiburg1_xyz"
    poses = write_tum(root)
    assert detect_format(root) == "tum"
    seq = open_capture(root, height=NET_HW[0], width=NET_HW[1])
    assert len(seq) == 7  # frame 0 has no pose
    for k, item in enumerate(seq):
        np.testing.assert_allclose(item["cam_pose"].numpy(), poses[k + 1], atol=1e-6)
        # 5000 units per metre
        assert torch.allclose(item["dmap"], torch.tensor(1.0 + 0.1 * (k + 1)), atol=1e-3)
    fx, fy, cx, cy = FREIBURG_INTRINSICS["freiburg1"]
    np.testing.assert_allclose(
        seq.cam_intr.numpy(),
        expected_intr(np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]]), (480, 640)),
        rtol=1e-6)


def test_tum_intrinsics_option_and_errors(tmp_path):
    root = tmp_path / "my_tum_capture"
    write_tum(root)
    with pytest.raises(DataError, match="--intrinsics fx,fy,cx,cy"):
        open_capture(root)
    seq = open_capture(root, height=NET_HW[0], width=NET_HW[1],
                       intrinsics="180,170,99.5,74.5")
    np.testing.assert_allclose(seq.cam_intr.numpy(), expected_intr(), rtol=1e-6)
    with pytest.raises(ValueError, match="fx,fy,cx,cy"):
        open_capture(root, intrinsics="180,170")
    (root / "groundtruth.txt").write_text("1305031102.0 1 2 3\n")
    with pytest.raises(DataError, match=r"groundtruth\.txt, line 1: expected 8 fields"):
        open_capture(root, fmt="tum", intrinsics="180,170,99.5,74.5")


def test_missing_depth_warns_only_when_some_frames_have_it(tmp_path, caplog):
    """A capture without any depth (COLMAP) is said once at info level; a capture that lacks
    depth for some frames only warns and names them."""
    names = write_images(tmp_path / "images", 3)
    write_depth(tmp_path / "depth" / names[0], 2.0)
    poses = make_poses(3)
    bare = [PosedFrame(tmp_path / "images" / n, poses[i]) for i, n in enumerate(names)]
    with caplog.at_level("INFO", logger="datasets.sequence"):
        PosedSequence(bare, K_NATIVE, *NET_HW, name="bare")
    assert [r.levelname for r in caplog.records if "ground-truth" in r.message] == ["INFO"]
    caplog.clear()
    partial = [PosedFrame(f.color, f.world_T_cam_44, tmp_path / "depth" / n)
               for f, n in zip(bare, names)]
    with caplog.at_level("INFO", logger="datasets.sequence"):
        PosedSequence(partial, K_NATIVE, *NET_HW, name="partial")
    warned = [r.message for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 1 and "2 frame(s) have no ground-truth depth" in warned[0]
    assert names[1] in warned[0] and names[0] not in warned[0]
