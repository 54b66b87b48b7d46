"""COLMAP models are parsed strictly: two lines per image, declared counts, sane names."""

import struct

import pytest

from datasets.captures import open_capture
from datasets.colmap import read_images_binary, read_images_text
from datasets.io import DataError
from tests.test_captures import write_colmap


def _images_txt(root):
    return root / "sparse" / "0" / "images.txt"


def _images_bin(root):
    return root / "sparse" / "0" / "images.bin"


def test_images_txt_without_second_lines_names_the_line(tmp_path):
    """Dropping the (empty) points lines used to skip every other image silently."""
    write_colmap(tmp_path, binary=False)
    path = _images_txt(tmp_path)
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:3] + lines[3::2]) + "\n")  # pose lines only
    with pytest.raises(DataError, match=r"images\.txt, line 5: expected the points line of "
                                        r"image 'frame5\.jpg'.*may be empty but not absent"):
        read_images_text(path)


def test_images_txt_with_a_trailing_empty_points_line_reads_every_image(tmp_path):
    write_colmap(tmp_path, binary=False)
    assert len(read_images_text(_images_txt(tmp_path))) == 6


def test_images_txt_count_must_match_its_header(tmp_path):
    write_colmap(tmp_path, binary=False)
    path = _images_txt(tmp_path)
    path.write_text("# Number of images: 7, mean observations per image: 1\n"
                    + path.read_text())
    with pytest.raises(DataError, match=r"images\.txt: the header declares 7 images but 6"):
        read_images_text(path)


@pytest.mark.parametrize("name, message", [
    (b"fr\xffme0.jpg", r"image record 1 of 6 \(image id 6\): the image name is not UTF-8"),
    (b"", r"image record 1 of 6 \(image id 6\): '' is not an image name"),
    (b"\x01\x02garbage", r"image record 1 of 6 .*is not an image name"),
])
def test_images_bin_bad_names_name_the_file_and_record(tmp_path, name, message):
    write_colmap(tmp_path, binary=True)
    path = _images_bin(tmp_path)
    data = path.read_bytes()
    start = 8 + struct.calcsize("<i4d3di")  # the first record's name
    end = data.index(b"\0", start)
    path.write_bytes(data[:start] + name + data[end:])
    with pytest.raises(DataError, match=r"images\.bin, " + message):
        open_capture(tmp_path)


@pytest.mark.parametrize("count, message", [(5, r"131 bytes remain after the 5 images"),
                                            (7, r"truncated in image record 7 of 7")])
def test_images_bin_wrong_count_is_an_error(tmp_path, count, message):
    write_colmap(tmp_path, binary=True)
    path = _images_bin(tmp_path)
    path.write_bytes(struct.pack("<Q", count) + path.read_bytes()[8:])
    with pytest.raises(DataError, match=r"images\.bin: " + message):
        read_images_binary(path)


def test_images_bin_points_beyond_the_file_are_an_error(tmp_path):
    write_colmap(tmp_path, binary=True)
    path = _images_bin(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[:-struct.calcsize("<ddqddq")])  # the last image's points cut off
    with pytest.raises(DataError, match=r"truncated in image record 6 of 6 .*2 points"):
        read_images_binary(path)


def test_cameras_bin_extra_bytes_are_an_error(tmp_path):
    write_colmap(tmp_path, binary=True)
    path = tmp_path / "sparse" / "0" / "cameras.bin"
    path.write_bytes(path.read_bytes() + b"\0" * 8)
    with pytest.raises(DataError, match=r"cameras\.bin: 8 bytes remain after the 1 cameras"):
        open_capture(tmp_path)
