"""Depth for your own posed video: per-frame depth maps, a fused mesh and, with ground
truth, the 2D depth and 3D mesh metrics.

    python predict.py --input my_capture --output out --loadckpt model_000006.ckpt
    python predict.py --input rgbd_dataset_freiburg1_desk --output out_tum --format tum \\
        --loadckpt model_000006.ckpt --frame_interval 1 --min_baseline 0.1

Writes ``OUT/depth/<frame>.png`` (uint16 millimetres, network resolution),
``OUT/preview/<frame>.jpg`` (colour-mapped, 0-5 m), ``OUT/mesh.ply`` (``--fuse``), and
``OUT/summary.json`` last (frames, timing, checkpoint, options, metrics). With ground-truth
depth in the capture also ``OUT/mesh_gt.ply`` (fused from it with the same settings) and
the metrics. Re-running the same command resumes: finished depth maps are reused, an
interrupted prediction restarts from the first frame (the EST memory needs the stream).
A COLMAP capture's scale is checked against the model's depth planes (``--pose_scale``).
Formats and options: datasets/posed.py, configs/default.yaml ``predict:``, ``--help``.
``--stream True`` follows a folder capture while it is being written (docs/predict.md).
Several captures (``--input A B ...``) write ``OUT/<capture>/`` each, as a run of that
capture alone would, and run ``--batch_sequences`` at a time as one batch.
"""

from __future__ import annotations

import hashlib
import logging
import os
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import torch

from datasets import capture_scale
from datasets.captures import open_capture
from datasets.io import DataError
from datasets.scannet_export import unfinished_export
from evaluation.prediction import (DEPTH_DONE, DEPTH_FORMAT, Capture, depth_metrics,
                                   fuse_outputs, picture_writer, predict_captures,
                                   write_target)
from evaluation.protocols import estm_protocol, joint_protocol
from evaluation.run import apply_checkpoint_options, checkpoint_or_random_model
from evaluation.run_files import finished_marker
from evaluation.streaming import StreamHooks, check_stream_options, run_stream
from models.depthnet import DepthNetHybrid
from models import onnx_runtime
from utils.checkpoint import read_checkpoint
from utils.config import load_config
from utils.distributed import resolve_device
from utils.io import config_hash, file_sha256, folder_lock, save_json
from utils.logs import setup_logging
from utils.options import PredictOptions
from utils.paths import check_apart

log = logging.getLogger("predict")
SUMMARY = "summary.json"
FORMAT = "estdepth/predict"
VERSION = 1
CHECKPOINT_HELP = (
    "The released model_000006.ckpt (ResNet-50, 64 planes, 0.1-10 m) was published with the "
    "official code, https://github.com/xxlong0/ESTDepth (README 'The released checkpoint'); "
    "or train your own with train_hybrid.py (python demo.py trains a small one).")
RANDOM_WEIGHTS_WARNING = ("no --loadckpt: the model has RANDOM weights and its depths are "
                          "meaningless. " + CHECKPOINT_HELP)


def make_protocol(opts: PredictOptions):
    if opts.mode == "estm":
        return estm_protocol(opts.lwindow, opts.memory_size)
    if opts.mode == "joint":
        return joint_protocol(opts.seq_len)
    raise ValueError(f"--mode must be estm or joint, got {opts.mode!r}")


def read_model_checkpoint(args) -> dict | None:
    """``--loadckpt`` read, its model options and input size taken (unless given); with
    ``--backend onnxruntime`` the export's (``--onnx``) instead."""
    if args.predict.backend == "onnxruntime":
        onnx_runtime.apply_manifest(args, args.predict.onnx)
        return None
    if args.predict.backend != "eager":
        raise ValueError(f"--backend must be eager or onnxruntime, got "
                         f"{args.predict.backend!r}")
    if not args.loadckpt:
        return None
    if not Path(args.loadckpt).is_file():
        raise FileNotFoundError(f"--loadckpt {args.loadckpt}: no such file. {CHECKPOINT_HELP}")
    ckpt = read_checkpoint(args.loadckpt)
    apply_checkpoint_options(args, ckpt)
    return ckpt


def random_weights(args) -> bool:
    """The model's weights are random (no checkpoint, or an export of none)."""
    if args.predict.backend == "onnxruntime":
        return bool(onnx_runtime.read_manifest(args.predict.onnx)["random_weights"])
    return not args.loadckpt


def make_model(args, device: torch.device, ckpt: dict | None) -> DepthNetHybrid:
    """The checkpoint's model, or a randomly initialised one (with a loud warning), as the
    evaluation runs it: an inference copy (batch norm folded, the fast layers; the same
    numbers up to float rounding, see models/inference.py)."""
    if args.predict.backend == "onnxruntime":
        return onnx_runtime.OnnxModel(args.predict.onnx, args.mode, device.type)
    return checkpoint_or_random_model(args, device, ckpt)


