"""Time the cost-volume 3D convolution in both memory layouts (NCDHW vs channels_last_3d).

The hybrid decoder's ``dres``/``pre`` blocks are 3x3x3 convolutions of 32 channels on the
1/4-resolution plane-sweep volume; this measures one such layer, forward and forward +
backward, in float32 (TF32 off) and bf16, with the tensors and weights in either layout:

    python tools/conv3d_layout.py --device cuda            # 64 planes, 64x80 (256x320 input)
    python tools/conv3d_layout.py --device cpu --threads 1 --height 32 --width 40
"""

import argparse
import statistics
import time

import torch


def timed(fn, device: torch.device, reps: int) -> float:
    """Median seconds of ``fn()`` over ``reps`` calls after two warm-up calls."""
    for _ in range(2):
        fn()
    seconds = []
    for _ in range(reps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch", type=int, default=2, help="volumes per call (2 sources)")
    parser.add_argument("--planes", type=int, default=64)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=80)
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.backends.cudnn.allow_tf32 = False
    results = {}
    for dtype in (torch.float32, torch.bfloat16):
        for layout in (torch.contiguous_format, torch.channels_last_3d):
            conv = torch.nn.Conv3d(32, 32, 3, padding=1, bias=False).to(device, dtype)
            conv = conv.to(memory_format=layout)
            x = torch.randn(args.batch, 32, args.planes, args.height, args.width, device=device,
                            dtype=dtype).contiguous(memory_format=layout).requires_grad_()

            def forward():
                with torch.no_grad():
                    conv(x)

            def train():
                conv(x).float().square().mean().backward()
            cl = layout is torch.channels_last_3d
            name = f"{str(dtype).split('.')[-1]} {'channels_last_3d' if cl else 'NCDHW'}"
            results[name] = {"forward_ms": 1e3 * timed(forward, device, args.reps),
                             "forward_backward_ms": 1e3 * timed(train, device, args.reps)}
            print(f"{name:28s} forward {results[name]['forward_ms']:8.2f} ms   forward+backward "
                  f"{results[name]['forward_backward_ms']:8.2f} ms", flush=True)
    return results


if __name__ == "__main__":
    main()
