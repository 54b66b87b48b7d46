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
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from datasets import capture_scale
from datasets.captures import open_capture
from datasets.intrinsics import resize_intrinsics
from datasets.io import DataError, read_depth
from datasets.prefetch import prefetched
from datasets.scannet_export import unfinished_export
from evaluation import fusion
from evaluation import metrics as metrics_mod
from evaluation import pictures as pictures_mod
from evaluation.inference_loop import infer_windows
from evaluation.protocols import estm_protocol, joint_protocol
from evaluation.run import apply_checkpoint_options, checkpoint_or_random_model
from evaluation.run_files import COLOR_MAX_DEPTH, finished_marker, frame_stem, write_marker
from evaluation.streaming import OUTPUT_FOLDERS, StreamHooks, check_stream_options, run_stream
from models.depthnet import DepthNetHybrid
from models import onnx_runtime
from models.memory import MemoryBuffer
from utils.checkpoint import read_checkpoint
from utils.config import load_config
from utils.distributed import resolve_device
from utils.io import atomic_open, config_hash, file_sha256, folder_lock, save_image, save_json
from utils.logs import setup_logging
from utils.options import PredictOptions
from utils.paths import check_apart
from utils.visualization import colorize_depth, image_to_uint8

log = logging.getLogger("predict")
DEPTH_DONE = ".depth_done.json"
DEPTH_FORMAT = "estdepth/predict-depth"
SUMMARY = "summary.json"
FORMAT = "estdepth/predict"
VERSION = 1
MESH_POINTS = 100_000
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


def run_identity(args, seq) -> tuple[str, dict]:
    """Hash of everything that changes the depth maps (not paths, device or fusion)."""
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
        "frames": [capture_relative(p, args.input) for p in frame_paths(seq)],
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


def save_depth_png(depth_hw: np.ndarray, path: Path) -> None:
    """uint16 millimetres (0 = none; clipped to 65.535 m), written atomically."""
    mm = np.clip(np.rint(np.nan_to_num(depth_hw, nan=0.0) * 1000.0), 0, 65535).astype(np.uint16)
    ok, buf = cv2.imencode(".png", mm)
    if not ok:
        raise ValueError(f"could not encode {path}")
    with atomic_open(str(path), "wb") as f:
        f.write(buf.tobytes())


def predict_depths(args, seq, out: Path, config_hash: str, device, ckpt: dict | None,
                   pose_scale: float = 1.0) -> dict:
    """Run the model over the sequence and write a depth PNG (+ preview) per target frame;
    the PNG in the capture's units (the network's metres divided by ``pose_scale``)."""
    for folder in OUTPUT_FOLDERS:  # an interrupted attempt
        shutil.rmtree(out / folder, ignore_errors=True)
    protocol = make_protocol(args.predict)
    windows = protocol.windows(len(seq))
    if not windows:
        raise ValueError(f"{seq.name}: {len(seq)} selected frame(s), too few for one "
                         f"{args.mode} window; lower --frame_interval / --min_baseline")
    stems = [frame_stem(p) for p in frame_paths(seq)]
    if len(set(stems)) != len(stems):
        raise ValueError(f"{seq.name}: two selected frames share the file name "
                         f"{next(s for s in stems if stems.count(s) > 1)!r}; outputs are "
                         f"named by it")
    model = make_model(args, device, ckpt)
    pictures = picture_writer(args, seq, out, pose_scale)
    memory = MemoryBuffer(protocol.memory_size) if model.IF_EST_transformer else None
    targets = sum(len(protocol.targets(w)) for w in windows)
    frames, files = [], []
    start = time.perf_counter()
    with tqdm(total=targets, desc="predict", unit="frame", dynamic_ncols=True) as bar, \
            prefetched(seq, windows, args.num_workers) as ahead, pictures:
        for window, batch, outputs in infer_windows(model, ahead, windows, memory):
            for t, index in protocol.targets(window):
                stem = stems[index]
                files += write_target(args, out, pictures, stem, outputs, t,
                                      batch["imgs"][window.index(index)], seq.poses[index],
                                      pose_scale)
                frames.append({"index": index, "stem": stem,
                               "image": batch["img_paths"][window.index(index)]})
                bar.update(1)
    files += pictures.finish()
    seconds = time.perf_counter() - start
    marker = {"format": DEPTH_FORMAT, "config_hash": config_hash, "frames": frames,
              "windows": len(windows), "inference_s": seconds,
              "frames_per_s": len(frames) / seconds if seconds > 0 else None,
              "random_weights": random_weights(args)}
    return write_marker(out, marker, files, name=DEPTH_DONE)


