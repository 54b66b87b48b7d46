"""A ``folder`` capture that is still being written (``predict.py --stream``).

The layout is :mod:`datasets.posed`'s (``images/``, ``poses.txt`` or ``poses/``,
``K.txt``). A producer writing it live must follow one convention, so that the stream
never reads a half-written file:

* ``K.txt`` is written before the first frame;
* each image appears complete: written under a hidden name (``.000012.png.tmp``) or
  another suffix and renamed into ``images/`` (an atomic rename); images are named in
  increasing natural order (``frame2`` before ``frame10``);
* its pose is added after it: one line appended to ``poses.txt`` and ended by a newline
  (a line without its newline is still being written), or ``poses/<stem>.txt`` renamed
  into place like the images;
* the end: an empty file named ``--stream_end_marker`` (default ``done``) in the folder.

As a second guard an image counts only once its bytes end as a PNG or JPEG file ends (the
``IEND`` chunk, the ``FFD9`` marker), so a producer that writes in place is waited for
too. Data that is complete but bad (a pose line without 16 numbers, a non-rigid pose, an
image that does not decode) is an error naming the file and the problem.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Optional

import numpy as np

from datasets.io import DataError, check_rigid_pose, read_intrinsics, read_pose
from datasets.posed import _is_image_name, natural_key, select_frames
from datasets.sequence import PosedFrame, PosedSequence

log = logging.getLogger(__name__)
PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"
JPEG_END = b"\xff\xd9"


def image_is_complete(path: Path) -> bool:
    """Whether ``path`` ends as a whole PNG (the IEND chunk) or JPEG (the EOI marker)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            if size < len(PNG_END):
                return False
            f.seek(size - len(PNG_END))
            tail = f.read()
    except FileNotFoundError:
        return False
    if path.suffix.lower() == ".png":
        return tail == PNG_END
    return tail.endswith(JPEG_END)


def parse_pose_line(text: str, where: str) -> Optional[np.ndarray]:
    """A flattened 4x4 camera-to-world of one ``poses.txt`` line (None: blank/comment),
    parsed as the offline reader does (``np.loadtxt``)."""
    try:
        row = np.loadtxt(io.StringIO(text), dtype=np.float64, ndmin=1, comments="#")
    except ValueError as err:
        raise DataError(f"cannot parse {where}: {err}") from None
    if row.size == 0:
        return None
    if row.size != 16:
        raise DataError(f"{where} must hold 16 numbers (a flattened 4x4 camera-to-world), "
                        f"got {row.size}")
    return check_rigid_pose(row.reshape(4, 4), where)


class PoseLines:
    """The complete lines of a ``poses.txt`` that grows by appended lines."""

    def __init__(self, path: Path):
        self.path, self.offset, self.lines, self.poses = path, 0, 0, []
        self.pending = b""

    def read(self, final: bool) -> list[np.ndarray]:
        """Every pose so far; ``final``: the writer is done, a last line without its
        newline counts."""
        if not self.path.is_file():
            return self.poses
        with open(self.path, "rb") as f:
            size = f.seek(0, 2)
            if size < self.offset:
                raise DataError(f"poses file {self.path} shrank from {self.offset} to {size} "
                                f"bytes: a streamed capture's poses may only be appended")
            f.seek(self.offset)
            data = f.read()
        self.offset += len(data)
        lines = (self.pending + data).split(b"\n")
        self.pending = lines.pop()  # after the last newline: still being written
        if final and self.pending.strip():
            lines.append(self.pending)
            self.pending = b""
        for line in lines:
            self.lines += 1
            pose = parse_pose_line(line.decode("utf-8", "replace"),
                                   f"poses file {self.path}, line {self.lines}")
            if pose is not None:
                self.poses.append(pose)
        return self.poses