def run_identity(args, seq, root: str | None = None) -> tuple[str, dict]:
    """Hash of everything that changes the depth maps (not paths, device or fusion);
    ``root``: the capture folder (default ``--input``)."""
    root = args.input if root is None else root
    hashed = {
        "version": VERSION, "mode": args.mode, "seq_len": args.seq_len,
        "lwindow": args.lwindow, "memory_size": args.memory_size,
        "checkpoint_sha256": file_sha256(args.loadckpt) if args.loadckpt else None,
        "backend": args.predict.backend, "export_sha256": file_sha256(
            Path(args.predict.onnx) / onnx_runtime.MANIFEST) if args.predict.onnx else None,
        "seed": None if args.loadckpt else args.seed,
        "resnet": args.resnet, "ndepths": args.ndepths, "depth_min": float(args.depth_min),
        "depth_max": float(args.depth_max), "IF_EST_transformer": bool(args.IF_EST_transformer),
        "height": args.height, "width": args.width, "save_images": bool(args.save_images),
        "pictures": [bool(args.save_confidence), bool(args.save_clouds),
                     bool(args.save_video), float(args.video_fps)]
        + ([float(args.voxel_size), float(args.fuse_max_depth)] if args.save_clouds else []),
        # frames by their place in the capture, not where it lies: a moved capture reuses
        "frames": [capture_relative(p, root) for p in frame_paths(seq)],
        "poses": hashlib.sha256(np.stack(seq.poses).astype(np.float64).tobytes()).hexdigest(),
        "cam_intr": seq.cam_intr.tolist(),
    }
    return config_hash(hashed), hashed


def capture_relative(path: str, root: str) -> str:
    """``path`` relative to the capture folder ``root`` (as is when it lies elsewhere);
    links are not followed, so a capture of links moves like any other."""
    try:
        return Path(os.path.abspath(path)).relative_to(os.path.abspath(root)).as_posix()
    except ValueError:
        return str(path)


def frame_paths(seq) -> list[str]:
    return [str(frame.color) for frame in seq.frames]


