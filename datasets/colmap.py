"""COLMAP sparse models (text and binary) as posed frames.

Reads ``cameras.{txt,bin}`` and ``images.{txt,bin}`` as documented in COLMAP's "Output
format" page; ``points3D`` only for the capture's scale (:func:`colmap_points`). The model is looked for in ``DIR``,
``DIR/sparse`` and ``DIR/sparse/0``; the images in ``DIR/images`` (their names in the
model are relative to it).

COLMAP stores world-to-camera poses (``qw qx qy qz`` rotation, ``tx ty tz``); they are
inverted to camera-to-world. Its principal point is in coordinates whose top-left pixel
centre is ``(0.5, 0.5)``; ours puts pixel centres at integers, so ``c - 0.5`` is used.
Pinhole models are read as they are; a distortion model is accepted only when every
distortion coefficient is 0 (undistort with ``colmap image_undistorter`` otherwise).
"""

from __future__ import annotations

import re
import struct
from pathlib import Path
from typing import Optional

import numpy as np

from datasets.intrinsics import check_focal_lengths
from datasets.io import DataError, image_size
from datasets.posed import natural_key
from datasets.sequence import PosedFrame

# model id -> (name, number of parameters), COLMAP's src/colmap/sensor/models.h.
CAMERA_MODELS = {
    0: ("SIMPLE_PINHOLE", 3), 1: ("PINHOLE", 4), 2: ("SIMPLE_RADIAL", 4), 3: ("RADIAL", 5),
    4: ("OPENCV", 8), 5: ("OPENCV_FISHEYE", 8), 6: ("FULL_OPENCV", 12), 7: ("FOV", 5),
    8: ("SIMPLE_RADIAL_FISHEYE", 4), 9: ("RADIAL_FISHEYE", 5), 10: ("THIN_PRISM_FISHEYE", 12),
}
MODEL_IDS = {name: model_id for model_id, (name, _) in CAMERA_MODELS.items()}
# Models that are a pinhole when their trailing distortion parameters are all zero:
# name -> (index of fx, index of fy or None for a single focal, cx, cy, first distortion).
PINHOLE_LIKE = {
    "SIMPLE_PINHOLE": (0, None, 1, 2, 3), "PINHOLE": (0, 1, 2, 3, 4),
    "SIMPLE_RADIAL": (0, None, 1, 2, 3), "RADIAL": (0, None, 1, 2, 3),
    "OPENCV": (0, 1, 2, 3, 4), "FULL_OPENCV": (0, 1, 2, 3, 4),
}


def find_model(root: Path, required: bool = True) -> Optional[tuple[Path, str]]:
    """``(folder, "txt" | "bin")`` of the sparse model under ``root``."""
    for folder in (root, root / "sparse", root / "sparse" / "0"):
        for ext in ("bin", "txt"):
            if (folder / f"cameras.{ext}").is_file() and (folder / f"images.{ext}").is_file():
                return folder, ext
    if required:
        raise DataError(f"no COLMAP sparse model in {root}: expected cameras.txt and "
                        f"images.txt (or .bin) there or in sparse/ or sparse/0")
    return None


def _data_lines(path: Path) -> list[tuple[int, str]]:
    """``(line number, text)`` of a COLMAP text file's non-comment lines (empty ones kept)."""
    return [(number, line.strip()) for number, line in enumerate(path.read_text().splitlines(), 1)
            if not line.lstrip().startswith("#")]


def _check_declared_count(path: Path, what: str, found: int) -> None:
    """COLMAP's header comment ``# Number of <what>: N`` must agree with the records read."""
    match = re.search(rf"^#\s*Number of {what}:\s*(\d+)", path.read_text(), re.MULTILINE)
    if match is not None and int(match.group(1)) != found:
        raise DataError(f"{path}: the header declares {match.group(1)} {what} but {found} "
                        f"were read (a truncated or hand-edited file?)")


