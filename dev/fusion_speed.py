"""TSDF integration time per frame: the frustum's bounding box against every voxel.

    python -m dev.fusion_speed --dims 160 --voxel_size 0.025 --threads 1

A camera at the volume's centre looking along +z at random depths in 0.5-1.5 m (a 64x48
depth map) is integrated ``--reps`` times both ways; both volumes are checked equal.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from evaluation import fusion


def per_frame_seconds(dims: int, voxel_size: float, reps: int) -> tuple[float, float]:
    """CPU seconds per frame: ``(frustum box, every voxel)``; raises if the volumes differ."""
    K = torch.tensor([[60.0, 0, 31.5], [0, 60.0, 23.5], [0, 0, 1]])
    depth = torch.from_numpy(np.random.default_rng(0).uniform(0.5, 1.5, (48, 64)).astype(
        np.float32))
    origin = [-dims * voxel_size / 2] * 3
    boxed = fusion.TSDFVolume(origin, (dims,) * 3, voxel_size)
    every = fusion.TSDFVolume(origin, (dims,) * 3, voxel_size)
    start = time.process_time()
    for _ in range(reps):
        boxed.integrate(depth.numpy(), K.numpy(), np.eye(4))
    box_s = (time.process_time() - start) / reps
    start = time.process_time()
    for _ in range(reps):
        for first in range(0, every.tsdf.numel(), fusion.VOXEL_CHUNK):
            index = torch.arange(first, min(first + fusion.VOXEL_CHUNK, every.tsdf.numel()))
            every._integrate_voxels(index, depth, K, torch.eye(4))
    every_s = (time.process_time() - start) / reps
    if not torch.equal(boxed.tsdf, every.tsdf):
        raise RuntimeError("the frustum box changed the volume")
    return box_s, every_s


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dims", type=int, default=160, help="voxels along each axis")
    parser.add_argument("--voxel_size", type=float, default=0.025, help="voxel edge (m)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    box_s, every_s = per_frame_seconds(args.dims, args.voxel_size, args.reps)
    print(f"{args.dims}^3 voxels of {args.voxel_size} m: frustum box {box_s * 1000:.0f} ms, "
          f"every voxel {every_s * 1000:.0f} ms per frame (x{every_s / box_s:.1f}, CPU time)")
    return {"box_s": box_s, "every_s": every_s}


if __name__ == "__main__":
    main()
