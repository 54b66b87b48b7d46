"""``predict.py --stream``: depth and a live TSDF mesh for a folder capture still being
written (:mod:`datasets.growing` says how a producer writes it).

ESTM only: each frame is predicted as soon as the frame after it is complete (one frame
of latency), with the EST memory threaded exactly as offline, and its depth PNG (the same
uint16 millimetres, read back) is fused at once into a :class:`GrowingTSDF`. ``mesh.ply``
is rewritten atomically every ``--snapshot_every`` frames and at the end. The stream ends
on the end marker (after every complete frame), ``--stream_timeout`` seconds without a new
frame, Ctrl-C or an error; in every case the depth maps, the mesh, the completion marker
and ``summary.json`` of the frames so far are written. On the same frames the depth PNGs
and the mesh equal the offline ``predict.py``'s bit for bit, and the marker is the one
it writes, so running ``predict.py`` (without ``--stream``) on the finished capture and
the same output reuses the depths and adds the metrics.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from datasets.captures import parse_intrinsics
from datasets.growing import GrowingFolder, extend, make_sequence
from datasets.intrinsics import resize_intrinsics
from datasets.io import DataError, read_depth
from datasets.sequence import stack_frames
from evaluation import fusion
from evaluation.inference_loop import FrameFeatureCache, decode_window
from evaluation.protocols import estm_protocol
from evaluation.run_files import frame_stem, write_marker
from models.memory import MemoryBuffer
from utils.io import folder_lock, save_json

log = logging.getLogger("predict")
# The per-frame output folders (predict.py empties them too before predicting).
OUTPUT_FOLDERS = ("depth", "preview", "confidence", "cloud")


@dataclass(frozen=True)
class StreamHooks:
    """What the stream takes from predict.py (a library module may not import a script):
    its functions (same signatures as there) and its marker and summary names."""

    make_model: Callable
    write_target: Callable
    picture_writer: Callable
    run_identity: Callable
    random_weights: Callable
    depth_marker: str
    depth_format: str
    summary: str
    summary_format: str
    version: int


def check_stream_options(args) -> None:
    """Refuse what ``--stream`` cannot do, naming the option and its value."""
    opts = args.predict
    if opts.mode != "estm":
        raise ValueError(f"--stream runs ESTM only (each frame predicted once the next "
                         f"arrives), got --mode {opts.mode}")
    if opts.format not in ("auto", "folder"):
        raise ValueError(f"--stream reads the folder format (images/, poses.txt or poses/, "
                         f"K.txt), got --format {opts.format}")
    if str(opts.pose_scale) not in ("check", "1", "1.0"):
        raise ValueError(f"--stream: folder captures are metric, --pose_scale must be check, "
                         f"got {opts.pose_scale}")
    if not (isinstance(opts.snapshot_every, int) and opts.snapshot_every >= 0):
        raise ValueError(f"--snapshot_every must be an integer >= 0, got {opts.snapshot_every}")
    if not (np.isfinite(opts.stream_timeout) and opts.stream_timeout >= 0):
        raise ValueError(f"--stream_timeout must be a finite number >= 0 (0: none), got "
                         f"{opts.stream_timeout}")
    if not (np.isfinite(opts.stream_poll) and 0 < opts.stream_poll <= 10):
        raise ValueError(f"--stream_poll must be in (0, 10] seconds, got {opts.stream_poll}")
    marker = opts.stream_end_marker
    if not marker or "/" in marker or "\\" in marker or marker in (".", ".."):
        raise ValueError(f"--stream_end_marker must be a file name in the capture folder, "
                         f"got {marker!r}")
    if not Path(opts.input).is_dir():
        raise DataError(f"--input {opts.input}: no such folder (a stream's folder must exist, "
                        f"it may be empty)")


def latency_figures(latency_s: list, busy_s: float, wall_s: float) -> dict:
    """Per-frame latency (s) percentiles and frames/s (of the processing time)."""
    lat = np.asarray(latency_s, dtype=np.float64)
    return {
        "latency_p50_s": float(np.percentile(lat, 50)) if len(lat) else None,
        "latency_p99_s": float(np.percentile(lat, 99)) if len(lat) else None,
        "latency_max_s": float(lat.max()) if len(lat) else None,
        "inference_s": busy_s, "wall_s": wall_s,
        "frames_per_s": len(lat) / busy_s if busy_s > 0 else None,
    }


class Stream:
    """The state of a stream: the growing sequence, the model with its EST memory and
    feature cache, the growing TSDF and what has been written."""

    def __init__(self, args, hooks: StreamHooks, device, ckpt, out: Path,
                 source: GrowingFolder):
        self.args, self.hooks, self.device, self.out = args, hooks, device, out
        self.source = source
        self.protocol = estm_protocol(args.lwindow, args.memory_size)
        self.model = hooks.make_model(args, device, ckpt)
        self.memory = (MemoryBuffer(self.protocol.memory_size)
                       if self.model.IF_EST_transformer else None)
        self.cache = FrameFeatureCache(self.model, [])
        self.seq, self.pictures, self.items = None, None, {}
        opts = args.predict
        self.volume = (fusion.GrowingTSDF(opts.voxel_size, opts.fuse_max_depth, device=device)
                       if args.fuse else None)
        self.frames, self.files, self.stems = [], [], set()
        self.latency, self.busy_s, self.fused, self.snapshots = [], 0.0, 0, 0
        self.start = time.perf_counter()

    def add(self, frame, seen_at: float) -> None:
        """A newly complete, selected frame (``seen_at``: perf_counter when it was seen);
        runs the window it completes."""
        stem = frame_stem(str(frame.color))
        if stem in self.stems:
            raise DataError(f"{frame.color}: another selected frame has the file name "
                            f"{stem!r}; outputs are named by it")
        self.stems.add(stem)
        if self.seq is None:
            self.seq = make_sequence(frame, self.source.K, self.args.height, self.args.width,
                                     str(self.source.root), self.source.K_source)
            self.seq.format = "folder"
            self.pictures = self.hooks.picture_writer(self.args, self.seq, self.out, 1.0)
        else:
            extend(self.seq, frame)
        size = self.protocol.params["lwindow"]
        if len(self.seq) >= size:
            self._run_window(list(range(len(self.seq) - size, len(self.seq))), seen_at)

    def _run_window(self, window: list, seen_at: float) -> None:
        """Predict the window's target, write it, fuse it; record its latency."""
        busy = time.perf_counter()
        self.items = {i: self.items[i] if i in self.items else self.seq[i] for i in window}
        batch = stack_frames([self.items[i] for i in window])
        outputs = decode_window(self.model, self.cache, self.memory, window, batch)
        targets = self.protocol.targets(window)
        self.cache.forget([window[0]], [index for _, index in targets])
        for t, index in targets:
            stem = frame_stem(str(self.seq.frames[index].color))
            self.files += self.hooks.write_target(
                self.args, self.out, self.pictures, stem, outputs, t,
                batch["imgs"][window.index(index)], self.seq.poses[index], 1.0)
            self.frames.append({"index": index, "stem": stem,
                                "image": batch["img_paths"][window.index(index)]})
            self._fuse_pending()
            done = time.perf_counter()
            self.latency.append(done - seen_at)
        self.busy_s += time.perf_counter() - busy
        every = self.args.predict.snapshot_every
        if self.volume is not None and every and len(self.frames) % every == 0:
            self.snapshot()

    def _fuse_pending(self) -> None:
        """Fuse the written frames not fused yet: their depth PNG read back, as the offline
        fusion reads it (the same quantised millimetres)."""
        if self.volume is None or self.fused == len(self.frames):
            return
        K_net = self.seq.cam_intr.numpy().astype(np.float64)
        for frame in self.frames[self.fused:]:
            depth = read_depth(self.out / "depth" / f"{frame['stem']}.png")
            K = resize_intrinsics(K_net, (self.args.height, self.args.width), depth.shape)
            self.volume.integrate(depth, K, self.seq.poses[frame["index"]])
            self.fused += 1

    def snapshot(self) -> dict:
        """Write ``mesh.ply`` (atomically: a viewer reloading it never sees half a file)."""
        mesh = self.volume.extract_mesh()
        fusion.save_ply(mesh, self.out / "mesh.ply")
        self.snapshots += 1
        return {"mesh": "mesh.ply", "faces": len(mesh), "vertices": len(mesh.vertices_v3)}

    def finish(self, ended: str) -> dict:
        """Everything of the frames so far: pictures, mesh, marker, ``summary.json``."""
        self._fuse_pending()  # a frame written just before Ctrl-C
        files = self.files + (self.pictures.finish() if self.pictures is not None else [])
        timing = latency_figures(self.latency, self.busy_s, time.perf_counter() - self.start)
        summary = {"format": self.hooks.summary_format, "version": self.hooks.version,
                   "input": str(self.args.input), "capture_format": "folder",
                   "checkpoint": self.args.loadckpt,
                   "random_weights": self.hooks.random_weights(self.args),
                   "frames": [f["stem"] for f in self.frames], "num_frames": len(self.frames),
                   "sequence_frames": len(self.seq) if self.seq is not None else 0,
                   "timing": timing,
                   "stream": {"ended": ended, "snapshots": self.snapshots,
                              "snapshot_every": self.args.predict.snapshot_every},
                   "options": {k: v for k, v in sorted(vars(self.args).items())}}
        if self.seq is not None:
            config_hash, hashed = self.hooks.run_identity(self.args, self.seq)
            summary.update({"config_hash": config_hash, "hashed": hashed,
                            "intrinsics_source": self.seq.K_source,
                            "pose_scale": {"scale": 1.0, "why": "folder captures are metric"}})
            marker = {"format": self.hooks.depth_format, "config_hash": config_hash,
                      "frames": self.frames,
                      "windows": max(0, len(self.seq) - self.protocol.params["lwindow"] + 1),
                      "inference_s": timing["inference_s"],
                      "frames_per_s": timing["frames_per_s"],
                      "random_weights": self.hooks.random_weights(self.args)}
            write_marker(self.out, marker, files, name=self.hooks.depth_marker)
        if self.volume is not None:
            summary["fusion"] = {**self.snapshot(), "voxel_size": self.args.predict.voxel_size,
                                 "max_depth": self.args.predict.fuse_max_depth,
                                 "volume_grown": self.volume.grown}
            summary["stream"]["snapshots"] = self.snapshots
        save_json(summary, str(self.out / self.hooks.summary))
        log.info("stream ended (%s): %d frames predicted, latency p50 %s s, p99 %s s, %s "
                 "frames/s", ended, len(self.frames), _fmt(timing["latency_p50_s"]),
                 _fmt(timing["latency_p99_s"]), _fmt(timing["frames_per_s"]))
        return summary


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def stream_loop(stream: Stream, source: GrowingFolder, opts, sleep=time.sleep) -> str:
    """Feed the stream every frame as it completes; how it ended: ``marker`` (after the
    last complete frame) or ``timeout``. Ctrl-C and errors propagate."""
    last_new = time.monotonic()
    while True:
        final = source.end_marked()  # looked at first: every frame before it is complete
        frames = source.poll(final=final)
        seen_at = time.perf_counter()
        for frame in frames:
            stream.add(frame, seen_at)
        if final:
            return "marker"
        if frames:
            last_new = time.monotonic()
        elif opts.stream_timeout and time.monotonic() - last_new >= opts.stream_timeout:
            log.info("no new frame for %.1f s: stopping", opts.stream_timeout)
            return "timeout"
        else:
            sleep(opts.stream_poll)