def write_target(args, out: Path, pictures, stem: str, outputs: dict, t: int, img_3hw,
                 world_T_cam_44, pose_scale: float) -> list[str]:
    """One predicted frame's files (relative paths): the depth PNG in the capture's units,
    the preview and the optional pictures."""
    depth = outputs[("depth", t, 0)][0, 0].float().cpu().numpy()
    save_depth_png(depth / pose_scale, out / "depth" / f"{stem}.png")
    files = [f"depth/{stem}.png"]
    if args.save_images:
        rgb = colorize_depth(depth, max_depth=COLOR_MAX_DEPTH)
        save_image(str(out / "preview" / f"{stem}.jpg"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        files.append(f"preview/{stem}.jpg")
    return files + pictures.add(stem, depth, pictures_mod.confidence_map(outputs, t, depth.shape),
                                image_to_uint8(img_3hw), world_T_cam_44)


def picture_writer(args, seq, out: Path, pose_scale: float) -> pictures_mod.PictureWriter:
    """``--save_confidence --save_clouds --save_video`` (see evaluation/pictures.py)."""
    opts = args.predict
    fps = (opts.video_fps or 30.0 / args.frame_interval) if opts.save_video else None
    return pictures_mod.PictureWriter(
        out, seq.cam_intr.double().numpy(), pose_scale, confidence=opts.save_confidence,
        clouds=opts.save_clouds, video_fps=fps, voxel=opts.voxel_size,
        max_depth=opts.fuse_max_depth, color_max_depth=COLOR_MAX_DEPTH)


def depth_metrics(seq, out: Path, frames: list, opts: PredictOptions) -> dict | None:
    """2D metrics of the saved depths against the capture's ground truth (mean over frames)."""
    rows = []
    for frame in frames:
        item = seq[frame["index"]]
        if item["dmap"] is None:
            continue
        pred = read_depth(out / "depth" / f"{frame['stem']}.png")
        pred, _ = metrics_mod.sanitize_prediction(pred, opts.min_depth_eval)
        row = metrics_mod.frame_metrics(pred, item["dmap"][0].numpy(), item["dmask"][0].numpy())
        if row is not None:
            rows.append(row)
    if not rows:
        return None
    result = metrics_mod.mean_rows(rows, metrics_mod.METRIC_NAMES)
    result["frames"] = len(rows)
    return result


def fuse_outputs(seq, out: Path, frames: list, opts: PredictOptions, net_hw: tuple,
                 device, pose_scale: float = 1.0) -> dict:
    """Fuse the predicted (and, when there, ground-truth) depths; mesh metrics with both.

    ``net_hw``: the network's input size, which the sequence's intrinsics are scaled to.
    ``pose_scale``: fusion runs in the network's metres (the voxel size is in metres, the
    poses are scaled); the mesh is written in the capture's units.
    """
    K_net = seq.cam_intr.numpy().astype(np.float64)
    pred_frames, gt_frames = [], []
    for frame in frames:
        pose = seq.poses[frame["index"]]
        pred = read_depth(out / "depth" / f"{frame['stem']}.png") * np.float32(pose_scale)
        pred_frames.append((pred, resize_intrinsics(K_net, net_hw, pred.shape), pose))
        item = seq[frame["index"]]
        if item["dmap"] is not None:
            gt = item["dmap"][0].numpy()
            gt_frames.append((gt, resize_intrinsics(K_net, net_hw, gt.shape), pose))
    start = time.perf_counter()
    mesh, _ = fusion.fuse_depths(pred_frames, opts.voxel_size, opts.fuse_max_depth,
                                 device=device)
    fusion.save_ply(fusion.Mesh(mesh.vertices_v3 / np.float32(pose_scale), mesh.faces_f3)
                    if pose_scale != 1.0 else mesh, out / "mesh.ply")
    result = {"mesh": "mesh.ply", "faces": len(mesh), "vertices": len(mesh.vertices_v3),
              "voxel_size": opts.voxel_size, "max_depth": opts.fuse_max_depth}
    if gt_frames and not any((gt > 0).any() for gt, _, _ in gt_frames):
        log.warning("%s: the capture's ground-truth depth maps hold no valid pixel; no "
                    "ground-truth mesh and no mesh metrics", seq.name)
        gt_frames = []
    if gt_frames:
        gt_mesh, _ = fusion.fuse_depths(gt_frames, opts.voxel_size, opts.fuse_max_depth,
                                        device=device)
        fusion.save_ply(gt_mesh, out / "mesh_gt.ply")
        result["mesh_gt"] = "mesh_gt.ply"
        result["metrics"] = fusion.mesh_metrics(mesh, gt_mesh, num_points=MESH_POINTS)
    result["fusion_s"] = time.perf_counter() - start
    return result


def check_options(args) -> None:
    """Refuse option values prediction or fusion cannot use, before any frame is predicted
    (fusion runs last: a bad --voxel_size would otherwise fail after the whole prediction).
    utils.config already refuses non-positive depth ranges and min >= max.

    Raises:
        ValueError naming the option and its value.
    """
    opts = args.predict
    capture_scale.parse_pose_scale(opts.pose_scale)
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


def main(argv=None) -> dict:
    args = load_config("predict", argv, description=__doc__)
    setup_logging(args.log_level)
    if not args.input:
        raise ValueError("--input is required (the capture folder)")
    check_options(args)
    check_apart(args.output, args.input)  # a recomputation empties parts of the output
    if args.predict.stream:  # a capture still being written: evaluation/streaming.py
        check_stream_options(args)
        ckpt = read_model_checkpoint(args)
        if random_weights(args):
            log.warning(RANDOM_WEIGHTS_WARNING)
        return run_stream(args, StreamHooks(make_model, write_target, picture_writer,
                                            run_identity, random_weights, DEPTH_DONE,
                                            DEPTH_FORMAT, SUMMARY, FORMAT, VERSION),
                          resolve_device(args.device), ckpt)
    unfinished = unfinished_export(args.input)
    if unfinished:
        raise DataError(unfinished)
    device = resolve_device(args.device)
    out = Path(args.output)
    ckpt = read_model_checkpoint(args)  # its options (model, input size) before the identity
    seq = open_capture(args.input, args.format, args.height, args.width, args.frame_interval,
                       args.min_baseline, args.min_rotation, args.intrinsics,
                       args.min_depth_eval, args.max_depth_eval, args.tum_max_dt)
    scale = capture_scale.rescale_sequence(seq, args.predict.pose_scale, Path(args.input),
                                           args.depth_min, args.depth_max)
    config_hash, hashed = run_identity(args, seq)
    log.info("%s (%s): %d frames -> %s (configuration %s, %s on %s)", args.input, seq.format,
             len(seq), out, config_hash, args.mode, device)
    if random_weights(args):
        log.warning(RANDOM_WEIGHTS_WARNING)

    out.mkdir(parents=True, exist_ok=True)
    with folder_lock(str(out), "predict.py"):
        summary = predict_locked(args, seq, out, config_hash, hashed, device, ckpt, scale)
    log.info("wrote %s", out / SUMMARY)
    return summary


def predict_locked(args, seq, out: Path, config_hash: str, hashed: dict, device,
                   ckpt: dict | None, scale: dict) -> dict:
    """Depths (reused when finished for this configuration), metrics, mesh and summary, with
    ``out`` locked against a second run. ``scale``: :func:`rescale_capture`'s."""
    marker = finished_marker(out, config_hash, args.overwrite, name=DEPTH_DONE,
                             fmt=DEPTH_FORMAT, other_output="--output")
    if marker is None:
        marker = predict_depths(args, seq, out, config_hash, device, ckpt, scale["scale"])
    else:
        log.info("depths already predicted in %s (%d frames), reused", out,
                 len(marker["frames"]))
    frames = marker["frames"]
    summary = {
        "format": FORMAT, "version": VERSION, "config_hash": config_hash,
        "input": str(args.input), "capture_format": seq.format,
        "intrinsics_source": seq.K_source, "pose_scale": scale,
        "checkpoint": args.loadckpt, "random_weights": random_weights(args),
        "frames": [f["stem"] for f in frames], "num_frames": len(frames),
        "sequence_frames": len(seq),
        "timing": {"inference_s": marker["inference_s"],
                   "frames_per_s": marker["frames_per_s"]},
        "options": {k: v for k, v in sorted(vars(args).items())},
        "hashed": hashed,
    }
    summary["depth_metrics"] = depth_metrics(seq, out, frames, args.predict)
    if args.fuse:
        summary["fusion"] = fuse_outputs(seq, out, frames, args.predict,
                                         (args.height, args.width), device, scale["scale"])
    save_json(summary, str(out / SUMMARY))
    if summary["depth_metrics"]:
        log.info("depth metrics over %d frames: %s", summary["depth_metrics"]["frames"],
                 ", ".join(f"{k} {summary['depth_metrics'][k]:.3f}"
                           for k in ("abs_rel", "abs_diff", "rmse", "a1")))
    if args.fuse and "metrics" in summary["fusion"]:
        m = summary["fusion"]["metrics"]
        log.info("mesh vs ground-truth mesh: acc %.3f m, comp %.3f m, precision %.3f, recall "
                 "%.3f, F-score %.3f (5 cm)", m["acc"], m["comp"], m["prec"], m["recall"],
                 m["fscore"])
    return summary


if __name__ == "__main__":
    main()
