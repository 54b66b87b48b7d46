"""How far mixed precision moves the depths of the official fixture (models/precision.py).

Replays the six ESTM windows and the two Joint windows of the official fixture
(``$ESTDEPTH_SHARED/reference/estdepth_r18_128x160.pt``, default ``../shared``) in float32
and under autocast, and prints per scale the mean, 99th percentile and maximum of
|depth - official float32 depth| in metres:

    ESTDEPTH_SHARED=../shared python -m dev.precision_error --amp bf16 --device cpu
    python -m dev.precision_error --amp fp16 --emulate     # fp16 rounding emulated on a CPU
    python -m dev.precision_error --device cuda --amp fp16
    python -m dev.precision_error --no_policy              # plain autocast, for comparison

tests/test_precision.py and tests/test_cuda.py hold these figures to their bounds.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch
from torch import nn

from models import precision
from models.depthnet import DepthNetHybrid
from models.memory import MemoryBuffer
from utils.options import ModelOptions, from_mapping

# Modules of each convolution region of the policy (for the CPU emulation below).
REGION_MODULES = {"matching": ("matchingFeature.",), "context": ("semanticFeature.",),
                  "cost_fusion": ("pre0.", "pre1.", "pre2."),
                  "cost_filter": ("CostRegNet.dres0.", "CostRegNet.dres1."),
                  "logits": ("CostRegNet.stereo_head0.1", "CostRegNet.stereo_head1.1"),
                  "disparity": ("CostRegNet.dispconv_",)}


def load_reference(path: Path) -> dict:
    """The fixture with float32 weights."""
    reference = torch.load(path, weights_only=False)
    reference["weights"] = {k: v.float() if v.is_floating_point() else v
                            for k, v in reference["weights"].items()}
    return reference


def fixture_model(reference, device="cpu") -> DepthNetHybrid:
    cfg = reference["config"]
    model = DepthNetHybrid.from_options(from_mapping(ModelOptions, cfg), reference["weights"],
                                        source="the reference fixture")
    return model.to(device).eval()


def replay(model, reference, dtype=None):
    """(outputs, memories) of the six ESTM windows and the two Joint windows, under
    autocast ``dtype`` (None: float32), in the order of the fixture's records."""
    device = next(model.parameters()).device
    inputs = reference["inputs"]

    def window(first, last):
        s = slice(first, last + 1)
        return (inputs["imgs"][:, s].float().to(device), inputs["cam_poses"][:, s].to(device),
                inputs["cam_intr"].to(device))

    outputs, memories = [], []
    with torch.no_grad(), precision.autocast(device.type, dtype):
        for size, firsts, frames in ((2, range(6), 3), (1, (0, 3), 5)):
            memory = MemoryBuffer(size)
            for first in firsts:
                out, costs, poses = model(*window(first, first + frames - 1), None,
                                          *memory.as_inputs(), mode="val")
                memory.push(costs, poses)
                outputs.append(out)
                memories.append(costs)
    return outputs, memories


def recorded_outputs(reference) -> list:
    """The official float32 outputs in :func:`replay`'s order, keys as tuples."""
    windows = list(reference["estm"]["windows"]) + list(reference["joint"]["windows"])
    return [{eval(k): v for k, v in w.items()} for w in windows]


def depth_errors(outputs: list, expected: list) -> dict:
    """Per scale: (mean, 99th percentile, max) of |depth - expected depth| in metres."""
    figures = {}
    for s in range(4):
        err = torch.cat([(out[key].float().cpu() - want[key]).abs().flatten()
                         for out, want in zip(outputs, expected)
                         for key in want if key[0] == "depth" and key[2] == s])
        figures[s] = (err.mean().item(), err.quantile(0.99).item(), err.max().item())
    return figures


def emulate_reduced_precision(model, dtype) -> None:
    """Round, in place and by hooks, what autocast in ``dtype`` would round under the policy:
    every convolution's weights, inputs and outputs and every norm/activation output,
    outside the float32 regions. A float32 model then behaves like autocast in ``dtype``
    (for bf16 it reproduces the real figures within 2%): fp16 figures without a GPU."""
    fp32 = tuple(p for region, prefixes in REGION_MODULES.items()
                 if precision.POLICY[region][dtype] == precision.FP32 for p in prefixes)
    rnd = lambda x: x.to(dtype).float() if torch.is_tensor(x) else x  # noqa: E731
    for name, module in model.named_modules():
        if name.startswith(fp32):
            continue
        if isinstance(module, (nn.Conv2d, nn.Conv3d)):
            with torch.no_grad():
                module.weight.copy_(rnd(module.weight))
            module.register_forward_pre_hook(lambda m, inputs: tuple(map(rnd, inputs)))
            module.register_forward_hook(lambda m, inputs, out: rnd(out))
        elif isinstance(module, (nn.BatchNorm2d, nn.BatchNorm3d, nn.GroupNorm, nn.ReLU,
                                 nn.Tanh)):
            module.register_forward_hook(lambda m, inputs, out: rnd(out))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--amp", default="bf16", choices=["bf16", "fp16"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--emulate", action="store_true",
                        help="float32 with the rounding of --amp emulated (fp16 on a CPU)")
    parser.add_argument("--no_policy", action="store_true",
                        help="every region in the autocast dtype (plain autocast, for comparison)")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.no_policy:
        for region in precision.POLICY:
            precision.POLICY[region] = {torch.float16: precision.REDUCED,
                                        torch.bfloat16: precision.REDUCED}
    torch.set_num_threads(args.threads)
    root = Path(__file__).resolve().parents[1]
    shared = Path(os.environ.get("ESTDEPTH_SHARED", root.parent / "shared"))
    reference = load_reference(shared / "reference" / "estdepth_r18_128x160.pt")
    model = fixture_model(reference, args.device)
    precision.configure_tf32(False)
    fp32 = depth_errors(replay(model, reference)[0], recorded_outputs(reference))
    dtype = precision.amp_dtype(args.amp)
    if args.emulate:
        emulate_reduced_precision(model, dtype)
    amp = depth_errors(replay(model, reference, None if args.emulate else dtype)[0],
                       recorded_outputs(reference))
    label = f"{args.amp}{' (emulated)' if args.emulate else ''}"
    for name, figures in (("fp32", fp32), (label, amp)):
        for s, (mean, p99, worst) in figures.items():
            print(f"{name} vs official fp32, scale {s}: mean {mean:.4f} m, p99 {p99:.4f} m, "
                  f"max {worst:.4f} m")


if __name__ == "__main__":
    main()
