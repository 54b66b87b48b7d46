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
from pathlib import Path

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


def profiled(model: OnnxModel, folder: str) -> OnnxModel:
    """``model`` with its sessions replaced by profiling ones (onnxruntime's JSON traces)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.enable_profiling = True

    def session(name):
        options.profile_file_prefix = f"/tmp/onnx_profile_{Path(name).stem}"
        return onnxruntime.InferenceSession(str(Path(folder) / name), options,
                                            providers=["CPUExecutionProvider"])

    model.matching, model.context = session(model.manifest["graphs"]["matching"]), session(
        model.manifest["graphs"]["context"])
    model.decoders = {int(k): session(name) for k, name in model.window["memory"].items()}
    return model


def operator_times(model: OnnxModel, top: int = 10) -> list:
    """``(operator type, share of the node time)`` over every session's trace."""
    totals: dict = {}
    for sess in [model.matching, model.context, *model.decoders.values()]:
        for event in json.loads(Path(sess.end_profiling()).read_text()):
            if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
                op = event["args"]["op_name"]
                totals[op] = totals.get(op, 0) + event["dur"]
    whole = sum(totals.values())
    return [(op, round(t / whole, 3)) for op, t in sorted(totals.items(), key=lambda x: -x[1])
            ][:top]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--onnx", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--frame_interval", type=int, default=1)
    parser.add_argument("--memory_size", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--profile", action="store_true",
                        help="also profile onnxruntime's operators (one more pass)")
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
    if args.profile:
        run(profiled(models["onnxruntime"], args.onnx), seq, protocol)
        result["onnxruntime_operator_share"] = operator_times(models["onnxruntime"])
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
