"""predict.py checks the options prediction and fusion use before any frame is predicted,
and records where the intrinsics came from."""

import pytest

import predict
from datasets.io import DataError
from tests.test_predict import TINY, _tiny_capture_run


def _refuse_capture(*args, **kwargs):
    raise AssertionError("the capture was opened before the options were checked")


@pytest.mark.parametrize("option, value, message", [
    ("--voxel_size", "0", r"--voxel_size must be a finite number > 0, got 0"),
    ("--voxel_size", "nan", r"--voxel_size must be a finite number > 0, got nan"),
    ("--fuse_max_depth", "-1", r"--fuse_max_depth must be a finite number > 0, got -1"),
    ("--fuse_max_depth", "inf", r"--fuse_max_depth must be .*got inf"),
    ("--max_depth_eval", "inf", r"--max_depth_eval must be a finite number >= 0"),
    ("--tum_max_dt", "0", r"--tum_max_dt must be a finite number > 0"),
    ("--min_baseline", "-0.1", r"--min_baseline must be a finite number >= 0"),
])
def test_bad_options_are_refused_before_the_capture_is_read(tmp_path, monkeypatch, option,
                                                             value, message):
    monkeypatch.setattr(predict, "open_capture", _refuse_capture)
    with pytest.raises(ValueError, match=message):
        predict.main(["--input", str(tmp_path / "capture"), "--output", str(tmp_path / "o"),
                      "--fuse", "True", option, value] + TINY)


def test_fusion_options_are_not_checked_without_fusion(tmp_path):
    with pytest.raises(DataError, match="capture folder not found"):
        predict.main(["--input", str(tmp_path / "capture"), "--output", str(tmp_path / "o"),
                      "--fuse", "False", "--voxel_size", "0"] + TINY)


def test_summary_records_the_intrinsics_source(redkitchen, tmp_path):
    capture, _, argv = _tiny_capture_run(redkitchen, tmp_path)
    summary = predict.main(argv)
    assert summary["intrinsics_source"] == str(capture / "K.txt")
