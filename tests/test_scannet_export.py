"""ScanNet .sens export (datasets/scannet_export.py) on small files written in the format."""

import os
import struct
import zlib
from typing import Sequence

import cv2
import numpy as np
import pytest

from datasets import scannet_export
from datasets.io import DataError, read_depth, read_pose
from datasets.scannet import ScanNetSequence
from utils.paths import OverlappingPathsError

COLOR_HW, DEPTH_HW = (60, 80), (30, 40)
K_COLOR = np.array([[70.0, 0, 39.5, 0], [0, 70.0, 29.5, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
K_DEPTH = np.array([[35.0, 0, 19.5, 0], [0, 35.0, 14.5, 0], [0, 0, 1, 0], [0, 0, 0, 1]])


def write_sens(path, color_jpegs: Sequence[bytes], depths_mm: Sequence[np.ndarray],
               poses: Sequence[np.ndarray], intrinsic_color: np.ndarray,
               intrinsic_depth: np.ndarray, color_hw: Sequence[int],
               sensor_name: str = "StructureSensor", version: int = scannet_export.SENS_VERSION) -> None:
    """Write a ``.sens`` file in the documented format (the reader's test fixture)."""
    depth_hw = depths_mm[0].shape
    name = sensor_name.encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<IQ", version, len(name)) + name)
        for matrix in (intrinsic_color, np.eye(4), intrinsic_depth, np.eye(4)):
            f.write(struct.pack("<16f", *np.asarray(matrix, np.float32).ravel()))
        f.write(struct.pack("<ii4IfQ", 2, 1, color_hw[1], color_hw[0], depth_hw[1],
                            depth_hw[0], 1000.0, len(poses)))
        for index, (jpeg, depth, pose) in enumerate(zip(color_jpegs, depths_mm, poses)):
            packed = zlib.compress(np.ascontiguousarray(depth, dtype="<u2").tobytes())
            f.write(struct.pack("<16f", *np.asarray(pose, np.float32).ravel()))
            f.write(struct.pack("<4Q", index, index, len(jpeg), len(packed)))
            f.write(jpeg + packed)
        f.write(struct.pack("<Q", 0))  # no IMU frames


def make_sens(path, count: int = 7, version: int = 4):
    rng = np.random.default_rng(1)
    jpegs, depths, poses = [], [], []
    for i in range(count):
        ok, jpeg = cv2.imencode(".jpg", rng.integers(0, 255, (*COLOR_HW, 3), np.uint8))
        jpegs.append(jpeg.tobytes())
        depths.append(rng.integers(0, 5000, DEPTH_HW).astype(np.uint16))
        pose = np.eye(4)
        pose[:3, 3] = [0.1 * i, 0.25, -0.5 * i]
        poses.append(pose)
    write_sens(path, jpegs, depths, poses, K_COLOR, K_DEPTH, COLOR_HW, version=version)
    return jpegs, depths, poses


def test_round_trip(tmp_path):
    sens = tmp_path / "scene0000_00.sens"
    jpegs, depths, poses = make_sens(sens)
    out = tmp_path / "scans" / "scene0000_00"
    summary = scannet_export.main([str(sens), str(out), "--frame_skip", "2"])
    assert summary["frames"] == 4 and summary["total_frames"] == 7
    for i in (0, 2, 4, 6):
        assert (out / "rgb" / f"{i}.jpg").read_bytes() == jpegs[i]  # stored bytes, no re-encode
        raw = cv2.imread(str(out / "depth" / f"{i}.png"), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(raw, depths[i])
        np.testing.assert_allclose(read_pose(out / "pose" / f"{i}.txt"), poses[i], atol=1e-6)
    assert not (out / "rgb" / "1.jpg").exists()
    np.testing.assert_allclose(np.loadtxt(out / "intrinsic" / "intrinsic_color.txt"), K_COLOR)
    np.testing.assert_allclose(np.loadtxt(out / "intrinsic" / "intrinsic_depth.txt"), K_DEPTH)
    # The ScanNet loader reads the export, with the file's own intrinsics.
    seq = ScanNetSequence(out, height=32, width=64, frame_interval=1, intrinsics="scene")
    assert len(seq) == 4
    np.testing.assert_allclose(seq.cam_intr.numpy()[0, 0], 70.0 * 64 / 80, rtol=1e-6)
    np.testing.assert_allclose(seq[1]["dmap"][0].numpy(),
                               np.where(depths[2] <= 5000, depths[2], 0) / 1000.0, atol=1e-6)
    assert np.allclose(read_depth(out / "depth" / "6.png"), depths[6] / 1000.0)


def test_resume_skips_finished_frames(tmp_path):
    sens = tmp_path / "s.sens"
    make_sens(sens)
    out = tmp_path / "out"
    scannet_export.export(sens, out, progress=False)
    (out / "pose" / "3.txt").unlink()  # an interrupted frame
    before = (out / "rgb" / "5.jpg").stat().st_mtime_ns
    summary = scannet_export.export(sens, out, progress=False)
    assert summary["written"] == 1 and summary["skipped_existing"] == 6
    assert (out / "pose" / "3.txt").is_file()
    assert (out / "rgb" / "5.jpg").stat().st_mtime_ns == before


def test_bad_files_are_named(tmp_path):
    sens = tmp_path / "old.sens"
    make_sens(sens, version=3)
    with pytest.raises(DataError, match=r"old\.sens: \.sens version 3, only version 4"):
        scannet_export.export(sens, tmp_path / "out", progress=False)
    sens = tmp_path / "cut.sens"
    make_sens(sens)
    sens.write_bytes(sens.read_bytes()[:-600])
    with pytest.raises(DataError, match=r"cut\.sens: truncated"):
        scannet_export.export(sens, tmp_path / "out2", progress=False)
    with pytest.raises(DataError, match="not found"):
        scannet_export.export(tmp_path / "none.sens", tmp_path / "out3", progress=False)


def test_header_layout():
    """The documented header: version, name, 4 matrices, compression, sizes, shift, count."""
    import io

    buf = io.BytesIO()
    buf.write(struct.pack("<IQ", 4, 3) + b"abc")
    for _ in range(4):
        buf.write(struct.pack("<16f", *np.eye(4, dtype=np.float32).ravel()))
    buf.write(struct.pack("<ii4IfQ", 2, 1, 1296, 968, 640, 480, 1000.0, 5))
    buf.seek(0)
    header = scannet_export.read_header(buf, "x.sens")
    assert (header.sensor_name, header.color_width, header.color_height, header.depth_width,
            header.depth_height, header.depth_shift, header.num_frames) == \
        ("abc", 1296, 968, 640, 480, 1000.0, 5)


@pytest.mark.parametrize("output", [".", "scene0000_00.sens", "scene0000_00.sens/out"])
def test_an_output_folder_around_or_on_the_sens_file_is_refused(tmp_path, output):
    sens = tmp_path / "scene0000_00.sens"
    make_sens(sens, count=2)
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(OverlappingPathsError, match=f"the input {sens}"):
        scannet_export.main([str(sens), str(tmp_path / output)])
    assert sorted(os.listdir(tmp_path)) == before


def test_another_sources_export_is_refused_unless_overwrite(tmp_path):
    make_sens(tmp_path / "a.sens", count=3)
    make_sens(tmp_path / "b.sens", count=2)
    out = tmp_path / "out"
    scannet_export.export(tmp_path / "a.sens", out, progress=False)
    with pytest.raises(DataError, match=r"export of another \.sens file .*a\.sens.*--overwrite"):
        scannet_export.export(tmp_path / "b.sens", out, progress=False)
    assert (out / "rgb" / "2.jpg").is_file()  # a's export untouched
    summary = scannet_export.main([str(tmp_path / "b.sens"), str(out), "--overwrite"])
    assert summary["written"] == 2 and sorted(os.listdir(out / "rgb")) == ["0.jpg", "1.jpg"]


HEADER_END = 4 + 8 + len("StructureSensor") + 4 * 64 + 8 + 16 + 4  # where the frame count is


@pytest.mark.parametrize("offset", [4, HEADER_END, HEADER_END + 8 + 64 + 16],
                         ids=["name", "frame count", "colour bytes"])
def test_an_impossible_size_is_an_error_naming_the_file(tmp_path, offset):
    """A 2**62-byte sensor name, frame count or colour image: no allocation is tried."""
    sens = tmp_path / "bad.sens"
    make_sens(sens, count=2)
    data = bytearray(sens.read_bytes())
    data[offset:offset + 8] = struct.pack("<Q", 2 ** 62)
    sens.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"bad\.sens: truncated or corrupt.*claims \d{19,}"):
        scannet_export.export(sens, tmp_path / "out", progress=False)


def test_a_resumed_export_leaves_no_temporary_file(tmp_path):
    sens = tmp_path / "s.sens"
    make_sens(sens, count=3)
    out = tmp_path / "out"
    (out / "rgb").mkdir(parents=True)
    stale = out / "rgb" / ".1.jpg.k3_x9ab2.tmp"  # a killed atomic write
    stale.write_bytes(b"half a jpeg")
    scannet_export.export(sens, out, progress=False)
    assert not list(out.rglob("*.tmp")) and (out / "rgb" / "1.jpg").is_file()


def test_predict_refuses_a_half_exported_folder(tmp_path, monkeypatch):
    import predict

    sens = tmp_path / "s.sens"
    make_sens(sens, count=3)
    out = tmp_path / "scene"
    scannet_export.export(sens, out, progress=False)
    (out / scannet_export.DONE_FILE).unlink()  # killed before the end
    monkeypatch.setattr(predict, "open_capture", None)  # refused before reading it
    with pytest.raises(DataError, match=r"unfinished export of .*s\.sens.*scannet_export"):
        predict.main(["--input", str(out), "--output", str(tmp_path / "pred"),
                      "--device", "cpu"])
    assert scannet_export.unfinished_export(out) and not (tmp_path / "pred").exists()
    scannet_export.export(sens, out, progress=False)
    assert scannet_export.unfinished_export(out) is None