def prepare_output(out: Path, overwrite: bool, hooks: StreamHooks) -> None:
    """Empty what a previous run left; refuse a finished one unless ``overwrite``."""
    if (out / hooks.depth_marker).is_file() and not overwrite:
        raise RuntimeError(f"{out} holds a finished prediction; use another --output, or "
                           f"--overwrite True to replace it")
    for folder in OUTPUT_FOLDERS:
        shutil.rmtree(out / folder, ignore_errors=True)
    for name in (hooks.depth_marker, hooks.summary, "mesh.ply", "cloud.ply", "video.mp4"):
        (out / name).unlink(missing_ok=True)


def run_stream(args, hooks: StreamHooks, device, ckpt, source=None) -> dict:
    """``predict.py --stream``: follow ``--input`` until it ends; the summary.

    ``source``: the frames (default: :class:`GrowingFolder` of ``--input``); a test may
    pass its own. On Ctrl-C the summary says ``interrupted``; an error is raised after
    everything so far is saved.
    """
    opts = args.predict
    source = source or GrowingFolder(
        opts.input, args.frame_interval, opts.min_baseline, opts.min_rotation,
        opts.stream_end_marker, parse_intrinsics(args.intrinsics))
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    with folder_lock(str(out), "predict.py --stream"):
        prepare_output(out, args.overwrite, hooks)
        stream = Stream(args, hooks, device, ckpt, out, source)
        log.info("streaming %s -> %s (ESTM on %s; end marker %s, time-out %s s)", opts.input,
                 out, device, opts.stream_end_marker, opts.stream_timeout or "none")
        ended = "error"
        try:
            ended = stream_loop(stream, source, opts)
        except KeyboardInterrupt:
            ended = "interrupted"
            log.warning("interrupted (Ctrl-C): saving the %d frames so far", len(stream.frames))
        finally:
            summary = stream.finish(ended)
    return summary
