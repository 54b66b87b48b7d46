"""Export a ScanNet ``.sens`` file into the layout the ScanNet loaders read.

    python -m datasets.scannet_export scene0707_00.sens /data/scannet_test/scene0707_00 \\
        [--frame_skip 1]

writes ``rgb/<i>.jpg`` (the stored JPEG bytes, not re-encoded), ``depth/<i>.png`` (uint16,
millimetres for the usual depth shift 1000), ``pose/<i>.txt`` (4x4 camera-to-world) for
every ``frame_skip``-th frame ``i`` (named by its index in the file, as ScanNet's own
exporter does), and ``intrinsic/{intrinsic,extrinsic}_{color,depth}.txt``. Every file is
written atomically and a frame whose three files exist is not written again, so an
interrupted export resumes; ``.export_started.json`` (naming the source) is written first,
``.export_done.json`` last. A folder holding another ``.sens`` file's export is refused
unless ``--overwrite`` (which deletes it); the output folder is locked while exporting.

The ``.sens`` format (ScanNet's ``SensorData``, version 4), little-endian::

    uint32 version (4) | uint64 n, char[n] sensor name
    float32[16] x 4    intrinsic_color, extrinsic_color, intrinsic_depth, extrinsic_depth
    int32 color compression (2 = jpeg) | int32 depth compression (1 = zlib_ushort)
    uint32 color width, color height, depth width, depth height | float32 depth shift
    uint64 number of frames, then per frame:
        float32[16] camera_to_world | uint64 timestamp color, timestamp depth
        uint64 color bytes, depth bytes | color data | depth data
    (IMU data follows; not needed)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import shutil
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator, Optional

import cv2
import numpy as np
from tqdm import tqdm

from datasets.io import DataError, not_found
from utils.io import atomic_open, folder_lock, remove_stale_temps, save_json, save_text
from utils.paths import check_apart

logger = logging.getLogger(__name__)

SENS_VERSION = 4
COLOR_COMPRESSION = {-1: "unknown", 0: "raw", 1: "png", 2: "jpeg"}
DEPTH_COMPRESSION = {-1: "unknown", 0: "raw_ushort", 1: "zlib_ushort", 2: "occi_ushort"}
DONE_FILE = ".export_done.json"
STARTED_FILE = ".export_started.json"
FRAME_HEADER_BYTES = 16 * 4 + 4 * 8  # pose, two timestamps, two sizes
EXPORTED = ("rgb", "depth", "pose", "intrinsic", DONE_FILE, STARTED_FILE)


@dataclass
class SensHeader:
    sensor_name: str
    intrinsic_color: np.ndarray
    extrinsic_color: np.ndarray
    intrinsic_depth: np.ndarray
    extrinsic_depth: np.ndarray
    color_compression: int
    depth_compression: int
    color_width: int
    color_height: int
    depth_width: int
    depth_height: int
    depth_shift: float
    num_frames: int


@dataclass
class SensFrame:
    camera_to_world: np.ndarray
    timestamp_color: int
    timestamp_depth: int
    color_bytes: bytes
    depth_bytes: bytes


def _read(f: BinaryIO, fmt: str, path: Path):
    size = struct.calcsize(fmt)
    data = f.read(size)
    if len(data) != size:
        raise DataError(f"{path}: truncated .sens file (ended at byte {f.tell()})")
    return struct.unpack(fmt, data)


def _remaining(f: BinaryIO) -> int:
    """Bytes from the position to the end of ``f`` (the position is kept)."""
    here = f.tell()
    end = f.seek(0, io.SEEK_END)
    f.seek(here)
    return end - here


def _check_room(f: BinaryIO, count: int, what: str, path: Path) -> None:
    # a corrupt size field (e.g. 2**62) must be an error naming the file, not a MemoryError
    left = _remaining(f)
    if count > left:
        raise DataError(f"{path}: truncated or corrupt .sens file: {what} claims {count} "
                        f"bytes at byte {f.tell()}, only {left} are left")


def _read_bytes(f: BinaryIO, count: int, path: Path, what: str = "a frame's data") -> bytes:
    _check_room(f, count, what, path)
    data = f.read(count)
    if len(data) != count:
        raise DataError(f"{path}: truncated .sens file (a frame's data ends early)")
    return data


def read_header(f: BinaryIO, path: Path) -> SensHeader:
    (version,) = _read(f, "<I", path)
    if version != SENS_VERSION:
        raise DataError(f"{path}: .sens version {version}, only version {SENS_VERSION} "
                        f"(ScanNet's SensorData) is read")
    (length,) = _read(f, "<Q", path)
    name = _read_bytes(f, length, path, "the sensor name").decode("utf-8", "replace")
    mats = [np.array(_read(f, "<16f", path), dtype=np.float64).reshape(4, 4) for _ in range(4)]
    color_c, depth_c = _read(f, "<ii", path)
    cw, ch, dw, dh = _read(f, "<4I", path)
    (shift,) = _read(f, "<f", path)
    (count,) = _read(f, "<Q", path)
    header = SensHeader(name, *mats, color_c, depth_c, cw, ch, dw, dh, shift, count)
    if color_c != 2:
        raise DataError(f"{path}: colour compression {COLOR_COMPRESSION.get(color_c, color_c)}"
                        f", only jpeg is exported")
    if depth_c != 1:
        raise DataError(f"{path}: depth compression {DEPTH_COMPRESSION.get(depth_c, depth_c)}"
                        f", only zlib_ushort is exported")
    return header


def iter_frames(f: BinaryIO, header: SensHeader, path: Path,
                wanted=lambda i: True) -> Iterator[tuple[int, Optional[SensFrame]]]:
    """``(index, frame)`` for every frame; ``frame`` is None (data skipped) if not wanted."""
    _check_room(f, header.num_frames * FRAME_HEADER_BYTES,
                f"{header.num_frames} frames (their headers)", path)
    for index in range(header.num_frames):
        pose = np.array(_read(f, "<16f", path), dtype=np.float64).reshape(4, 4)
        t_color, t_depth, n_color, n_depth = _read(f, "<4Q", path)
        _check_room(f, n_color + n_depth, f"frame {index}", path)
        if not wanted(index):
            f.seek(n_color + n_depth, 1)
            yield index, None
            continue
        color = _read_bytes(f, n_color, path)
        depth = _read_bytes(f, n_depth, path)
        yield index, SensFrame(pose, t_color, t_depth, color, depth)


def decode_depth(frame: SensFrame, header: SensHeader, path: Path, index: int) -> np.ndarray:
    """uint16 ``[depth_height, depth_width]`` in the file's units (``depth_shift`` per m)."""
    try:
        raw = zlib.decompress(frame.depth_bytes)
    except zlib.error as err:
        raise DataError(f"{path}: frame {index}: corrupt zlib depth ({err})") from None
    expected = header.depth_width * header.depth_height * 2
    if len(raw) != expected:
        raise DataError(f"{path}: frame {index}: depth has {len(raw)} bytes, expected "
                        f"{expected} ({header.depth_width}x{header.depth_height} uint16)")
    return np.frombuffer(raw, dtype="<u2").reshape(header.depth_height, header.depth_width)


