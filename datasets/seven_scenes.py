"""7-Scenes: evaluation frame sequences and the list of official test sequences.

Layout (the official one)::

    <root>/<scene>/<seq>/frame-%06d.color.png   640x480 RGB
                         frame-%06d.depth.png   uint16 millimetres; 0 and 65535 invalid
                         frame-%06d.pose.txt    4x4 camera-to-world
                         camera-intrinsics.txt  optional 3x3 (also looked for in <scene>/
                                                and <root>/)

Sequence lists (``data/7scenes/test.txt``) hold one ``<scene>/<seq>`` per line.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Optional, Sequence

from datasets.intrinsics import OFFICIAL_HW, OFFICIAL_K_33, SEVEN_SCENES_HW, SEVEN_SCENES_K_33
from datasets.io import DataError, listed_dirs, read_intrinsics
from datasets.sequence import (FrameFiles, PosedSequence, index_files, pair_frame_files,
                               read_scan_frames)

INTRINSICS_MODES = ("official", "dataset")
INTRINSICS_FILENAME = "camera-intrinsics.txt"
# The 18 test sequences of the paper (official data/7scenes/test.txt).
TEST_LIST = Path(__file__).resolve().parents[1] / "data" / "7scenes" / "test.txt"


def seven_scenes_frame_files(seq_dir: Path, frame_id: int) -> FrameFiles:
    """The file names of one 7-Scenes frame."""
    stem = seq_dir / f"frame-{frame_id:06d}"
    return FrameFiles(frame_id, Path(f"{stem}.color.png"), Path(f"{stem}.depth.png"),
                      Path(f"{stem}.pose.txt"))


def is_sequence_dir(path: Path | str) -> bool:
    """Whether ``path`` directly holds 7-Scenes frames."""
    path = Path(path)
    return path.is_dir() and any(path.glob("frame-*.color.png"))


def list_seven_scenes_frames(seq_dir: Path | str) -> list[FrameFiles]:
    """Every frame of a sequence sorted by frame number (colour and pose must pair up)."""
    seq_dir = Path(seq_dir)
    files = partial(seven_scenes_frame_files, seq_dir)
    colors = index_files(seq_dir, r"frame-(\d+)\.color\.png", lambda i: files(i).color.name)
    poses = index_files(seq_dir, r"frame-(\d+)\.pose\.txt", lambda i: files(i).pose.name)
    return pair_frame_files(colors, poses, files, seq_dir)


def list_sequences(path: Path | str, list_file: Optional[Path | str] = TEST_LIST) -> list[Path]:
    """Sequence folders to evaluate.

    ``path`` is either one sequence folder (returned alone) or the dataset root, in which
    case ``list_file`` names the sequences (``<scene>/<seq>`` per line; the official 18 by
    default) and each must exist.
    """
    if is_sequence_dir(path):
        return [Path(path)]
    if list_file is None:
        raise DataError(f"{path} is not a 7-Scenes sequence folder and no list file was given")
    return listed_dirs(path, list_file)


def seven_scenes_intrinsics(seq_dir: Path, mode: str):
    """``(K_33, K_hw, source)``; ``K_hw=None`` means the colour images' native size.

    ``"official"``: the ScanNet values the official code uses for 7-Scenes too.
    ``"dataset"``: ``camera-intrinsics.txt`` from the sequence folder or its two parents
    (colour-image size), else the documented 7-Scenes constants at 640x480.
    """
    if mode == "official":
        return OFFICIAL_K_33, OFFICIAL_HW, "official"
    if mode == "dataset":
        for folder in (seq_dir, seq_dir.parent, seq_dir.parent.parent):
            path = folder / INTRINSICS_FILENAME
            if path.is_file():
                return read_intrinsics(path), None, str(path)
        return SEVEN_SCENES_K_33, SEVEN_SCENES_HW, "7-Scenes constants"
    raise ValueError(f"intrinsics must be one of {INTRINSICS_MODES}, got {mode!r}")


class SevenScenesSequence(PosedSequence):
    """Evaluation frames of one 7-Scenes sequence; see :class:`datasets.sequence.PosedSequence`.

    Defaults follow the official evaluation loader (``SevenScenesSeq``): every 10th frame,
    ground truth valid in 0.01..5 m at native resolution, the official intrinsics.
    """

    def __init__(self, seq_dir: Path | str, height: int = 256, width: int = 320,
                 frame_interval: int = 10, depth_min: float = 0.01, depth_max: float = 5.0,
                 intrinsics: str = "official", depth_size: Optional[Sequence[int]] = None):
        seq_dir = Path(seq_dir)
        K_33, K_hw, source = seven_scenes_intrinsics(seq_dir, intrinsics)
        frames, skipped = read_scan_frames(list_seven_scenes_frames(seq_dir), frame_interval,
                                           str(seq_dir))
        super().__init__(frames, K_33, height, width, K_hw=K_hw, depth_min=depth_min,
                         depth_max=depth_max, depth_size=depth_size, name=str(seq_dir),
                         K_source=source, skipped_nonfinite=len(skipped))
