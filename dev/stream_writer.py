"""Play a finished capture into a folder frame by frame, as a live producer following the
``predict.py --stream`` convention would (datasets/growing.py), to try or test a stream.

    python -m dev.stream_writer SRC DST --interval 0.1

SRC: a folder capture (images/, poses.txt, K.txt) or a 7-Scenes sequence folder
(frame-XXXXXX.color.png / .pose.txt, camera-intrinsics.txt). DST gets the folder format:
K.txt first; then per frame the image written under a hidden name and renamed into
images/, and its pose line appended to poses.txt in two writes (the first half without
its newline, to show a reader a partial line), ``--interval`` seconds apart; the end
marker last.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

import numpy as np


def source_frames(src: Path) -> tuple[list, list, np.ndarray]:
    """``(image paths, pose lines, K_33)`` of a folder capture or a 7-Scenes folder."""
    if (src / "poses.txt").is_file():
        images = sorted(p for p in (src / "images").iterdir() if not p.name.startswith("."))
        lines = [line for line in (src / "poses.txt").read_text().splitlines()
                 if line.strip() and not line.startswith("#")]
        return images, lines, np.loadtxt(src / "K.txt")
    images = sorted(src.glob("frame-*.color.png"))
    lines = [" ".join(f"{v:.9g}" for v in np.loadtxt(
        str(p).replace(".color.png", ".pose.txt")).reshape(16)) for p in images]
    return images, lines, np.loadtxt(src / "camera-intrinsics.txt")


def play(src: Path, dst: Path, interval: float, frames: int = 0, marker: str = "done") -> None:
    """Write ``src``'s frames (the first ``frames``; 0: all) into ``dst`` one by one."""
    images, lines, K = source_frames(src)
    if frames:
        images, lines = images[:frames], lines[:frames]
    (dst / "images").mkdir(parents=True, exist_ok=True)
    np.savetxt(dst / ".K.txt.tmp", K)
    os.replace(dst / ".K.txt.tmp", dst / "K.txt")
    for image, line in zip(images, lines):
        name = image.name.replace(".color", "")
        tmp = dst / "images" / f".{name}.tmp"
        shutil.copyfile(image, tmp)
        os.replace(tmp, dst / "images" / name)
        with open(dst / "poses.txt", "a") as f:
            f.write(line[:len(line) // 2])
            f.flush()
            time.sleep(interval / 2)
            f.write(line[len(line) // 2:] + "\n")
        time.sleep(interval / 2)
    (dst / marker).touch()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", type=Path)
    parser.add_argument("dst", type=Path)
    parser.add_argument("--interval", type=float, default=0.1, help="seconds per frame")
    parser.add_argument("--frames", type=int, default=0, help="only the first N (0: all)")
    parser.add_argument("--marker", default="done", help="end marker file name")
    args = parser.parse_args(argv)
    play(args.src, args.dst, args.interval, args.frames, args.marker)


if __name__ == "__main__":
    main()
