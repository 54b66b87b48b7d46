"""Time the EST ConvGRU's one-group norm: PyTorch's kernel against parallel statistics.

The EST transformer normalises each ``[16, D, H/4, W/4]`` volume as one group
(``nn.GroupNorm(1, 16)``); PyTorch's CUDA kernel gives each (sample, group) one thread
block. This times ``F.group_norm`` and :class:`models.layers.WholeSampleNorm` (the model's
fast layers on a GPU), forward and forward + backward, in float32 and under fp16 autocast:

    python -m tools.group_norm_speed --device cuda        # batch 1 and 3, 64 planes, 64x80
    python -m tools.group_norm_speed --device cpu --planes 4 --height 16 --width 20
"""

import argparse
import json

import torch
import torch.nn.functional as F

from models import precision
from models.hybrid_decoder import KEY_CHANNELS as CHANNELS
from models.layers import WholeSampleNorm
from tools.conv3d_layout import timed


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--planes", type=int, default=64)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=80)
    parser.add_argument("--reps", type=int, default=20)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    norms = {"native": lambda x, w, b: F.group_norm(x, 1, w, b, 1e-5),
             "parallel": lambda x, w, b: WholeSampleNorm.apply(x, w, b, 1e-5)}
    results = {}
    for amp in ("none", "fp16"):
        for batch in (1, 3):
            x = torch.randn(batch, CHANNELS, args.planes, args.height, args.width,
                            device=device, requires_grad=True)
            w = torch.randn(CHANNELS, device=device, requires_grad=True)
            b = torch.randn(CHANNELS, device=device, requires_grad=True)
            for name, norm in norms.items():
                def forward(norm=norm):
                    with torch.no_grad(), precision.autocast(device.type,
                                                             precision.amp_dtype(amp)):
                        norm(x, w, b)

                def forward_backward(norm=norm):
                    with precision.autocast(device.type, precision.amp_dtype(amp)):
                        y = norm(x, w, b)
                    y.sum().backward()
                key = f"{amp} batch {batch} {name}"
                results[key] = {"forward_ms": timed(forward, device, args.reps) * 1e3,
                                "forward_backward_ms": timed(forward_backward, device,
                                                             args.reps) * 1e3}
                print(f"{key:28s} forward {results[key]['forward_ms']:8.3f} ms, forward + "
                      f"backward {results[key]['forward_backward_ms']:8.3f} ms", flush=True)
    return results


if __name__ == "__main__":
    print(json.dumps(main()))
