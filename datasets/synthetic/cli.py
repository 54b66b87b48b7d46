"""``python -m datasets.synthetic``: the generator's command line."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Optional, Sequence

from datasets.synthetic.writer import LAYOUTS, generate
from utils.config import str2bool


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m datasets.synthetic",
        description="Render synthetic posed RGB-D videos of textured rooms in the ScanNet or "
                    "7-Scenes layout (exact z-depth, camera-to-world poses).")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--layout", choices=LAYOUTS, default="scannet")
    parser.add_argument("--scenes", type=int, default=10)
    parser.add_argument("--frames", type=int, default=100, help="frames per scene")
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--camera-speed", "--camera_speed", dest="camera_speed", type=float,
                        default=1.0, help="multiplies the camera's translation per frame")
    parser.add_argument("--val", type=int, default=1,
                        help="scenes held out for validation (ScanNet layout)")
    parser.add_argument("--test", type=int, default=1,
                        help="scenes held out for testing (ScanNet layout)")
    parser.add_argument("--workers", type=int, default=None,
                        help="parallel processes (default: one per CPU)")
    parser.add_argument("--jpeg-quality", "--jpeg_quality", dest="jpeg_quality", type=int,
                        default=95, help="JPEG quality of ScanNet-layout colour images")
    # True/False values as every other entry point takes them; a bare --overwrite still works
    parser.add_argument("--overwrite", type=str2bool, nargs="?", const=True, default=False,
                        metavar="BOOL", help="replace existing scene folders")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    generate(args.out, args.layout, args.scenes, args.frames, args.height, args.width, args.seed,
             args.val, args.test, args.workers, args.overwrite, args.jpeg_quality,
             args.camera_speed)
