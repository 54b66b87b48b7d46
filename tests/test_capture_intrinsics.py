"""Camera parameters are checked where they enter (option, K.txt, COLMAP, TUM), and every
sequence says where its intrinsics came from."""

import struct

import numpy as np
import pytest

from datasets.captures import open_capture
from datasets.io import DataError
from datasets.sequence import PosedFrame, PosedSequence
from tests.test_captures import NET_HW, write_colmap, write_folder, write_tum


@pytest.mark.parametrize("text", ["nan,170,99.5,74.5", "0,170,99.5,74.5", "180,-1,99.5,74.5",
                                  "180,170,inf,74.5"])
def test_bad_intrinsics_option_is_refused_before_any_file(tmp_path, text):
    with pytest.raises(ValueError, match=r"--intrinsics .*finite and fx, fy > 0"):
        open_capture(tmp_path / "absent", intrinsics=text)


@pytest.mark.parametrize("K, message", [
    ([[0.0, 0, 99.5], [0, 170, 74.5], [0, 0, 1]], r"focal lengths fx=0, fy=170"),
    ([[180, 0, 99.5], [0, -170, 74.5], [0, 0, 1]], r"fy=-170; both must be > 0"),
    ([[180, 0, np.nan], [0, 170, 74.5], [0, 0, 1]], r"non-finite"),
])
def test_a_sequence_refuses_intrinsics_without_positive_focal_lengths(tmp_path, K, message):
    write_folder(tmp_path, count=2)
    frames = [PosedFrame(tmp_path / "images" / f"frame{i}.png", np.eye(4)) for i in range(2)]
    with pytest.raises(DataError, match=rf"from my K .*{message}"):
        PosedSequence(frames, np.array(K), *NET_HW, K_source="my K")


def _write_camera_text(root, line):
    (root / "sparse" / "0" / "cameras.txt").write_text(line + "\n")


def test_colmap_parameter_count_names_the_camera(tmp_path):
    write_colmap(tmp_path, binary=False)
    _write_camera_text(tmp_path, "1 PINHOLE 200 150 180 170")
    with pytest.raises(DataError, match=r"cameras\.txt, camera 1: model PINHOLE takes 4 "
                                        r"parameters, got 2"):
        open_capture(tmp_path)


def test_colmap_binary_short_camera_names_the_camera(tmp_path):
    write_colmap(tmp_path, binary=True)
    with open(tmp_path / "sparse" / "0" / "cameras.bin", "wb") as f:
        f.write(struct.pack("<QiiQQ2d", 1, 7, 1, 200, 150, 180.0, 170.0))
    with pytest.raises(DataError, match=r"cameras\.bin: truncated in camera 7's 4 PINHOLE"):
        open_capture(tmp_path)


@pytest.mark.parametrize("params, message", [
    ("0 170 100 75", r"camera 1 have .*fx=0"), ("180 nan 100 75", r"camera 1 .*non-finite"),
    ("180 170 500 75", r"cameras\.txt, camera 1 \(200x150\).*do not fit")])
def test_colmap_camera_values_are_checked(tmp_path, params, message):
    write_colmap(tmp_path, binary=False)
    _write_camera_text(tmp_path, f"1 PINHOLE 200 150 {params}")
    with pytest.raises(DataError, match=message):
        open_capture(tmp_path)


@pytest.mark.parametrize("binary", [False, True])
@pytest.mark.parametrize("qvec", [(0, 0, 0, 0), (np.nan, 0, 0, 1)])
def test_colmap_quaternion_must_be_a_rotation(tmp_path, binary, qvec):
    write_colmap(tmp_path, binary)
    model = tmp_path / "sparse" / "0"
    if binary:
        data = bytearray((model / "images.bin").read_bytes())
        struct.pack_into("<4d", data, 8 + 4, *qvec)  # the first record, after its image id
        (model / "images.bin").write_bytes(bytes(data))
    else:
        lines = (model / "images.txt").read_text().splitlines()
        fields = lines[3].split()
        fields[1:5] = [str(float(v)) for v in qvec]
        lines[3] = " ".join(fields)
        (model / "images.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"images\.(txt|bin), image 'frame5\.jpg': quaternion "
                                        r".*zero or not finite"):
        open_capture(tmp_path)


def test_tum_zero_quaternion_names_the_ground_truth(tmp_path):
    root = tmp_path / "rgbd_dataset_freiburg1_xyz"
    write_tum(root)
    gt = root / "groundtruth.txt"
    lines = gt.read_text().splitlines()
    lines[2] = " ".join(lines[2].split()[:4] + ["0"] * 4)  # the pose of colour frame 1
    gt.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"groundtruth\.txt, timestamp .*quaternion"):
        open_capture(root)


def test_sequences_record_where_their_intrinsics_came_from(tmp_path):
    write_folder(tmp_path / "folder", count=3)
    assert open_capture(tmp_path / "folder").K_source == str(tmp_path / "folder" / "K.txt")
    write_colmap(tmp_path / "colmap", binary=True)
    assert open_capture(tmp_path / "colmap").K_source.endswith("cameras.bin, camera 1 (200x150)")
    seq = open_capture(tmp_path / "folder", intrinsics="180,170,99.5,74.5")
    assert seq.K_source == "--intrinsics 180,170,99.5,74.5"


def test_tum_preset_says_which_folder_chose_it(tmp_path):
    """The nearest folder naming a camera wins (an outer freiburg2 folder does not)."""
    root = tmp_path / "freiburg2_archive" / "rgbd_dataset_freiburg1_xyz"
    write_tum(root)
    seq = open_capture(root, height=NET_HW[0], width=NET_HW[1])
    assert "TUM freiburg1 preset, chosen because of the folder name " \
        "'rgbd_dataset_freiburg1_xyz'" in seq.K_source


def test_intrinsics_option_principal_point_outside_the_images_names_the_option(tmp_path):
    write_folder(tmp_path, count=2)
    with pytest.raises(DataError, match=r"from --intrinsics 180,170,500,74.5 \(cx=500\.0.*"
                                        r"do not fit the 150x200"):
        open_capture(tmp_path, intrinsics="180,170,500,74.5")
