"""An export against the eager inference copy on a real capture: the largest scale-0 depth
difference, and the CPU time per frame of each (alternating, one thread).

    python -m dev.onnx_check --onnx model_onnx --input ../shared/data/7scenes/redkitchen/seq-sample

The eager model is the export's checkpoint (or its seed's random weights); ESTM windows
over every frame of the capture (``--frame_interval``), each backend ``--rounds`` times.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from datasets.captures import open_capture
from evaluation.inference_loop import infer_windows
from evaluation.protocols import estm_protocol
from models.depthnet import DepthNetHybrid
from models.inference import prepare_for_inference
from models.memory import MemoryBuffer
from models.onnx_runtime import OnnxModel, read_manifest
from utils.checkpoint import read_checkpoint
from utils.options import ModelOptions, from_mapping


def eager_model(manifest: dict) -> DepthNetHybrid:
    """The weights the export was made from."""
    opts = from_mapping(ModelOptions, manifest["model"])
    if manifest["checkpoint"]:
        model = DepthNetHybrid.from_options(opts, read_checkpoint(manifest["checkpoint"])["model"])
    else:
        torch.manual_seed(manifest["seed"])
        model = DepthNetHybrid.from_options(opts)
    return prepare_for_inference(model.eval())


def run(model, seq, protocol) -> tuple[list, list]:
    """Scale-0 depth of every target, and the CPU seconds of each window."""
    memory = MemoryBuffer(protocol.memory_size)
    depths, seconds = [], []
    windows = iter(infer_windows(model, seq, protocol.windows(len(seq)), memory))
    while True:
        start = time.process_time()
        try:
            window, _, outputs = next(windows)
        except StopIteration:
            return depths, seconds
        seconds.append(time.process_time() - start)
        depths += [outputs[("depth", t, 0)][0, 0].numpy().copy()
                   for t, _ in protocol.targets(window)]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--onnx", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--frame_interval", type=int, default=1)
    parser.add_argument("--memory_size", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    manifest = read_manifest(args.onnx)
    seq = open_capture(args.input, "auto", manifest["height"], manifest["width"],
                       args.frame_interval)
    protocol = estm_protocol(3, args.memory_size)
    models = {"eager": eager_model(manifest), "onnxruntime": OnnxModel(args.onnx, "estm",
                                                                        "cpu", threads=1)}
    times = {name: [] for name in models}
    depths = {}
    for _ in range(args.rounds):
        for name, model in models.items():
            depths[name], seconds = run(model, seq, protocol)
            times[name].append(float(np.median(seconds[1:])))
    diff = max(float(np.abs(a - b).max()) for a, b in zip(depths["eager"], depths["onnxruntime"]))
    result = {"frames": len(depths["eager"]), "max_depth_difference_m": diff,
              "cpu_s_per_window": times, "onnxruntime_over_eager": [
                  o / e for o, e in zip(times["onnxruntime"], times["eager"])]}
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
