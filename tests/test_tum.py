"""TUM RGB-D lists are parsed strictly: listed files exist, timestamps are finite."""

import pytest

from datasets.captures import open_capture
from datasets.io import DataError
from tests.test_captures import write_tum

INTRINSICS = "180,170,99.5,74.5"


def test_depth_list_naming_missing_files_names_them(tmp_path):
    write_tum(tmp_path)
    (tmp_path / "depth" / "frame3.png").unlink()
    (tmp_path / "depth" / "frame5.png").unlink()
    with pytest.raises(DataError, match=r"depth\.txt lists 2 file\(s\) missing under .*: "
                                        r"depth/frame3\.png, depth/frame5\.png"):
        open_capture(tmp_path, intrinsics=INTRINSICS)


def test_rgb_list_naming_a_missing_file_names_it(tmp_path):
    write_tum(tmp_path)
    (tmp_path / "rgb" / "frame7.png").unlink()
    with pytest.raises(DataError, match=r"rgb\.txt lists 1 file\(s\) missing .*rgb/frame7"):
        open_capture(tmp_path, intrinsics=INTRINSICS)


@pytest.mark.parametrize("stamp", ["nan", "inf", "-nan"])
def test_non_finite_ground_truth_timestamp_names_the_line(tmp_path, stamp):
    write_tum(tmp_path)
    gt = tmp_path / "groundtruth.txt"
    lines = gt.read_text().splitlines()
    lines[4] = " ".join([stamp] + lines[4].split()[1:])
    gt.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=rf"groundtruth\.txt, line 5: bad timestamp '{stamp}'"):
        open_capture(tmp_path, intrinsics=INTRINSICS)


def test_unparsable_ground_truth_pose_names_the_timestamp(tmp_path):
    write_tum(tmp_path)
    gt = tmp_path / "groundtruth.txt"
    lines = gt.read_text().splitlines()
    lines[2] = " ".join(lines[2].split()[:4] + ["x", "0", "0", "1"])
    gt.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"groundtruth\.txt, timestamp .*cannot parse the pose"):
        open_capture(tmp_path, intrinsics=INTRINSICS)