class GrowingFolder:
    """The frames of a ``folder`` capture as they become complete (see the module doc).

    :meth:`poll` returns the newly selected frames (``frame_interval`` / keyframes, whose
    choice depends on earlier frames only, so the selection equals the offline one on
    the same frames). Ground-truth depth is not read (no metrics while streaming).
    """

    def __init__(self, root, frame_interval: int = 1, min_baseline: float = 0.0,
                 min_rotation: float = 0.0, end_marker: str = "done",
                 K_override: Optional[np.ndarray] = None):
        self.root = Path(root)
        self.select = (frame_interval, min_baseline, min_rotation)
        self.end_marker = self.root / end_marker
        self.K, self.K_source = K_override, "--intrinsics" if K_override is not None else ""
        self.images: list[Path] = []  # accepted: complete, with a pose, in order
        self.pose_lines = PoseLines(self.root / "poses.txt")
        self.dir_poses: list[np.ndarray] = []
        self.given = 0  # selected frames returned so far

    def end_marked(self) -> bool:
        return self.end_marker.exists()

    def poll(self, final: bool = False) -> list[PosedFrame]:
        """The frames completed since the last call that the selection keeps, in order.
        ``final``: the writer is done; anything still incomplete is then an error."""
        if not self._read_intrinsics(final):
            return []
        listed = self._listed_images()
        poses = self._poses(listed, final)
        for index in range(len(self.images), len(listed)):
            image = listed[index]
            if index >= len(poses) or not image_is_complete(image):
                if final:
                    problem = ("has no pose" if index >= len(poses) else
                               "is incomplete (no PNG/JPEG end)")
                    raise DataError(f"{image} {problem} though the capture is marked done "
                                    f"({self.end_marker})")
                break
            self.images.append(image)
        if final and len(poses) > len(self.images):
            raise DataError(f"{self._pose_source()} has {len(poses)} poses but "
                            f"{self.root / 'images'} has {len(self.images)} images: pose "
                            f"{len(self.images) + 1} and after have no image")
        keep = select_frames(poses[:len(self.images)], *self.select)
        new = [PosedFrame(self.images[i], poses[i]) for i in keep[self.given:]]
        self.given = len(keep)
        return new

    def _read_intrinsics(self, final: bool) -> bool:
        """Whether the intrinsics are known (``K.txt`` read once it exists)."""
        K_file = self.root / "K.txt"
        if self.K is None and K_file.is_file():
            self.K, self.K_source = read_intrinsics(K_file), str(K_file)
        if self.K is None and final:
            raise DataError(f"intrinsics file not found: {K_file} (3x3 for the images' "
                            f"size), and the capture is marked done")
        return self.K is not None

    def _listed_images(self) -> list[Path]:
        """The images in natural order; the accepted ones must stay their first ones."""
        folder = self.root / "images"
        if not folder.is_dir():
            return []
        listed = sorted((p for p in folder.iterdir() if _is_image_name(p)),
                        key=lambda p: natural_key(p.name))
        if listed[:len(self.images)] != self.images:
            late = next(p for p, q in zip(listed, self.images + listed) if p != q)
            raise DataError(f"{late} appeared after later frames were streamed (or an "
                            f"image was removed): a streamed capture's images must be "
                            f"added in name order")
        return listed

    def _pose_source(self) -> Path:
        return self.pose_lines.path if self.pose_lines.path.is_file() else self.root / "poses"

    def _poses(self, listed: list[Path], final: bool) -> list[np.ndarray]:
        """The complete poses so far: ``poses.txt`` lines, else ``poses/<stem>.txt`` of
        the images in order (a file counts once it ends with a newline)."""
        if self.pose_lines.path.is_file() or self.pose_lines.offset:
            return self.pose_lines.read(final)
        folder = self.root / "poses"
        for image in listed[len(self.dir_poses):]:
            path = folder / f"{image.stem}.txt"
            text = path.read_text() if path.is_file() else ""
            if not text or not (final or text.endswith("\n")):
                break
            self.dir_poses.append(read_pose(path))  # the offline reader's parse
        return self.dir_poses


def make_sequence(frame: PosedFrame, K_33: np.ndarray, height: int, width: int, name: str,
                  K_source: str) -> PosedSequence:
    """The sequence of a stream, from its first frame (it grows by :func:`extend`)."""
    return PosedSequence([frame], K_33, height, width, name=name, K_source=K_source)


def extend(seq: PosedSequence, frame: PosedFrame) -> None:
    """Append a streamed frame to ``seq`` (its items are read as any sequence's)."""
    seq.frames.append(frame)
    seq.poses.append(frame.world_T_cam_44)