def read_cameras_text(path: Path) -> dict:
    """``{camera_id: (model, width, height, params)}``."""
    cameras = {}
    for number, line in _data_lines(path):
        if not line:
            continue
        fields = line.split()
        try:
            camera_id, model, width, height = int(fields[0]), fields[1], int(fields[2]), \
                int(fields[3])
            params = np.array([float(v) for v in fields[4:]])
        except (ValueError, IndexError):
            raise DataError(f"{path}, line {number}: cannot parse camera line {line!r}") \
                from None
        _check_param_count(path, camera_id, model, params)
        cameras[camera_id] = (model, width, height, params)
    _check_declared_count(path, "cameras", len(cameras))
    return cameras


def _check_param_count(path: Path, camera_id: int, model: str, params: np.ndarray) -> None:
    """A known model must have its parameter count (a short line would index past it)."""
    if model in MODEL_IDS:
        count = CAMERA_MODELS[MODEL_IDS[model]][1]
        if len(params) != count:
            raise DataError(f"{path}, camera {camera_id}: model {model} takes {count} "
                            f"parameters, got {len(params)}")


def _parse_image_line(path: Path, number: int, line: str) -> tuple:
    fields = line.split()
    try:
        qvec = np.array([float(v) for v in fields[1:5]])
        tvec = np.array([float(v) for v in fields[5:8]])
        camera_id, name = int(fields[8]), " ".join(fields[9:])
    except (ValueError, IndexError):
        raise DataError(f"{path}, line {number}: cannot parse image line {line!r}") from None
    if not name:
        raise DataError(f"{path}, line {number}: image line without a name: {line!r}")
    return name, qvec, tvec, camera_id


def _is_points(fields: list[str]) -> bool:
    """Whether ``fields`` are ``X Y POINT3D_ID`` triples (an image line is not: its name)."""
    if len(fields) % 3:
        return False
    try:
        for i in range(0, len(fields), 3):
            float(fields[i]), float(fields[i + 1]), int(fields[i + 2])
    except ValueError:
        return False
    return True


def _check_points_line(path: Path, number: int, line: str, name: str) -> None:
    """The second line of an image: ``X Y POINT3D_ID`` triples, or empty.

    Without this check a file lacking the second lines loses every other image silently.
    """
    if not _is_points(line.split()):
        raise DataError(f"{path}, line {number}: expected the points line of image {name!r} "
                        f"(X Y POINT3D_ID triples, or empty), got {line[:80]!r}; every image "
                        f"takes two lines, the second may be empty but not absent")


def read_images_text(path: Path) -> list:
    """``[(name, qvec_wxyz, tvec, camera_id)]``; each image takes two lines."""
    lines = _data_lines(path)
    while lines and not lines[-1][1]:  # trailing empties: the last points line(s)
        lines.pop()
    if len(lines) % 2 == 1:  # the last image's empty points line, stripped above
        lines.append((lines[-1][0] + 1, ""))
    images = []
    for (number, line), (points_number, points) in zip(lines[::2], lines[1::2]):
        image = _parse_image_line(path, number, line)
        _check_points_line(path, points_number, points, image[0])
        images.append(image)
    _check_declared_count(path, "images", len(images))
    return images


class _Reader:
    def __init__(self, path: Path):
        self.path, self.data, self.offset = path, path.read_bytes(), 0

    def _need(self, size: int, what: str) -> None:
        if self.offset + size > len(self.data):
            raise DataError(f"{self.path}: truncated{' in ' + what if what else ''} (needs "
                            f"{self.offset + size} bytes, has {len(self.data)})")

    def read(self, fmt: str, what: str = ""):
        """``struct.unpack`` the next values; ``what`` names them (record) in errors."""
        size = struct.calcsize(fmt)
        self._need(size, what)
        values = struct.unpack_from(fmt, self.data, self.offset)
        self.offset += size
        return values

    def skip(self, size: int, what: str) -> None:
        self._need(size, what)
        self.offset += size

    def read_name(self, what: str) -> str:
        """A NUL-terminated UTF-8 image name without control characters."""
        end = self.data.find(b"\0", self.offset)
        if end < 0:
            raise DataError(f"{self.path}, {what}: truncated image name")
        raw = self.data[self.offset:end]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise DataError(f"{self.path}, {what}: the image name is not UTF-8 text "
                            f"({raw[:40]!r}); a corrupt file?") from None
        if not text or any(ord(c) < 32 for c in text):
            raise DataError(f"{self.path}, {what}: {text[:40]!r} is not an image name "
                            f"(empty or control characters); a corrupt file?")
        self.offset = end + 1
        return text

    def check_end(self, what: str) -> None:
        """Bytes left after the declared records mean a wrong count (or a corrupt file)."""
        if self.offset != len(self.data):
            raise DataError(f"{self.path}: {len(self.data) - self.offset} bytes remain after "
                            f"the {what} its header declares (a wrong count or a corrupt "
                            f"file)")


