"""Captures of unknown scale (datasets/capture_scale.py, the COLMAP points readers and
predict.py --pose_scale): a synthetic room written as a COLMAP model at several scales."""

import shutil
import struct

import cv2
import numpy as np
import pytest

import predict
from datasets import capture_scale
from datasets.colmap import colmap_points, read_points_binary, read_points_text
from datasets.io import DataError, read_depth
from datasets.synthetic.writer import default_intrinsics, generate
from evaluation.pictures import read_cloud_ply
from tests.helpers import load_ply, rotation_to_qvec

HW = 128
FRAMES = 12
MODEL = ["--resnet", "18", "--ndepths", "8", "--height", str(HW), "--width", str(HW),
         "--depth_min", "0.5", "--depth_max", "6", "--device", "cpu", "--num_workers", "0",
         "--frame_interval", "2", "--voxel_size", "0.1", "--log_level", "WARNING"]


@pytest.fixture(scope="module")
def room(tmp_path_factory):
    """One synthetic room (ScanNet layout, exact depth and poses)."""
    root = tmp_path_factory.mktemp("room")
    generate(root, scenes=1, frames=FRAMES, height=HW, width=HW, val=0, test=0, workers=1)
    return root / "scene0000_00"


def write_colmap_room(room, root, scale: float):
    """The room as a COLMAP text model whose unit is ``1 / scale`` metres: poses and 3D points
    (back-projected from the true depth, every 8th pixel of every frame) times ``scale``."""
    K = default_intrinsics("scannet", HW, HW)
    (root / "images").mkdir(parents=True)
    sparse = root / "sparse" / "0"
    sparse.mkdir(parents=True)
    params = (K[0, 0], K[1, 1], K[0, 2] + 0.5, K[1, 2] + 0.5)
    (sparse / "cameras.txt").write_text(
        f"1 PINHOLE {HW} {HW} {' '.join(repr(float(p)) for p in params)}\n")
    images, points = [], []
    v, u = np.mgrid[0:HW:8, 0:HW:8].astype(np.float64)
    for i in range(FRAMES):
        shutil.copy(room / "rgb" / f"{i}.jpg", root / "images" / f"{i:03d}.jpg")
        world_T_cam = np.loadtxt(room / "pose" / f"{i}.txt")
        world_T_cam[:3, 3] *= scale
        cam_T_world = np.linalg.inv(world_T_cam)
        q, t = rotation_to_qvec(cam_T_world[:3, :3]), cam_T_world[:3, 3]
        values = " ".join(repr(float(x)) for x in (*q, *t))
        images += [f"{i + 1} {values} 1 {i:03d}.jpg", ""]
        z = read_depth(room / "depth" / f"{i}.png")[::8, ::8].astype(np.float64) * scale
        cam = np.stack([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z])[:, z > 0]
        points.append((world_T_cam[:3, :3] @ cam + world_T_cam[:3, 3:]).T)
    (sparse / "images.txt").write_text("\n".join(images) + "\n")
    rows = [f"{k + 1} {float(x)!r} {float(y)!r} {float(z)!r} 128 128 128 0.5 1 0"
            for k, (x, y, z) in enumerate(np.concatenate(points))]
    (sparse / "points3D.txt").write_text("\n".join(rows) + "\n")
    return root


def run(capture, out, *extra):
    return predict.main(["--input", str(capture), "--output", str(out)] + MODEL + list(extra))


def depths(out) -> dict:
    return {p.stem: read_depth(p).astype(np.float64) for p in sorted((out / "depth").glob("*.png"))}


# ---------------------------------------------------------------------------- pure functions
def test_sparse_depths_keeps_points_in_front_and_inside():
    K = np.array([[100.0, 0, 49.5], [0, 100.0, 39.5], [0, 0, 1]])
    points = np.array([[0.0, 0, 2],     # centre, depth 2
                       [1.0, 0, 4],     # u = 49.5 + 25: inside, depth 4
                       [3.0, 0, 2],     # u = 199.5: outside a 100-wide image
                       [0.0, 0, -1]])   # behind
    depths = capture_scale.sparse_depths(points, [np.eye(4)], K, (80, 100))
    np.testing.assert_allclose(np.sort(depths), [2.0, 4.0])
    moved = np.eye(4)
    moved[2, 3] = -1.0  # camera 1 m back: depths 3, 5, 3 (u = 149.5: still outside), 0
    np.testing.assert_allclose(np.sort(capture_scale.sparse_depths(points, [moved], K, (80, 100))),
                               [3.0, 5.0])


def test_auto_scale_is_equivariant_and_centres_the_planes():
    depths = np.random.default_rng(0).uniform(1.0, 4.0, 1000)
    scales = [capture_scale.auto_scale(capture_scale.depth_summary(depths * k, 0.5, 6.0), 0.5, 6.0)
              for k in (0.1, 1.0, 7.0)]
    np.testing.assert_allclose([s * k for s, k in zip(scales, (0.1, 1.0, 7.0))], scales[1],
                               rtol=1e-12)
    summary = capture_scale.depth_summary(depths * scales[1], 0.5, 6.0)
    assert np.sqrt(summary["p5"] * summary["p95"]) == pytest.approx(np.sqrt(3.0), rel=1e-9)


@pytest.mark.parametrize("option", ["0", "-2", "nan", "inf", "big", ""])
def test_pose_scale_option_is_checked(option):
    with pytest.raises(ValueError, match="--pose_scale"):
        capture_scale.parse_pose_scale(option)
    assert capture_scale.parse_pose_scale("2.5") == 2.5


