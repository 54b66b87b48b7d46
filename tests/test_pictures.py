"""Pictures and clouds for people (evaluation/pictures.py) and predict.py writing them."""

import json
import shutil

import cv2
import numpy as np
import pytest
import torch

import predict
from evaluation import pictures
from utils.visualization import colorize_depth
from datasets.synthetic.writer import default_intrinsics, generate

K = np.array([[50.0, 0, 15.5], [0, 50.0, 11.5], [0, 0, 1]])


def test_frame_cloud_back_projects_with_the_pose_and_keeps_colours():
    depth = np.full((24, 32), 2.0, np.float32)
    depth[0, 0], depth[0, 1] = 0.0, 9.0  # no depth; beyond max_depth
    rgb = np.zeros((24, 32, 3), np.uint8)
    rgb[..., 0] = np.arange(32)[None]  # red = column
    pose = np.eye(4)
    pose[:3, 3] = [1.0, -2.0, 0.5]
    points, colours = pictures.frame_cloud(depth, rgb, K, pose, max_depth=5.0)
    assert len(points) == 24 * 32 - 2
    np.testing.assert_allclose(points[:, 2], 2.5, atol=1e-6)  # z = depth + camera z
    # pixel (row 0, column 2) is the first kept: x = (2 - 15.5) / 50 * 2 + 1
    np.testing.assert_allclose(points[0], [(2 - 15.5) / 50 * 2 + 1, (0 - 11.5) / 50 * 2 - 2, 2.5],
                               atol=1e-6)
    assert colours[0, 0] == 2 and colours[-1, 0] == 31


def test_voxel_downsample_averages_each_cell():
    points = np.array([[0.01, 0.01, 0.01], [0.03, 0.05, 0.07], [0.15, 0.0, 0.0]])
    colours = np.array([[0, 0, 0], [100, 50, 3], [7, 7, 7]], np.uint8)
    p, c = pictures.voxel_downsample(points, colours, voxel=0.1)
    np.testing.assert_allclose(p, [[0.02, 0.03, 0.04], [0.15, 0.0, 0.0]], atol=1e-7)
    np.testing.assert_array_equal(c, [[50, 25, 2], [7, 7, 7]])  # 1.5 rounds to even


def test_cloud_and_confidence_files_round_trip(tmp_path):
    points = np.random.default_rng(0).normal(size=(10, 3)).astype(np.float32)
    colours = np.random.default_rng(1).integers(0, 255, (10, 3)).astype(np.uint8)
    pictures.save_cloud_ply(points, colours, tmp_path / "c.ply")
    got_p, got_c = pictures.read_cloud_ply(tmp_path / "c.ply")
    np.testing.assert_array_equal(got_p, points)
    np.testing.assert_array_equal(got_c, colours)
    assert b"element vertex 10\n" in (tmp_path / "c.ply").read_bytes()[:300]
    conf = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    pictures.save_confidence_png(conf, tmp_path / "conf.png")
    np.testing.assert_allclose(pictures.read_confidence_png(tmp_path / "conf.png"), conf,
                               atol=0.5 / 65535)


def test_confidence_is_the_peak_probability_upsampled():
    prob = torch.zeros(1, 4, 2, 2)
    prob[0, 1] = torch.tensor([[0.9, 0.5], [0.25, 1.0]])
    prob[0, 2] = 0.1
    conf = pictures.confidence_map({("fused_prob", 0): prob}, 0, (2, 2))
    np.testing.assert_allclose(conf, [[0.9, 0.5], [0.25, 1.0]], atol=1e-6)
    conf = pictures.confidence_map({("init_prob", 1): prob}, 1, (4, 4))  # no EST: init
    assert conf.shape == (4, 4) and conf.max() <= 1.0 and conf[3, 3] == pytest.approx(1.0)
    with pytest.raises(KeyError, match="target 2"):
        pictures.confidence_map({}, 2, (4, 4))


def test_legend_bar_matches_the_depth_colours():
    bar = pictures.legend(101, max_depth=5.0)
    for metres in (0.5, 2.0, 4.5):
        row = int(round(metres / 5.0 * 100))
        expected = colorize_depth(np.full((2, 2), metres, np.float32), 5.0)[0, 0]
        np.testing.assert_allclose(bar[row, 8].astype(int), expected.astype(int), atol=8)
    assert (bar[:, 20:] < 128).any()  # tick labels drawn