def read_cameras_binary(path: Path) -> dict:
    reader = _Reader(path)
    cameras = {}
    count = reader.read("<Q", "the camera count")[0]
    for k in range(count):
        camera_id, model_id, width, height = reader.read("<iiQQ", f"camera record {k + 1}")
        if model_id not in CAMERA_MODELS:
            raise DataError(f"{path}: camera {camera_id} has unknown model id {model_id}")
        name, n = CAMERA_MODELS[model_id]
        params = reader.read(f"<{n}d", f"camera {camera_id}'s {n} {name} parameters")
        cameras[camera_id] = (name, width, height, np.array(params))
    reader.check_end(f"{count} cameras")
    return cameras


def read_images_binary(path: Path) -> list:
    reader = _Reader(path)
    count = reader.read("<Q", "the image count")[0]
    images = [_read_image_record(reader, f"image record {k + 1} of {count}")
              for k in range(count)]
    reader.check_end(f"{count} images")
    return images


def _read_image_record(reader: _Reader, record: str) -> tuple:
    values = reader.read("<i4d3di", record)
    record = f"{record} (image id {values[0]})"
    name = reader.read_name(record)
    num_points = reader.read("<Q", record)[0]
    # x, y (double) and point3D id (int64) per point
    reader.skip(num_points * 24, f"{record}'s {num_points} points")
    return name, np.array(values[1:5]), np.array(values[5:8]), values[8]


def read_points_text(path: Path) -> np.ndarray:
    """``[P, 3]`` world positions of ``points3D.txt`` (``ID X Y Z R G B ERROR TRACK[]``)."""
    points = []
    for number, line in _data_lines(path):
        if not line:
            continue
        fields = line.split()
        try:
            points.append([float(v) for v in fields[1:4]])
        except ValueError:
            raise DataError(f"{path}, line {number}: expected POINT3D_ID X Y Z ..., got "
                            f"{line[:60]!r}") from None
        if len(fields) < 8 or not np.all(np.isfinite(points[-1])):
            raise DataError(f"{path}, line {number}: not a point record: {line[:60]!r}")
    _check_declared_count(path, "points", len(points))
    return np.array(points, dtype=np.float64).reshape(-1, 3)