def _matrix_text(matrix: np.ndarray) -> str:
    return "\n".join(" ".join(f"{v:.9g}" for v in row) for row in matrix) + "\n"


def frame_paths(out: Path, index: int) -> tuple[Path, Path, Path]:
    return out / "rgb" / f"{index}.jpg", out / "depth" / f"{index}.png", out / "pose" / f"{index}.txt"


def _recorded_source(out: Path) -> Optional[str]:
    """The ``.sens`` file an earlier export into ``out`` names (done marker, else start)."""
    for name in (DONE_FILE, STARTED_FILE):
        try:
            return json.loads((out / name).read_text())["sens"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return None


def claim_output(out: Path, sens_path: Path, overwrite: bool) -> None:
    """Make ``out`` this export's: refuse (or, with ``overwrite``, delete) another source's
    export, clear what a killed writer left, and record the source before any frame."""
    other = _recorded_source(out)
    # by file name: a moved .sens file still resumes its own export
    if other is not None and Path(other).name != sens_path.name:
        if not overwrite:
            raise DataError(f"{out} holds the export of another .sens file ({other}); export "
                            f"{sens_path} elsewhere, or pass --overwrite to replace it")
        for name in EXPORTED:
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
        logger.warning("--overwrite: removed the export of %s from %s", other, out)
    for path in remove_stale_temps(str(out), recursive=True):
        logger.info("removed %s, left by a killed export", path)
    with contextlib.suppress(FileNotFoundError):
        (out / DONE_FILE).unlink()  # unfinished again until this export ends
    save_json({"sens": str(sens_path)}, str(out / STARTED_FILE))


def unfinished_export(folder) -> Optional[str]:
    """Why ``folder`` is a half-written export of this module, else None (also for folders
    exported by other tools, which have no markers)."""
    folder = Path(folder)
    if (folder / STARTED_FILE).is_file() and not (folder / DONE_FILE).is_file():
        return (f"{folder} is an unfinished export of {_recorded_source(folder)} (no "
                f"{DONE_FILE}); re-run `python -m datasets.scannet_export` to finish it")
    return None


def export(sens_path, out, frame_skip: int = 1, progress: bool = True,
           overwrite: bool = False) -> dict:
    """Export every ``frame_skip``-th frame of ``sens_path`` into ``out`` (resuming).

    Returns:
        ``{"frames": exported, "skipped_existing": ..., "total_frames": ...}``.
    """
    sens_path, out = Path(sens_path), Path(out)
    if frame_skip < 1:
        raise ValueError(f"--frame_skip must be >= 1, got {frame_skip}")
    if not sens_path.is_file():
        raise not_found(sens_path, ".sens file")
    check_apart(out, sens_path)  # an export folder must not swallow or hold its source
    with folder_lock(str(out), "datasets.scannet_export"):
        claim_output(out, sens_path, overwrite)
        with open(sens_path, "rb") as f:
            header = read_header(f, sens_path)
            if abs(header.depth_shift - 1000.0) > 1e-3:
                # Our depth PNGs are millimetres; other units would be silently misread.
                raise DataError(f"{sens_path}: depth shift {header.depth_shift}, only 1000 "
                                f"(millimetres) is exported")
            for name in ("intrinsic_color", "extrinsic_color", "intrinsic_depth",
                         "extrinsic_depth"):
                save_text(_matrix_text(getattr(header, name)),
                          str(out / "intrinsic" / f"{name}.txt"))
            written, existing = _export_frames(f, header, sens_path, out, frame_skip, progress)
        summary = {"sens": str(sens_path), "sensor": header.sensor_name,
                   "total_frames": header.num_frames, "frame_skip": frame_skip,
                   "frames": written + existing, "written": written,
                   "skipped_existing": existing,
                   "color_hw": [header.color_height, header.color_width],
                   "depth_hw": [header.depth_height, header.depth_width]}
        save_json(summary, str(out / DONE_FILE))
    logger.info("%s: %d frames exported to %s (%d already there)", sens_path, written, out,
                existing)
    return summary


def _export_frames(f: BinaryIO, header: SensHeader, sens_path: Path, out: Path,
                   frame_skip: int, progress: bool) -> tuple[int, int]:
    """Write the wanted frames not yet there; returns ``(written, already there)``."""
    written = existing = 0

    def wanted(index):
        return index % frame_skip == 0 and not all(p.is_file() for p in frame_paths(out, index))

    bar = tqdm(total=header.num_frames, desc=sens_path.name, unit="frame",
               disable=not progress)
    for index, frame in iter_frames(f, header, sens_path, wanted):
        bar.update(1)
        if frame is None:
            existing += index % frame_skip == 0
            continue
        color_path, depth_path, pose_path = frame_paths(out, index)
        depth = decode_depth(frame, header, sens_path, index)
        ok, png = cv2.imencode(".png", depth)
        if not ok:
            raise DataError(f"{sens_path}: frame {index}: cannot encode depth")
        # Colour and depth first, the pose last: the pose marks a complete frame for
        # the loaders, the three files together for resuming.
        with atomic_open(str(color_path)) as g:
            g.write(frame.color_bytes)
        with atomic_open(str(depth_path)) as g:
            g.write(png.tobytes())
        save_text(_matrix_text(frame.camera_to_world), str(pose_path))
        written += 1
    bar.close()
    return written, existing


# ----------------------------------------------------------------------- writing (tests)
def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sens", help="the scene's .sens file")
    parser.add_argument("out", help="output scene folder (rgb/, depth/, pose/, intrinsic/)")
    parser.add_argument("--frame_skip", type=int, default=1,
                        help="export every n-th frame (files keep the frame's index)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an export of another .sens file in the output folder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return export(args.sens, args.out, args.frame_skip, overwrite=args.overwrite)


if __name__ == "__main__":
    main()
