"""What ``predict.py`` writes for a capture: depth PNGs, previews and pictures as windows
arrive, then the 2D metrics and the fused mesh; several captures in lock-step.

:func:`predict_captures` runs the captures ``--batch_sequences`` at a time through
:func:`evaluation.inference_loop.infer_sequences` (each with its own frames, poses,
intrinsics and EST memory) and writes each capture's files and completion marker as its
windows arrive: the files of a capture are those a run of it alone writes.
"""

from __future__ import annotations

import logging
import shutil
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import cv2
import numpy as np
from tqdm import tqdm

from datasets.intrinsics import resize_intrinsics
from datasets.io import read_depth
from evaluation import fusion
from evaluation import metrics as metrics_mod
from evaluation import pictures as pictures_mod
from evaluation.inference_loop import infer_sequences
from evaluation.run_files import COLOR_MAX_DEPTH, frame_stem, write_marker
from evaluation.streaming import OUTPUT_FOLDERS
from utils.io import atomic_open, save_image
from utils.options import PredictOptions
from utils.visualization import colorize_depth, image_to_uint8

log = logging.getLogger("predict")
DEPTH_DONE = ".depth_done.json"
DEPTH_FORMAT = "estdepth/predict-depth"
MESH_POINTS = 100_000


@dataclass
class Capture:
    """One capture of a run: where it is read from and written to, and its identity."""

    input: str            # the capture as given on the command line
    seq: object           # its sequence (datasets.captures.open_capture)
    out: Path             # its output folder
    scale: dict           # datasets.capture_scale.rescale_sequence's
    config_hash: str
    hashed: dict
    marker: Optional[dict] = None  # its depths' completion marker, once there


def save_depth_png(depth_hw: np.ndarray, path: Path) -> None:
    """uint16 millimetres (0 = none; clipped to 65.535 m), written atomically."""
    mm = np.clip(np.rint(np.nan_to_num(depth_hw, nan=0.0) * 1000.0), 0, 65535).astype(np.uint16)
    ok, buf = cv2.imencode(".png", mm)
    if not ok:
        raise ValueError(f"could not encode {path}")
    with atomic_open(str(path), "wb") as f:
        f.write(buf.tobytes())


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


def plan_capture(protocol, capture: Capture) -> tuple[list, list]:
    """The capture's windows and its frames' output names, checked before any frame of any
    capture is predicted.

    Raises:
        ValueError: too few frames for one window, or two frames of one file name.
    """
    seq = capture.seq
    windows = protocol.windows(len(seq))
    if not windows:
        raise ValueError(f"{seq.name}: {len(seq)} selected frame(s), too few for one "
                         f"{protocol.name} window; lower --frame_interval / --min_baseline")
    stems = [frame_stem(str(frame.color)) for frame in seq.frames]
    if len(set(stems)) != len(stems):
        raise ValueError(f"{seq.name}: two selected frames share the file name "
                         f"{next(s for s in stems if stems.count(s) > 1)!r}; outputs are "
                         f"named by it")
    return windows, stems


class CaptureWriter:
    """One capture's depth files, written as its windows arrive; the marker after the last."""

    def __init__(self, args, protocol, capture: Capture, windows: list, stems: list, bar,
                 random_weights: bool):
        for folder in OUTPUT_FOLDERS:  # an interrupted attempt
            shutil.rmtree(capture.out / folder, ignore_errors=True)
        self.args, self.protocol, self.capture, self.windows = args, protocol, capture, windows
        self.bar, self.random_weights = bar, random_weights
        self.stems = stems
        self.frames, self.files = [], []
        self.closer = ExitStack()
        self.pictures = self.closer.enter_context(
            picture_writer(args, capture.seq, capture.out, capture.scale["scale"]))
        self.start = time.perf_counter()

    def add(self, window: list, batch: dict, outputs: dict) -> None:
        """Write the targets of one window."""
        seq, scale = self.capture.seq, self.capture.scale["scale"]
        for t, index in self.protocol.targets(window):
            stem, position = self.stems[index], window.index(index)
            self.files += write_target(self.args, self.capture.out, self.pictures, stem,
                                       outputs, t, batch["imgs"][position], seq.poses[index],
                                       scale)
            self.frames.append({"index": index, "stem": stem,
                                "image": batch["img_paths"][position]})
            self.bar.update(1)

    def finish(self) -> dict:
        """Close the pictures and write the completion marker; returns it."""
        self.files += self.pictures.finish()
        self.closer.close()
        seconds = time.perf_counter() - self.start
        marker = {"format": DEPTH_FORMAT, "config_hash": self.capture.config_hash,
                  "frames": self.frames, "windows": len(self.windows), "inference_s": seconds,
                  "frames_per_s": len(self.frames) / seconds if seconds > 0 else None,
                  "random_weights": self.random_weights}
        return write_marker(self.capture.out, marker, self.files, name=DEPTH_DONE)


def predict_captures(model, args, protocol, captures: list, random_weights: bool) -> None:
    """Predict every target frame of ``captures``, ``--batch_sequences`` at a time, and
    set each capture's ``marker`` when its last window is written.

    With several captures in a batch, a capture's ``inference_s`` is the time from its
    first window to its last, shared with the captures beside it.
    """
    plans = {k: plan_capture(protocol, capture) for k, capture in enumerate(captures)}
    total = sum(len(protocol.targets(w)) for windows, _ in plans.values() for w in windows)
    memory_size = protocol.memory_size if model.IF_EST_transformer else None
    writers = {}
    with tqdm(total=total, desc="predict", unit="frame", dynamic_ncols=True) as bar:
        def jobs():
            for k, (windows, stems) in plans.items():
                writers[k] = CaptureWriter(args, protocol, captures[k], windows, stems, bar,
                                           random_weights)
                yield k, captures[k].seq, windows

        try:
            for k, step, window, batch, outputs in infer_sequences(
                    model, jobs(), memory_size, args.batch_sequences, args.num_workers):
                writers[k].add(window, batch, outputs)
                if step == len(writers[k].windows) - 1:
                    captures[k].marker = writers.pop(k).finish()
                    if len(captures) > 1:
                        bar.set_postfix(captures=f"{len(plans) - len(writers)}/{len(plans)}")
        finally:
            for writer in writers.values():  # an error: release open videos and files
                writer.closer.close()


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
