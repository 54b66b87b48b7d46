"""predict.py keeps its output apart from its input and from unfinished exports."""

import os

import pytest

import predict
from tests.test_predict import TINY
from utils.paths import OverlappingPathsError


@pytest.fixture()
def capture(tmp_path, monkeypatch):
    folder = tmp_path / "capture"
    (folder / "images").mkdir(parents=True)
    (folder / "images" / "000000.png").write_bytes(b"a frame")

    def no_work(*args, **kwargs):
        raise AssertionError("predict read the capture before refusing the output")
    monkeypatch.setattr(predict, "open_capture", no_work)
    return folder


@pytest.mark.parametrize("output", ["capture", "capture/out", "capture/images", "."])
def test_an_output_on_in_or_around_the_input_is_refused_first(tmp_path, capture, output):
    out = tmp_path / output
    with pytest.raises(OverlappingPathsError, match=f"output {out} .* the input {capture}"):
        predict.main(["--input", str(capture), "--output", str(out)] + TINY)
    assert sorted(os.listdir(capture)) == ["images"]  # nothing written, no lock left
    assert os.listdir(capture / "images") == ["000000.png"]


def test_an_output_through_a_link_to_the_input_is_refused(tmp_path, capture):
    os.symlink(capture, tmp_path / "link")
    with pytest.raises(OverlappingPathsError, match="is the input"):
        predict.main(["--input", str(capture), "--output", str(tmp_path / "link")] + TINY)
