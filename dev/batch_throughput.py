"""Evaluation frames/s against ``--batch_sequences``, on a synthetic test split.

    python -m dev.batch_throughput --layout 7scenes --scenes 18 --batch 1,2,6
    python -m dev.batch_throughput --layout scannet --scenes 100 --batch 1,4,16

Renders ``--scenes`` synthetic test sequences (the 7-Scenes test list has 18 sequences,
the ScanNet test split 100 scenes) of ``--frames`` frames each, evaluates a checkpoint
(``--loadckpt``, or a random model of the demo's size) in ESTM and Joint mode once per
batch size, and prints frames/s (wall and CPU time) with the largest depth difference
from the one-at-a-time run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from datasets.synthetic.writer import generate
from evaluation.run import evaluate_command_line
from models.depthnet import DepthNetHybrid
from utils.checkpoint import save_checkpoint

SMALL = {"resnet": 18, "ndepths": 8, "depth_min": 0.5, "depth_max": 6.0, "height": 128,
         "width": 160, "IF_EST_transformer": True}


def random_checkpoint(path: Path) -> str:
    """A random model of the demo's size, saved as training saves it."""
    torch.manual_seed(0)
    model = DepthNetHybrid(**{k: SMALL[k] for k in ("resnet", "ndepths", "depth_min",
                                                    "depth_max", "IF_EST_transformer")})
    save_checkpoint(str(path), model, config=SMALL)
    return str(path)


def split(root: Path, layout: str, scenes: int, frames: int) -> list:
    """The evaluation options of a rendered test split of ``scenes`` sequences."""
    generate(root, layout, scenes=scenes, frames=frames, height=120, width=160, seed=0,
             val=0, test=scenes, workers=1)
    if layout == "7scenes":
        return ["--eval_dataset", "7scenes", "--testlist", str(root / "splits" / "test.txt"),
                "--intrinsics", "dataset"]
    return ["--eval_dataset", "synthetic", "--testlist",
            str(root / "splits" / "test_split.txt")]


def timed_run(mode: str, argv: list) -> tuple[dict, float, float]:
    """``(result, wall s, CPU s)`` of one evaluation."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = evaluate_command_line(mode, argv)
    return result, time.perf_counter() - wall, time.process_time() - cpu


def warm_up(tmp: Path, common: list, modes: list) -> None:
    """One unmeasured evaluation of the first sequence per mode (allocator and kernel
    caches warm before the first measured run)."""
    testlist = common[common.index("--testlist") + 1]
    first = tmp / "first.txt"
    first.write_text(Path(testlist).read_text().splitlines()[0] + "\n")
    for mode in modes:
        evaluate_command_line(mode, [*common, "--testlist", str(first), "--evalpath",
                                     str(tmp / "warm_up")])


def largest_difference(a: Path, b: Path) -> float:
    """Largest absolute difference between the ``.npy`` files of two run folders."""
    files = sorted(p.relative_to(a) for p in a.rglob("*.npy"))
    if files != sorted(p.relative_to(b) for p in b.rglob("*.npy")):
        raise RuntimeError(f"{a} and {b} hold different files")
    return max(float(np.abs(np.load(a / f) - np.load(b / f)).max()) for f in files)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layout", choices=("7scenes", "scannet"), default="7scenes")
    parser.add_argument("--scenes", type=int, default=18)
    parser.add_argument("--frames", type=int, default=12, help="frames per sequence")
    parser.add_argument("--batch", default="1,4", help="batch sizes, comma-separated")
    parser.add_argument("--modes", default="estm,joint")
    parser.add_argument("--loadckpt", default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1, help="frame-reading threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    sizes = [int(b) for b in args.batch.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = split(tmp / "data", args.layout, args.scenes, args.frames)
        ckpt = args.loadckpt or random_checkpoint(tmp / "random.ckpt")
        print(f"{args.layout}: {args.scenes} sequences of {args.frames} frames, device "
              f"{args.device}, {args.threads} thread(s)")
        common = [*data, "--datapath", str(tmp / "data"), "--loadckpt", ckpt, "--device",
                  args.device, "--metrics", "False", "--save_images", "False",
                  "--frame_interval", "1", "--num_workers", str(args.workers),
                  "--log_level", "WARNING"]
        warm_up(tmp, common, args.modes.split(","))
        print("mode   batch  frames   wall s  frames/s   CPU s  CPU frames/s  max |diff| m")
        for mode in args.modes.split(","):
            for size in sizes:
                out = tmp / f"{mode}_{size}"
                result, wall, cpu = timed_run(mode, [*common, "--evalpath", str(out),
                                                     "--batch_sequences", str(size)])
                frames = sum(s["frames"] for s in result["scenes"].values())
                diff = largest_difference(tmp / f"{mode}_{sizes[0]}" / mode, out / mode)
                print(f"{mode:6} {size:5d} {frames:7d} {wall:8.1f} {frames / wall:9.2f} "
                      f"{cpu:7.1f} {frames / cpu:13.2f} {diff:13.2e}", flush=True)


if __name__ == "__main__":
    main()