def read_points_binary(path: Path) -> np.ndarray:
    """``[P, 3]`` world positions of ``points3D.bin``."""
    reader = _Reader(path)
    count = reader.read("<Q", "the point count")[0]
    points = np.empty((min(count, len(reader.data) // 51), 3))  # 51: the smallest record
    for k in range(count):
        record = f"point record {k + 1} of {count}"
        if k == len(points):
            reader._need(51, record)  # a count the file cannot hold
        values = reader.read("<Q3d3BdQ", record)
        reader.skip(values[-1] * 8, f"{record}'s track of {values[-1]} images")
        points[k] = values[1:4]
    reader.check_end(f"{count} points")
    if not np.all(np.isfinite(points)):
        raise DataError(f"{path}: non-finite point coordinates")
    return points


def colmap_points(root: Path, required: bool = True) -> tuple[Optional[np.ndarray], Path]:
    """The sparse model's 3D points ``[P, 3]`` (world, the model's units) and their file;
    ``None`` for the points when the file is absent and not ``required``."""
    folder, ext = find_model(root)
    path = folder / f"points3D.{ext}"
    if not path.is_file() and not required:
        return None, path
    if not path.is_file():
        raise DataError(f"{path} not found: the capture's scale is measured from the sparse "
                        f"model's 3D points (export them with the model, or pass "
                        f"--pose_scale S)")
    points = read_points_text(path) if ext == "txt" else read_points_binary(path)
    return points, path


def pinhole_intrinsics(model: str, params: np.ndarray, source: str) -> np.ndarray:
    """3x3 K (our pixel-centre convention) of a pinhole-compatible COLMAP camera."""
    if model not in PINHOLE_LIKE:
        raise DataError(f"{source}: camera model {model} is not supported (pinhole only: "
                        f"{', '.join(PINHOLE_LIKE)} without distortion); undistort the images "
                        f"with `colmap image_undistorter` first")
    fx_i, fy_i, cx_i, cy_i, dist_i = PINHOLE_LIKE[model]
    if np.any(params[dist_i:] != 0):
        raise DataError(f"{source}: camera model {model} has distortion "
                        f"{params[dist_i:].tolist()}; undistort the images with "
                        f"`colmap image_undistorter` (it writes a PINHOLE model)")
    fx = params[fx_i]
    fy = params[fy_i] if fy_i is not None else fx
    K = np.array([[fx, 0, params[cx_i] - 0.5], [0, fy, params[cy_i] - 0.5], [0, 0, 1]])
    check_focal_lengths(K, source)
    return K


def qvec_to_rotation(qvec_wxyz: np.ndarray, source: str = "quaternion") -> np.ndarray:
    """Rotation matrix of a (normalised) quaternion ``w, x, y, z``.

    Raises:
        DataError naming ``source`` when it is zero or not finite (no rotation to take).
    """
    qvec = np.asarray(qvec_wxyz, dtype=np.float64)
    norm = np.linalg.norm(qvec)
    if not np.isfinite(norm) or norm < 1e-12:
        raise DataError(f"{source}: quaternion (w, x, y, z) = {qvec.tolist()} is zero or "
                        f"not finite; it describes no rotation")
    w, x, y, z = qvec / norm
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def colmap_frames(root: Path) -> tuple[list[PosedFrame], np.ndarray, str]:
    """Frames (sorted by image name), native intrinsics and their source."""
    folder, ext = find_model(root)
    cameras_file, images_file = folder / f"cameras.{ext}", folder / f"images.{ext}"
    if ext == "txt":
        cameras, images = read_cameras_text(cameras_file), read_images_text(images_file)
    else:
        cameras, images = read_cameras_binary(cameras_file), read_images_binary(images_file)
    if not images:
        raise DataError(f"{images_file} holds no registered image")
    used = sorted({camera_id for *_, camera_id in images})
    missing = [c for c in used if c not in cameras]
    if missing:
        raise DataError(f"{images_file} uses camera {missing[0]}, absent from {cameras_file}")
    Ks = {c: pinhole_intrinsics(cameras[c][0], cameras[c][3],
                                f"{cameras_file}, camera {c}") for c in used}
    first = Ks[used[0]]
    sizes = {cameras[c][1:3] for c in used}
    if len(sizes) > 1 or any(not np.allclose(K, first) for K in Ks.values()):
        raise DataError(f"{cameras_file}: the images use {len(used)} different cameras; one "
                        f"shared camera is needed (COLMAP: --ImageReader.single_camera 1)")
    image_dir = root / "images"
    frames = []
    for name, qvec, tvec, _ in sorted(images, key=lambda im: natural_key(im[0])):
        cam_T_world = np.eye(4)
        cam_T_world[:3, :3] = qvec_to_rotation(qvec, f"{images_file}, image {name!r}")
        cam_T_world[:3, 3] = tvec
        path = image_dir / name
        if not path.is_file():
            raise DataError(f"image {path} named in {images_file} not found")
        frames.append(PosedFrame(path, np.linalg.inv(cam_T_world)))
    width, height = cameras[used[0]][1:3]
    if image_size(frames[0].color, "colour image") != (height, width):
        raise DataError(f"{cameras_file}: the camera is {width}x{height} (WxH) but image "
                        f"{frames[0].color} is not; intrinsics would not fit")
    return frames, first, f"{cameras_file}, camera {used[0]} ({width}x{height})"