def test_video_is_written_whole_or_not_at_all(tmp_path):
    frame = np.zeros((24, 40, 3), np.uint8)
    with pictures.VideoWriter(tmp_path / "v.mp4", fps=5) as video:
        pass
    with pytest.raises(ValueError, match="no frame"):
        video.close()
    video = pictures.VideoWriter(tmp_path / "v.mp4", fps=5)
    for i in range(7):
        video.write(frame + 30 * i)
        assert not (tmp_path / "v.mp4").exists()
    video.close()
    capture = cv2.VideoCapture(str(tmp_path / "v.mp4"))
    assert capture.get(cv2.CAP_PROP_FRAME_COUNT) == 7 and capture.get(cv2.CAP_PROP_FPS) == 5
    with pytest.raises(RuntimeError):
        with pictures.VideoWriter(tmp_path / "w.mp4", fps=5) as broken:
            broken.write(frame)
            raise RuntimeError("inference failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.mp4"]  # no temporary left


@pytest.mark.slow
def test_predict_writes_confidence_clouds_and_video(tmp_path):
    """A synthetic room as a folder capture: every predicted frame gets a confidence PNG and
    a cloud, the merged cloud is voxel-downsampled, the video has a frame per prediction, and
    a re-run reuses them all."""
    generate(tmp_path / "room", scenes=1, frames=10, height=128, width=128, val=0, test=0,
             workers=1)
    scene, capture = tmp_path / "room" / "scene0000_00", tmp_path / "capture"
    (capture / "images").mkdir(parents=True)
    poses = []
    for i in range(10):
        shutil.copy(scene / "rgb" / f"{i}.jpg", capture / "images" / f"{i:02d}.jpg")
        poses.append(np.loadtxt(scene / "pose" / f"{i}.txt").reshape(16))
    np.savetxt(capture / "poses.txt", np.array(poses))
    np.savetxt(capture / "K.txt", default_intrinsics("scannet", 128, 128))
    out = tmp_path / "out"
    argv = ["--input", str(capture), "--output", str(out), "--resnet", "18", "--ndepths", "8",
            "--height", "128", "--width", "128", "--depth_min", "0.5", "--depth_max", "6",
            "--device", "cpu", "--num_workers", "0", "--frame_interval", "1", "--fuse", "False",
            "--save_clouds", "True", "--save_video", "True", "--voxel_size", "0.05",
            "--fuse_max_depth", "6", "--log_level", "WARNING"]
    summary = predict.main(argv)
    stems = summary["frames"]
    assert len(stems) == 8
    for stem in stems:
        conf = cv2.imread(str(out / "confidence" / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
        assert conf.dtype == np.uint16 and conf.shape == (128, 128) and conf.max() > 0
        assert (out / "cloud" / f"{stem}.ply").is_file()
    frame_points = sum(len(pictures.read_cloud_ply(out / "cloud" / f"{s}.ply")[0]) for s in stems)
    merged, colours = pictures.read_cloud_ply(out / "cloud.ply")
    assert 0 < len(merged) < frame_points
    cells = np.floor(merged / 0.05).astype(np.int64)
    assert len(np.unique(cells, axis=0)) >= 0.9 * len(merged)  # about one point per cell
    video = cv2.VideoCapture(str(out / "video.mp4"))
    assert video.get(cv2.CAP_PROP_FRAME_COUNT) == 8 and video.get(cv2.CAP_PROP_FPS) == 30
    assert video.get(cv2.CAP_PROP_FRAME_WIDTH) == 3 * 128 + 4 + pictures.LEGEND_WIDTH
    marker = json.loads((out / predict.DEPTH_DONE).read_text())
    assert {"cloud.ply", "video.mp4", f"confidence/{stems[0]}.png"} <= set(marker["files"])
    before = (out / "video.mp4").stat().st_mtime_ns
    predict.main(argv)
    assert (out / "video.mp4").stat().st_mtime_ns == before  # reused, not recomputed
