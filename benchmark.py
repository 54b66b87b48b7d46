"""Time ESTDepth on this machine: an ESTM window, a Joint window and a training step.

    python benchmark.py                        # the paper's configuration (ResNet-50, 64 planes, 256x320)
    python benchmark.py --device cpu --resnet 18 --ndepths 16 --height 128 --width 160

Inputs are random (timings do not depend on the pixels). Prints the median time of
``--iters`` repetitions, and the peak GPU memory on CUDA.
"""

import statistics
import time

import torch

from models import DepthNetHybrid
from models.memory import MemoryBuffer
from utils.config import load_config
from utils.distributed import resolve_device

AMP = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def random_window(frames: int, height: int, width: int, device):
    """A window of random images with a small sideways camera motion."""
    imgs = torch.rand(1, frames, 3, height, width, device=device) * 255
    poses = torch.eye(4, device=device).repeat(1, frames, 1, 1)
    poses[..., 0, 3] = 0.1 * torch.arange(frames, device=device)
    K = torch.tensor([[0.9 * width, 0, width / 2 - 0.5], [0, 0.9 * width, height / 2 - 0.5],
                      [0, 0, 1]], device=device)[None]
    depth = 1 + 3 * torch.rand(1, frames, 1, height, width, device=device)
    return imgs, poses, K, {"dmaps": depth, "dmasks": depth > 0}


def timed(fn, iters: int, device) -> float:
    """Median seconds of ``fn()`` over ``iters`` runs, after two untimed ones."""
    times = []
    for i in range(iters + 2):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= 2:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None) -> dict:
    args = load_config("benchmark", argv, description=__doc__)
    device = resolve_device(args.device)
    dtype = AMP[args.amp]
    model = DepthNetHybrid(ndepths=args.ndepths, depth_min=args.depth_min,
                           depth_max=args.depth_max, resnet=args.resnet,
                           IF_EST_transformer=args.IF_EST_transformer).to(device)
    autocast = lambda: torch.autocast(device.type, dtype=dtype or torch.float32,  # noqa: E731
                                      enabled=dtype is not None)

    def infer(frames: int, memory_size: int):
        imgs, poses, K, _ = random_window(frames, args.height, args.width, device)
        memory = MemoryBuffer(memory_size)
        with torch.no_grad(), autocast():
            for _ in range(memory_size):  # fill the memory first
                memory.push(*model.eval()(imgs, poses, K, None, mode="val")[1:])
        def run():
            with torch.no_grad(), autocast():
                model.eval()(imgs, poses, K, None, *memory.as_inputs(), mode="val")
        return run

    def train_step():
        imgs, poses, K, sample = random_window(5, args.height, args.width, device)
        def run():
            model.train().zero_grad(set_to_none=True)
            with autocast():
                _, losses = model(imgs, poses, K, sample, mode="train")
            losses["loss"].backward()
        return run

    results = {"estm_window_s": timed(infer(3, 2), args.iters, device),
               "joint_window_s": timed(infer(5, 1), args.iters, device),
               "train_step_s": timed(train_step(), args.iters, device)}
    print(f"ResNet-{args.resnet}, {args.ndepths} planes, {args.height}x{args.width}, "
          f"EST {'on' if args.IF_EST_transformer else 'off'}, {device}, amp {args.amp}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    labels = {"estm_window_s": "ESTM window (3 frames, 1 target, 2 memories)",
              "joint_window_s": "Joint window (5 frames, 3 targets, 1 memory)",
              "train_step_s": "training step (5 frames, forward + backward)"}
    for key, label in labels.items():
        print(f"  {label}: {results[key] * 1e3:8.1f} ms")
    if device.type == "cuda":
        results["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2 ** 30
        print(f"  peak GPU memory: {results['peak_memory_gib']:.2f} GiB")
    return results


if __name__ == "__main__":
    main()