def check_options(args) -> None:
    """Refuse option values prediction or fusion cannot use, before any frame is predicted
    (fusion runs last: a bad --voxel_size would otherwise fail after the whole prediction).
    utils.config already refuses non-positive depth ranges and min >= max.

    Raises:
        ValueError naming the option and its value.
    """
    opts = args.predict
    capture_scale.parse_pose_scale(opts.pose_scale)
    if opts.backend == "onnxruntime" and opts.batch_sequences > 1:
        raise ValueError("--batch_sequences above 1 needs --backend eager: the ONNX graphs "
                         "are exported for batch 1")
    positive = {"--tum_max_dt": opts.tum_max_dt}
    if args.fuse:
        positive.update({"--voxel_size": opts.voxel_size,
                         "--fuse_max_depth": opts.fuse_max_depth})
    for name, value in positive.items():
        if not (np.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {value}")
    for name, value in {"--min_depth_eval": opts.min_depth_eval,
                        "--max_depth_eval": opts.max_depth_eval,
                        "--min_baseline": opts.min_baseline,
                        "--min_rotation": opts.min_rotation}.items():
        if not (np.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {value}")


def output_folders(output: str, inputs: list) -> list[Path]:
    """Each capture's output folder: ``output`` itself for one capture; for several,
    ``output/<the capture's path below the captures' common folder>``.

    Raises:
        ValueError: a capture given twice, or one inside another.
    """
    if len(inputs) == 1:
        return [Path(output)]
    real = [Path(os.path.realpath(p)) for p in inputs]
    for a in range(len(real)):
        for b in range(len(real)):
            if a != b and real[a].is_relative_to(real[b]):
                same = "is" if real[a] == real[b] else "lies inside"
                raise ValueError(f"--input {inputs[a]} {same} --input {inputs[b]}; give each "
                                 f"capture once")
    common = Path(os.path.commonpath(real))
    return [Path(output) / path.relative_to(common) for path in real]


def open_captures(args, inputs: list, outs: list) -> list[Capture]:
    """Every capture opened, scaled and identified before any is predicted."""
    captures = []
    for given, out in zip(inputs, outs):
        unfinished = unfinished_export(given)
        if unfinished:
            raise DataError(unfinished)
        seq = open_capture(given, args.format, args.height, args.width, args.frame_interval,
                           args.min_baseline, args.min_rotation, args.intrinsics,
                           args.min_depth_eval, args.max_depth_eval, args.tum_max_dt)
        scale = capture_scale.rescale_sequence(seq, args.predict.pose_scale, Path(given),
                                               args.depth_min, args.depth_max)
        config_hash, hashed = run_identity(args, seq, given)
        log.info("%s (%s): %d frames -> %s (configuration %s, %s)", given, seq.format,
                 len(seq), out, config_hash, args.mode)
        captures.append(Capture(given, seq, out, scale, config_hash, hashed))
    return captures


def main(argv=None) -> dict:
    """One capture: its summary. Several (``--input A B ...``): ``{"captures": [their
    summaries]}``, each written as a run of that capture alone would."""
    args = load_config("predict", argv, description=__doc__)
    setup_logging(args.log_level)
    inputs = list(args.input or [])
    if not inputs:
        raise ValueError("--input is required (the capture folder, or several)")
    check_options(args)
    # a recomputation empties parts of the output; each capture's output lies inside it
    check_apart(args.output, *inputs)
    if args.predict.stream:  # a capture still being written: evaluation/streaming.py
        if len(inputs) != 1:
            raise ValueError(f"--stream follows one capture, got {len(inputs)} --input")
        args.input = inputs[0]
        check_stream_options(args)
        ckpt = read_model_checkpoint(args)
        if random_weights(args):
            log.warning(RANDOM_WEIGHTS_WARNING)
        return run_stream(args, StreamHooks(make_model, write_target, picture_writer,
                                            run_identity, random_weights, DEPTH_DONE,
                                            DEPTH_FORMAT, SUMMARY, FORMAT, VERSION),
                          resolve_device(args.device), ckpt)
    device = resolve_device(args.device)
    ckpt = read_model_checkpoint(args)  # its options (model, input size) before the identity
    captures = open_captures(args, inputs, output_folders(args.output, inputs))
    if random_weights(args):
        log.warning(RANDOM_WEIGHTS_WARNING)
    with ExitStack() as locks:
        for capture in captures:
            capture.out.mkdir(parents=True, exist_ok=True)
            locks.enter_context(folder_lock(str(capture.out), "predict.py"))
        summaries = predict_locked(args, captures, device, ckpt)
    for capture in captures:
        log.info("wrote %s", capture.out / SUMMARY)
    return summaries[0] if len(summaries) == 1 else {"captures": summaries}


def predict_locked(args, captures: list, device, ckpt: dict | None) -> list[dict]:
    """Depths (reused when finished for this configuration; the others predicted
    together), then each capture's metrics, mesh and summary, its output locked."""
    todo = []
    for capture in captures:
        capture.marker = finished_marker(capture.out, capture.config_hash, args.overwrite,
                                         name=DEPTH_DONE, fmt=DEPTH_FORMAT,
                                         other_output="--output")
        if capture.marker is None:
            todo.append(capture)
        else:
            log.info("depths already predicted in %s (%d frames), reused", capture.out,
                     len(capture.marker["frames"]))
    if todo:
        predict_captures(make_model(args, device, ckpt), args, make_protocol(args.predict),
                         todo, random_weights(args))
    return [summarise(args, capture, device) for capture in captures]


def summarise(args, capture: Capture, device) -> dict:
    """A predicted capture's metrics and mesh, and its ``summary.json`` (written last)."""
    seq, out, marker, frames = capture.seq, capture.out, capture.marker, capture.marker["frames"]
    summary = {
        "format": FORMAT, "version": VERSION, "config_hash": capture.config_hash,
        "input": str(capture.input), "capture_format": seq.format,
        "intrinsics_source": seq.K_source, "pose_scale": capture.scale,
        "checkpoint": args.loadckpt, "random_weights": random_weights(args),
        "frames": [f["stem"] for f in frames], "num_frames": len(frames),
        "sequence_frames": len(seq),
        "timing": {"inference_s": marker["inference_s"],
                   "frames_per_s": marker["frames_per_s"]},
        "options": {k: v for k, v in sorted(vars(args).items())},
        "hashed": capture.hashed,
    }
    summary["depth_metrics"] = depth_metrics(seq, out, frames, args.predict)
    if args.fuse:
        summary["fusion"] = fuse_outputs(seq, out, frames, args.predict,
                                         (args.height, args.width), device,
                                         capture.scale["scale"])
    save_json(summary, str(out / SUMMARY))
    if summary["depth_metrics"]:
        log.info("%s: depth metrics over %d frames: %s", capture.input,
                 summary["depth_metrics"]["frames"],
                 ", ".join(f"{k} {summary['depth_metrics'][k]:.3f}"
                           for k in ("abs_rel", "abs_diff", "rmse", "a1")))
    if args.fuse and "metrics" in summary["fusion"]:
        m = summary["fusion"]["metrics"]
        log.info("%s: mesh vs ground-truth mesh: acc %.3f m, comp %.3f m, precision %.3f, "
                 "recall %.3f, F-score %.3f (5 cm)", capture.input, m["acc"], m["comp"],
                 m["prec"], m["recall"], m["fscore"])
    return summary


if __name__ == "__main__":
    main()
