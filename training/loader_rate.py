"""The training loader's rate alone (``benchmark.py --loader``): decode, resize, stack."""

from __future__ import annotations

import os
import tempfile
import time

import torch


def run_loader(args, train_step_s) -> dict:
    """Samples/s of the training loader alone (decode, resize, stack) at ``--loader_workers``."""
    from torch.utils.data import DataLoader

    from datasets.scannet import ScanNetTrainDataset
    from datasets.synthetic.writer import generate

    tmp = None
    root = args.loader_data
    if not root:
        tmp = tempfile.TemporaryDirectory(prefix="estdepth_loader_")
        root = tmp.name
        # ScanNet's own size; 30 frames at interval 1 give 10 windows of 5 frames.
        generate(root, "scannet", scenes=1, frames=30, height=480, width=640, seed=0, val=0,
                 test=0, workers=1)
    try:
        dataset = ScanNetTrainDataset(root, os.path.join(root, "splits", "train_split.txt"),
                                      height=args.height, width=args.width, n_frames=5,
                                      frame_interval=1 if tmp else args.frame_interval,
                                      intrinsics="scene" if tmp else args.intrinsics)
        sampler = torch.utils.data.RandomSampler(dataset, replacement=True,
                                                 num_samples=args.loader_samples + 1)
        loader = DataLoader(dataset, batch_size=1, sampler=sampler,
                            num_workers=args.loader_workers, pin_memory=False)
        batches = iter(loader)
        next(batches)  # worker start-up is not the steady rate
        start = time.perf_counter()
        count = sum(1 for _ in batches)
        seconds = time.perf_counter() - start
    finally:
        if tmp is not None:
            tmp.cleanup()
    report = {"workers": args.loader_workers, "samples": count, "wall_s": seconds,
              "samples_per_s": count / seconds}
    if train_step_s:
        report["model_samples_per_s"] = 1.0 / train_step_s
        report["loader_vs_model"] = report["samples_per_s"] * train_step_s
    return report
