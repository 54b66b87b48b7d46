"""Worker of tests/test_distributed.py (gloo, CPU) and tests/test_cuda.py (NCCL,
``--device cuda``), launched with torchrun.

For each configuration ``est{0,1}_seq{3,5}``: build the model with components.build_model,
wrap it with components.wrap_ddp, take 3 Adam steps, rank r training on window r of each
step, and write to ``<out>/<config>.json``: whether the ranks ended with identical
parameters, the first step's DDP gradient against a 1-process gradient on the
concatenated batch (computed by this worker without the process group), and the frozen
parameters. With ``--datapath``, also build the training index under
``main_process_first`` and record how many scenes each rank scanned.
"""

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from training import components
from utils import distributed as dist_utils  # noqa: E402
from utils.config import load_config  # noqa: E402

SIZE = 128
STEPS = 3


def window(step: int, index: int, frames: int, device="cpu"):
    """A deterministic random window with a sideways camera motion, all depths valid."""
    g = torch.Generator().manual_seed(1000 * step + index)
    imgs = torch.rand(1, frames, 3, SIZE, SIZE, generator=g) * 255
    poses = torch.eye(4).repeat(1, frames, 1, 1)
    poses[..., 0, 3] = 0.05 * torch.arange(frames)
    intr = torch.tensor([[[100.0, 0, 63.5], [0, 100.0, 63.5], [0, 0, 1]]])
    dmaps = 1 + 3 * torch.rand(1, frames, 1, SIZE, SIZE, generator=g)
    sample = {"dmaps": dmaps.to(device), "dmasks": torch.ones_like(dmaps, dtype=bool).to(device)}
    return imgs.to(device), poses.to(device), intr.to(device), sample


def concat(windows):
    imgs, poses, intr, samples = zip(*windows)
    return (torch.cat(imgs), torch.cat(poses), torch.cat(intr),
            {k: torch.cat([s[k] for s in samples]) for k in samples[0]})


def model_args(est: bool, seq_len: int):
    return load_config("train", ["--device", "cpu", "--resnet", "18", "--ndepths", "4",
                                 "--depth_min", "0.5", "--depth_max", "5",
                                 "--IF_EST_transformer", str(est), "--seq_len", str(seq_len)])


def build(args, env):
    torch.manual_seed(0)  # same initial weights on every rank and in the reference
    model = components.build_model(args.model, args.train, env)
    # Batch norm from its running statistics: per-rank batch statistics (batch 1) would
    # differ from the concatenated batch's, so the comparison would not be exact.
    model.eval()
    trainable = [p for p in model.parameters() if p.requires_grad]
    return model, torch.optim.Adam(trainable, lr=1e-4)


def gradients(model) -> dict:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters()
            if p.grad is not None}


def run_config(est: bool, seq_len: int, env, out: Path) -> None:
    args = model_args(est, seq_len)
    model, optimizer = build(args, env)
    net = components.wrap_ddp(model, env)
    first_grads = None
    for step in range(STEPS):
        optimizer.zero_grad(set_to_none=True)
        _, losses = net(*window(step, env.rank, seq_len, env.device), mode="train")
        losses["loss"].backward()
        if step == 0:
            first_grads = gradients(model)
        optimizer.step()
    in_sync = dist_utils.replicas_in_sync(model, env)

    if env.is_main:  # the 1-process reference: step 1 on both windows as one batch of 2
        write_reference_comparison(args, env, first_grads, in_sync, model,
                                   out / f"est{int(est)}_seq{seq_len}.json")


def write_reference_comparison(args, env, ddp_grads, in_sync, model, path: Path) -> None:
    reference, _ = build(args, dist_utils.DistEnv(0, 0, 1, env.device))
    _, losses = reference(*concat([window(0, r, args.seq_len, env.device)
                                   for r in range(env.world_size)]), mode="train")
    losses["loss"].backward()
    want = gradients(reference)
    same = set(want) == set(ddp_grads)
    path.write_text(json.dumps({
        "replicas_in_sync": in_sync, "steps": STEPS, "world_size": env.world_size,
        "same_parameters_with_grad": same, "with_grad": len(want),
        "max_grad_diff": max((ddp_grads[n] - want[n]).abs().max().item() for n in want)
        if same else None,
        "max_grad": max(g.abs().max().item() for g in want.values()),
        "frozen": sorted(n for n, p in model.named_parameters() if not p.requires_grad)}))


def count_index_builds(datapath: str, env, out: Path) -> None:
    import datasets.scannet as scannet

    calls = []
    real = scannet.build_scene_index

    def counting(*a, **k):
        calls.append(a[0])
        return real(*a, **k)

    scannet.build_scene_index = counting
    args = load_config("train", ["--dataset", "synthetic", "--datapath", datapath,
                                 "--height", str(SIZE), "--width", str(SIZE), "--seq_len", "3",
                                 "--frame_interval", "2", "--depth_min", "0.5",
                                 "--depth_max", "6", "--reloadscan", "True"])
    with dist_utils.main_process_first(env):
        dataset = components.build_dataset(args, reloadscan=args.reloadscan and env.is_main)
    counts = dist_utils.gather_objects(len(calls), env)
    sizes = dist_utils.gather_objects(len(dataset), env)
    if env.is_main:
        (out / "index.json").write_text(json.dumps({"scans_by_rank": counts,
                                                    "windows_by_rank": sizes}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--configs", nargs="+", default=["1:3", "1:5", "0:3", "0:5"])
    parser.add_argument("--datapath", default=None)
    parser.add_argument("--device", default="cpu", help="cpu (gloo) or cuda (NCCL)")
    opts = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(opts.out)
    env = dist_utils.init_distributed(opts.device)
    if env.device.type == "cuda":
        from models import precision

        precision.configure_tf32(False)  # compare float32 with float32
    try:
        if opts.datapath:
            count_index_builds(opts.datapath, env, out)
        for config in opts.configs:
            est, seq_len = config.split(":")
            run_config(est == "1", int(seq_len), env, out)
    finally:
        dist_utils.cleanup()


if __name__ == "__main__":
    main()
