"""predict.py --stream: a capture written frame by frame by another process gives the
offline result; partial files wait, bad complete ones fail by name; every end saves."""

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import predict
from datasets.growing import GrowingFolder
from datasets.io import DataError
from datasets.synthetic.render import render
from datasets.synthetic.scene import random_scene
from datasets.synthetic.writer import default_intrinsics
from evaluation import streaming
from tests.helpers import ROOT, load_ply

TINY = ["--resnet", "18", "--ndepths", "4", "--height", "128", "--width", "128",
        "--depth_min", "0.5", "--depth_max", "6", "--device", "cpu", "--log_level", "WARNING",
        "--save_confidence", "False", "--voxel_size", "0.08", "--fuse_max_depth", "4",
        "--frame_interval", "1"]
STREAM = ["--stream", "True", "--stream_poll", "0.01", "--snapshot_every", "2"]


def synthetic_capture(root: Path, frames: int = 7) -> Path:
    """A rendered room as a finished folder capture (128x128 PNGs, poses.txt, K.txt)."""
    scene, trajectory = random_scene(np.random.default_rng(4))
    K = default_intrinsics("scannet", 128, 128)
    (root / "images").mkdir(parents=True)
    poses = trajectory.poses(frames * 3)[::3]
    for i, pose in enumerate(poses):
        rgb, _, _ = render(scene, pose, K, 128, 128)
        cv2.imwrite(str(root / "images" / f"{i:04d}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    np.savetxt(root / "poses.txt", poses.reshape(len(poses), 16))
    np.savetxt(root / "K.txt", K)
    return root


@pytest.fixture(scope="module")
def offline(tmp_path_factory):
    """The capture and predict.py's offline output on it."""
    root = tmp_path_factory.mktemp("offline")
    capture = synthetic_capture(root / "capture")
    predict.main(["--input", str(capture), "--output", str(root / "out")] + TINY)
    return capture, root / "out"


def assert_same_result(out: Path, expected: Path, stems: list) -> None:
    """The depth PNGs byte for byte and the mesh bit for bit."""
    assert sorted(p.name for p in (out / "depth").iterdir()) == [f"{s}.png" for s in stems]
    for stem in stems:
        assert (out / "depth" / f"{stem}.png").read_bytes() == \
            (expected / "depth" / f"{stem}.png").read_bytes(), stem
    mesh, want = load_ply(out / "mesh.ply"), load_ply(expected / "mesh.ply")
    assert len(mesh) > 100
    np.testing.assert_array_equal(mesh.vertices_v3, want.vertices_v3)
    np.testing.assert_array_equal(mesh.faces_f3, want.faces_f3)


@pytest.mark.slow
def test_a_capture_written_by_another_process_streams_to_the_offline_result(offline, tmp_path):
    capture, expected = offline
    live = tmp_path / "live"
    live.mkdir()
    writer = subprocess.Popen([sys.executable, "-m", "dev.stream_writer", str(capture),
                               str(live), "--interval", "0.15"], cwd=ROOT,
                              env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        summary = predict.main(["--input", str(live), "--output", str(tmp_path / "out"),
                                "--stream_timeout", "30"] + STREAM + TINY)
    finally:
        assert writer.wait(timeout=60) == 0
    offline_summary = json.loads((expected / "summary.json").read_text())
    assert summary["frames"] == offline_summary["frames"] == [f"{i:04d}" for i in range(1, 6)]
    assert summary["config_hash"] == offline_summary["config_hash"]
    assert_same_result(tmp_path / "out", expected, summary["frames"])
    saved = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert saved["stream"]["ended"] == "marker" and saved["stream"]["snapshots"] == 3
    timing = saved["timing"]
    assert 0 < timing["latency_p50_s"] <= timing["latency_p99_s"] and timing["frames_per_s"] > 0
    # The stream's marker is the offline one: predict.py reuses the depths.
    again = predict.main(["--input", str(live), "--output", str(tmp_path / "out")] + TINY)
    assert again["timing"]["inference_s"] == timing["inference_s"]


def test_partial_pose_lines_and_half_written_images_are_not_frames(offline, tmp_path):
    capture, _ = offline
    live = tmp_path / "live"
    (live / "images").mkdir(parents=True)
    source = GrowingFolder(live)
    assert source.poll() == []  # no K.txt yet
    (live / "K.txt").write_bytes((capture / "K.txt").read_bytes())
    lines = (capture / "poses.txt").read_text().splitlines()
    png = (capture / "images" / "0000.png").read_bytes()
    (live / "images" / "0000.png").write_bytes(png[:len(png) // 2])  # written in place
    (live / "poses.txt").write_text(lines[0] + "\n" + lines[1][:40])
    assert source.poll() == []  # the image is half written
    (live / "images" / "0000.png").write_bytes(png)
    (live / "images" / "0001.png").write_bytes(png)
    (live / "images" / "0002.png").write_bytes(b"")
    first = source.poll()
    assert [f.color.name for f in first] == ["0000.png"]  # 0001: its pose line is partial
    with open(live / "poses.txt", "a") as f:
        f.write(lines[1][40:] + "\n" + lines[2] + "\n")
    assert [f.color.name for f in source.poll()] == ["0001.png"]  # 0002 is empty
    np.testing.assert_array_equal(first[0].world_T_cam_44,
                                  np.loadtxt(capture / "poses.txt")[0].reshape(4, 4))
    with pytest.raises(DataError, match=r"0002.png is incomplete .* marked done"):
        source.poll(final=True)


def test_complete_but_bad_data_is_a_named_error(offline, tmp_path):
    capture, _ = offline
    live = tmp_path / "live"
    (live / "images").mkdir(parents=True)
    (live / "K.txt").write_bytes((capture / "K.txt").read_bytes())
    (live / "poses.txt").write_text("1 0 0 0 0 1 0 0 0 0 1 0 0 0 0\n")
    with pytest.raises(DataError, match=r"poses.txt, line 1 must hold 16 numbers .*got 15"):
        GrowingFolder(live).poll()
    (live / "poses.txt").write_text("1 0 0 0 0 1 0 0 0 0 1 0 0 0 0 1\n")
    # An image that ends as a PNG ends but does not decode: named when its window runs.
    png = (capture / "images" / "0000.png").read_bytes()
    (live / "images" / "0000.png").write_bytes(b"\x89PNG garbage" + png[-12:])
    (live / "done").touch()
    with pytest.raises(DataError, match=r"0000.png"):
        predict.main(["--input", str(live), "--output", str(tmp_path / "out")] + STREAM + TINY)
    # An image that sorts before streamed ones is refused.
    source = GrowingFolder(capture)
    source.poll()
    (capture / "images" / "0000a.png").write_bytes(png)
    try:
        with pytest.raises(DataError, match=r"0000a.png appeared after later frames"):
            source.poll()
    finally:
        (capture / "images" / "0000a.png").unlink()


@pytest.mark.slow
def test_a_stream_ends_on_time_out_with_everything_saved(offline, tmp_path):
    capture, _ = offline
    live = tmp_path / "live"
    (live / "images").mkdir(parents=True)
    (live / "K.txt").write_bytes((capture / "K.txt").read_bytes())
    lines = (capture / "poses.txt").read_text().splitlines()
    for i in range(4):
        (live / "images" / f"{i:04d}.png").write_bytes(
            (capture / "images" / f"{i:04d}.png").read_bytes())
    (live / "poses.txt").write_text("\n".join(lines[:4]) + "\n")
    out = tmp_path / "out"
    summary = predict.main(["--input", str(live), "--output", str(out), "--stream_timeout",
                            "0.3"] + STREAM + TINY)
    assert summary["stream"]["ended"] == "timeout" and summary["frames"] == ["0001", "0002"]
    assert (out / ".depth_done.json").is_file() and len(load_ply(out / "mesh.ply")) > 0
    assert json.loads((out / "summary.json").read_text())["num_frames"] == 2


class InterruptedSource:
    """A frame source whose third look raises KeyboardInterrupt (Ctrl-C)."""

    def __init__(self, inner: GrowingFolder):
        self.inner, self.looks = inner, 0
        self.root, self.K_source = inner.root, inner.K_source

    @property
    def K(self):
        return self.inner.K

    def end_marked(self) -> bool:
        return False

    def poll(self, final: bool = False):
        self.looks += 1
        if self.looks == 3:
            raise KeyboardInterrupt
        return self.inner.poll() if self.looks == 1 else []


def test_ctrl_c_saves_the_frames_so_far_as_offline(offline, tmp_path, monkeypatch):
    capture, expected = offline
    captured = {}
    original = streaming.run_stream

    def with_source(args, hooks, device, ckpt, source=None):
        captured["source"] = InterruptedSource(GrowingFolder(args.predict.input))
        return original(args, hooks, device, ckpt, captured["source"])

    monkeypatch.setattr(predict, "run_stream", with_source)
    out = tmp_path / "out"
    summary = predict.main(["--input", str(capture), "--output", str(out)] + STREAM + TINY)
    assert summary["stream"]["ended"] == "interrupted" and captured["source"].looks == 3
    # Every frame was complete at the first look: the offline result, all saved.
    assert_same_result(out, expected, [f"{i:04d}" for i in range(1, 6)])
    assert json.loads((out / "summary.json").read_text())["stream"]["ended"] == "interrupted"


def test_stream_options_are_checked(offline, tmp_path):
    capture, _ = offline
    base = ["--input", str(capture), "--output", str(tmp_path / "o")] + STREAM + TINY
    for extra, message in ((["--mode", "joint"], "ESTM only"),
                           (["--snapshot_every", "-1"], "--snapshot_every must be"),
                           (["--stream_timeout", "nan"], "--stream_timeout must be"),
                           (["--stream_poll", "0"], "--stream_poll must be"),
                           (["--stream_end_marker", "a/b"], "--stream_end_marker must be"),
                           (["--format", "tum"], "folder format")):
        with pytest.raises(ValueError, match=message):
            predict.main(base + extra)