def test_points_readers_text_and_binary_agree(tmp_path):
    xyz = np.array([[0.5, -1.0, 2.0], [3.0, 4.0, 5.0]])
    (tmp_path / "points3D.txt").write_text(
        "# 3D point list\n# Number of points: 2\n"
        "7 0.5 -1.0 2.0 10 20 30 0.1 1 0 2 5\n9 3.0 4.0 5.0 1 2 3 0.2 1 1\n")
    np.testing.assert_array_equal(read_points_text(tmp_path / "points3D.txt"), xyz)
    with open(tmp_path / "points3D.bin", "wb") as f:
        f.write(struct.pack("<Q", 2))
        for pid, p, track in ((7, xyz[0], [(1, 0), (2, 5)]), (9, xyz[1], [(1, 1)])):
            f.write(struct.pack("<Q3d3BdQ", pid, *p, 10, 20, 30, 0.1, len(track)))
            for image_id, index in track:
                f.write(struct.pack("<ii", image_id, index))
    np.testing.assert_array_equal(read_points_binary(tmp_path / "points3D.bin"), xyz)
    data = (tmp_path / "points3D.bin").read_bytes()
    (tmp_path / "points3D.bin").write_bytes(data[:-4])
    with pytest.raises(DataError, match="points3D.bin: truncated"):
        read_points_binary(tmp_path / "points3D.bin")
    (tmp_path / "points3D.bin").write_bytes(struct.pack("<Q", 2 ** 62) + data[8:])
    with pytest.raises(DataError, match="truncated"):
        read_points_binary(tmp_path / "points3D.bin")
    (tmp_path / "points3D.txt").write_text("7 0.5 x 2.0 10 20 30 0.1\n")
    with pytest.raises(DataError, match=r"points3D.txt, line 1"):
        read_points_text(tmp_path / "points3D.txt")


# ------------------------------------------------------------------------------- predict.py
@pytest.mark.parametrize("scale", [0.1, 7.0])
def test_a_capture_off_the_planes_is_refused_with_its_range(room, tmp_path, scale):
    capture = write_colmap_room(room, tmp_path / "capture", scale)
    with pytest.raises(DataError, match=r"cannot be metric.*--pose_scale auto \(chooses"):
        run(capture, tmp_path / "out")
    assert not (tmp_path / "out" / "depth").exists()


@pytest.mark.slow
def test_auto_scale_gives_the_metric_depths_in_the_capture_units(room, tmp_path):
    """The room at 0.1 and 7 units per metre with ``auto`` gives the depth maps (in capture
    units) and mesh of the metric capture with ``auto``, rescaled: the network sees the same
    input. Tolerance: the PNGs' millimetre quantisation (0.5 mm of a capture unit) plus
    float rounding of the scaled poses."""
    metric = write_colmap_room(room, tmp_path / "c1", 1.0)
    reference = run(metric, tmp_path / "o1", "--pose_scale", "auto", "--save_clouds", "True")
    ref_depths, ref_mesh = depths(tmp_path / "o1"), load_ply(tmp_path / "o1" / "mesh.ply")
    ref_cloud = read_cloud_ply(tmp_path / "o1" / "cloud.ply")[0]
    assert run(metric, tmp_path / "plain", "--fuse", "False")["pose_scale"]["scale"] == 1.0
    for k in (0.1, 7.0):
        capture = write_colmap_room(room, tmp_path / f"c{k}", k)
        summary = run(capture, tmp_path / f"o{k}", "--pose_scale", "auto", "--save_clouds",
                      "True")
        chosen = summary["pose_scale"]["scale"]
        assert chosen * k == pytest.approx(reference["pose_scale"]["scale"], rel=1e-6)
        assert "auto chose" in summary["pose_scale"]["why"]
        got = depths(tmp_path / f"o{k}")
        assert got.keys() == ref_depths.keys()
        for stem, ref in ref_depths.items():  # millimetres of a capture unit -> metres
            np.testing.assert_allclose(got[stem] / 1000 / k, ref / 1000, atol=0.5e-3 / k + 2e-3,
                                       err_msg=stem)
        mesh = load_ply(tmp_path / f"o{k}" / "mesh.ply")
        assert len(mesh.faces_f3) == pytest.approx(len(ref_mesh.faces_f3), rel=0.02)
        np.testing.assert_allclose(np.median(mesh.vertices_v3, axis=0) / k,
                                   np.median(ref_mesh.vertices_v3, axis=0), atol=0.02)
        cloud = read_cloud_ply(tmp_path / f"o{k}" / "cloud.ply")[0]  # capture units too
        assert len(cloud) == pytest.approx(len(ref_cloud), rel=0.02)
        np.testing.assert_allclose(np.median(cloud, axis=0) / k, np.median(ref_cloud, axis=0),
                                   atol=0.02)


@pytest.mark.slow
def test_explicit_scale_and_missing_points(room, tmp_path):
    """``--pose_scale S`` is used as given; a model without points3D is run unchecked with a
    warning, while ``auto`` needs the points."""
    capture = write_colmap_room(room, tmp_path / "capture", 0.1)
    summary = run(capture, tmp_path / "out", "--pose_scale", "10", "--fuse", "False")
    assert summary["pose_scale"]["scale"] == 10.0
    assert summary["pose_scale"]["sparse_depths"]["on_planes"] < 0.8  # measured, unscaled
    (capture / "sparse" / "0" / "points3D.txt").unlink()
    with pytest.raises(DataError, match="points3D.txt not found"):
        run(capture, tmp_path / "out2", "--pose_scale", "auto")
    assert colmap_points(capture, required=False)[0] is None
    unchecked = run(capture, tmp_path / "out3", "--fuse", "False")
    assert unchecked["pose_scale"] == {"scale": 1.0, "why": unchecked["pose_scale"]["why"]}
    assert "not checked" in unchecked["pose_scale"]["why"]
