"""utils/paths.py: an output is never an input, inside one or around one."""

import os

import pytest

from utils.paths import OverlappingPathsError, check_apart


@pytest.fixture()
def capture(tmp_path):
    folder = tmp_path / "capture"
    (folder / "rgb").mkdir(parents=True)
    return folder


@pytest.mark.parametrize("output, relation", [
    ("capture", "is"), ("capture/out", "lies inside"), ("capture/rgb/new/out", "lies inside"),
    (".", "contains")])
def test_an_output_on_in_or_around_the_input_is_refused(tmp_path, capture, output, relation):
    with pytest.raises(OverlappingPathsError, match=f"{relation} the input {capture}"):
        check_apart(tmp_path / output, capture)


def test_a_link_to_the_input_is_the_input(tmp_path, capture):
    os.symlink(capture, tmp_path / "link")
    with pytest.raises(OverlappingPathsError, match="is the input"):
        check_apart(tmp_path / "link", capture)
    with pytest.raises(OverlappingPathsError, match="lies inside"):
        check_apart(tmp_path / "link" / "out", capture)
    with pytest.raises(ValueError, match="link"):  # named as given
        check_apart(capture / "out", tmp_path / "link")


def test_a_file_input_and_its_folder(tmp_path):
    sens = tmp_path / "scene.sens"
    sens.write_bytes(b"")
    with pytest.raises(OverlappingPathsError, match="contains"):
        check_apart(tmp_path, sens)
    check_apart(tmp_path / "scene", sens)  # a sibling folder is fine


def test_outputs_beside_the_inputs_pass(tmp_path, capture):
    check_apart(tmp_path / "out", capture, tmp_path / "other")
    check_apart(tmp_path / "capture2", capture)  # a name prefix is not a parent
