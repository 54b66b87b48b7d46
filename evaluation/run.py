"""What the two evaluators share: Joint (``eval_hybrid.py``) and ESTM (``eval_hybrid_seq.py``).

The run: options checked, the checkpoint's model built, each scene planned, inferred
(:mod:`evaluation.inference_loop`, protocols in :mod:`evaluation.protocols`) and written
(:mod:`evaluation.run_files`), then the metrics (:mod:`evaluation.run_metrics`).

One run evaluates every scene (ScanNet) or sequence (7-Scenes) of a list with one
checkpoint and one inference protocol, and writes, in the official layout::

    <evalpath>/<mode>/run.json                          configuration of the run
    <evalpath>/<mode>/<scene>[/<seq>]/init_depth/<frame>.npy (+ .jpg)
                                      refined_depth/...
                                      init_prob/...        (with --save_init_prob)
                                      refined_prob/...     (with --save_refined_prob)
                                      .done.json           completion marker, written last
    <evalpath>/<mode>/metrics.{json,csv}, metrics_frames.csv   (evaluation.run_metrics)

``<mode>`` is ``joint`` or ``estm`` and ``<frame>`` the colour image's file name without
its extension (``frame-000150.color``, ``123``), as the official scripts name depths.

Resuming: a scene is done only when its marker exists, names the configuration hash of
this run and every file it lists is present. A re-run skips done scenes and recomputes
any other scene from its first frame (the EST memory needs the stream from the start)
after deleting the scene folder, so nothing of an interrupted attempt survives and an
interrupted evaluation ends with the same files as an uninterrupted one. A marker written
under another configuration is an error unless ``--overwrite True``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import torch
from tqdm import tqdm

from evaluation import run_metrics as metrics_mod
from evaluation.inference_loop import infer_sequences
from evaluation.protocols import Protocol, estm_protocol, joint_protocol
from evaluation.run_files import (FORMAT_VERSION, MARKER_FORMAT, OUTPUT_KINDS, RUN_FILE,
                                  RUN_FORMAT, clear_attempt, frame_stem, read_marker, save_target,
                                  scene_is_done, write_marker)
from evaluation.scenes import (EVAL_DATASETS, effective_intrinsics, list_scenes, open_sequence,
                               scene_dirs)
from models import precision
from models.depthnet import DepthNetHybrid
from models.factory import checkpoint_options
from models.inference import prepare_for_inference
from utils.checkpoint import read_checkpoint
from utils.config import group_of, load_config, log_ignored, set_group
from utils.distributed import resolve_device
from utils.io import config_hash, file_sha256, folder_lock, remove_stale_temps, save_json
from utils.logs import setup_logging
from utils.options import EvalOptions, ModelOptions

log = logging.getLogger("eval")

SAVE_DTYPES = ("float32", "float16")


# --------------------------------------------------------------------------- model
def apply_checkpoint_options(args, ckpt: dict) -> None:
    """Take the model options the checkpoint was trained with, unless given explicitly
    (:func:`models.factory.checkpoint_options`).

    Raises:
        ValueError: an explicitly given option conflicts with the checkpoint.
    """
    given = getattr(args, "given", set())
    set_group(args, checkpoint_options(group_of(args, ModelOptions), ckpt, given,
                                       args.loadckpt))
    apply_trained_size(args, ckpt, given)


def apply_trained_size(args, ckpt: dict, given) -> None:
    """Run at the input size the checkpoint was trained at, unless ``--height``/``--width``
    were given (then a warning says the sizes differ). Official checkpoints record none:
    the defaults (the paper's 256x320) stay."""
    trained = ckpt.get("config") if isinstance(ckpt.get("config"), dict) else {}
    for key in ("height", "width"):
        if key not in trained or int(trained[key]) == getattr(args, key):
            continue
        if key in given:
            log.warning("--%s %d differs from the %d the checkpoint %s was trained at",
                        key, getattr(args, key), int(trained[key]), args.loadckpt)
        else:
            log.info("--%s %d from the checkpoint (default %d)", key, int(trained[key]),
                     getattr(args, key))
            setattr(args, key, int(trained[key]))


def build_model(args, device: torch.device, ckpt: Optional[dict] = None) -> DepthNetHybrid:
    """The model of the config with the checkpoint's weights loaded strictly, in eval mode."""
    if not args.loadckpt:
        raise ValueError("--loadckpt is required (the checkpoint to evaluate)")
    if ckpt is None:
        ckpt = read_checkpoint(args.loadckpt)
        apply_checkpoint_options(args, ckpt)
    opts = group_of(args, ModelOptions)
    model = DepthNetHybrid.from_options(opts, ckpt["model"],
                                        source=f"checkpoint {args.loadckpt!r}")
    log.info("loaded %s (ResNet-%d, %d planes %.2f-%.2f m, EST transformer %s)", args.loadckpt,
             opts.resnet, opts.ndepths, opts.depth_min, opts.depth_max,
             "on" if opts.IF_EST_transformer else "off")
    return model.to(device).eval()



def checkpoint_or_random_model(args, device: torch.device, ckpt: Optional[dict]):
    """The inference copy (models/inference.py) of ``--loadckpt``'s model, or of a model
    with ``--seed``'s random weights when no checkpoint is given (predict.py, export.py)."""
    if args.loadckpt:
        model = build_model(args, device, ckpt)
    else:
        torch.manual_seed(args.seed)
        model = DepthNetHybrid.from_options(args.model).to(device).eval()
    return prepare_for_inference(model)

# ------------------------------------------------------------------------- outputs
def enabled_kinds(opts: EvalOptions) -> list[str]:
    """The output folders the ``--save_*`` options ask for."""
    return [kind for kind, (_, _, option) in OUTPUT_KINDS.items() if getattr(opts, option)]


# ---------------------------------------------------------------------- run config
def run_identity(args, protocol: Protocol) -> tuple[str, dict]:
    """``(hash, hashed)``: everything that changes a scene's output files.

    Paths (data, output, checkpoint location), the device and the metric options are
    left out: they do not change the predictions (the checkpoint enters by content).
    """
    hashed = {
        "format_version": FORMAT_VERSION,
        "mode": protocol.name,
        **protocol.params,
        "checkpoint_sha256": file_sha256(args.loadckpt),
        "eval_dataset": args.eval_dataset,
        "height": args.height,
        "width": args.width,
        "frame_interval": args.frame_interval,
        "intrinsics": effective_intrinsics(args.eval_dataset, args.intrinsics),
        "resnet": args.resnet,
        "ndepths": args.ndepths,
        "depth_min": float(args.depth_min),
        "depth_max": float(args.depth_max),
        "IF_EST_transformer": bool(args.IF_EST_transformer),
        "outputs": enabled_kinds(args),
        "save_images": bool(args.save_images),
        "save_dtype": args.save_dtype,
        **({"amp": args.amp} if args.amp != "none" else {}),
    }
    return config_hash(hashed), hashed


def check_args(args: EvalOptions) -> None:
    """The evaluation options, checked before any work."""
    if args.eval_dataset not in EVAL_DATASETS:
        raise ValueError(f"--eval_dataset must be one of {EVAL_DATASETS}, got "
                         f"{args.eval_dataset!r}")
    if not args.datapath:
        raise ValueError("--datapath is required (the root of the test scans)")
    if not args.evalpath:
        raise ValueError("--evalpath is required (where predictions are written)")
    if not args.loadckpt:
        raise ValueError("--loadckpt is required (the checkpoint to evaluate)")
    if args.save_dtype not in SAVE_DTYPES:
        raise ValueError(f"--save_dtype must be one of {SAVE_DTYPES}, got {args.save_dtype!r}")
    if args.pred_resize not in metrics_mod.PRED_RESIZE_MODES:
        raise ValueError(f"--pred_resize must be one of {metrics_mod.PRED_RESIZE_MODES}, got "
                         f"{args.pred_resize!r}")
    metrics_mod.eval_depth_range(args.eval_dataset, args.min_depth_eval, args.max_depth_eval)
    if not any(getattr(args, option) for _, _, option in OUTPUT_KINDS.values()):
        raise ValueError("nothing to save: every --save_* option is False")


# ---------------------------------------------------------------------------- loop
class NothingPredictedError(ValueError):
    """A scene yields no window at all: evaluating it would predict no frame."""


def plan_scene(args, protocol: Protocol, name: str, folder: Path, depth_range: tuple):
    """``(sequence, windows)`` of one scene.

    Raises:
        NothingPredictedError: too few frames for one window, naming the options to change.
    """
    seq = open_sequence(args.eval_dataset, folder, args.height, args.width, args.frame_interval,
                        args.intrinsics, *depth_range)
    windows = protocol.windows(len(seq))
    if not windows:
        size = protocol.params.get("seq_len", protocol.params.get("lwindow"))
        option = "--seq_len" if "seq_len" in protocol.params else "--lwindow"
        raise NothingPredictedError(
            f"{name} ({folder}): {len(seq)} frame(s) at --frame_interval {args.frame_interval} "
            f"({seq.skipped_nonfinite} dropped for a non-finite pose) make no {protocol.name} "
            f"window of {size} frames, so nothing would be predicted: lower --frame_interval "
            f"(or {option}), or leave the scene out of the list")
    return seq, windows


class SceneWriter:
    """One scene's output files, written as its windows arrive; the marker after the last."""

    def __init__(self, args, protocol: Protocol, name: str, seq, windows: list,
                 scene_dir: Path, config_hash: str, bar):
        clear_attempt(scene_dir)  # an interrupted attempt: none of its files may survive
        targets = [pair for window in windows for pair in protocol.targets(window)]
        if len({i for _, i in targets}) != len(targets):  # windows must not overlap
            raise RuntimeError(f"{name}: the {protocol.name} windows would predict a frame twice")
        log.info("%s: %d frames (frame interval %d), %d skipped for a non-finite pose, %d "
                 "without ground truth; %d windows, %d target frames", name, len(seq),
                 args.frame_interval, seq.skipped_nonfinite, len(seq.missing_depth),
                 len(windows), len(targets))
        self.args, self.protocol, self.name, self.seq, self.windows = (args, protocol, name,
                                                                       seq, windows)
        self.scene_dir, self.config_hash, self.bar = scene_dir, config_hash, bar
        self.kinds = enabled_kinds(args)
        self.files, self.stems, self.frame_ids = [], [], []
        scene_dir.mkdir(parents=True, exist_ok=True)

    def add(self, window: list, batch: dict, outputs: dict) -> None:
        """Write the targets of one window."""
        for t, index in self.protocol.targets(window):
            position = window.index(index)
            stem = frame_stem(batch["img_paths"][position])
            self.files += save_target(self.scene_dir, stem, outputs, t, self.kinds,
                                      self.args.save_dtype, self.args.save_images)
            self.stems.append(stem)
            self.frame_ids.append(batch["frame_ids"][position])
            self.bar.update(1)

    def finish(self) -> dict:
        """Write the completion marker; returns it."""
        if not self.stems:  # windows always have targets; never mark an empty scene done
            raise NothingPredictedError(f"{self.name}: no frame was predicted")
        marker = {
            "format": MARKER_FORMAT,
            "version": FORMAT_VERSION,
            "scene": self.name,
            "mode": self.protocol.name,
            "config_hash": self.config_hash,
            "num_frames": len(self.stems),
            "frames": self.stems,
            "frame_ids": self.frame_ids,
            "sequence_frames": len(self.seq),
            "skipped_nonfinite": self.seq.skipped_nonfinite,
            "missing_depth": len(self.seq.missing_depth),
            "windows": len(self.windows),
        }
        return write_marker(self.scene_dir, marker, self.files)


def evaluate_scenes(model, args, protocol: Protocol, plans: dict, dirs: dict,
                    config_hash: str) -> dict:
    """Predict every target frame of the planned scenes, ``--batch_sequences`` scenes at a
    time (:func:`evaluation.inference_loop.infer_sequences`), writing each scene's files
    and, when its last window is written, its marker. Returns the markers by scene."""
    memory_size = protocol.memory_size if model.IF_EST_transformer else None
    total = sum(len(protocol.targets(w)) for _, windows in plans.values() for w in windows)
    writers, markers = {}, {}
    with tqdm(total=total, desc=protocol.name, unit="frame", dynamic_ncols=True) as bar:
        def jobs():
            for name, (seq, windows) in plans.items():
                writers[name] = SceneWriter(args, protocol, name, seq, windows, dirs[name],
                                            config_hash, bar)
                yield name, seq, windows

        for name, k, window, batch, outputs in infer_sequences(
                model, jobs(), memory_size, args.batch_sequences, args.num_workers):
            writers[name].add(window, batch, outputs)
            if k == len(writers[name].windows) - 1:
                markers[name] = writers.pop(name).finish()
                bar.set_postfix(scenes=f"{len(markers)}/{len(plans)}")
    return markers


def run_evaluation(args, protocol: Protocol) -> dict:
    """Evaluate every listed scene (resuming), then the metrics when ``--metrics``.

    The output folder ``<evalpath>/<mode>`` is locked for the whole run: a second
    evaluation into it is refused with the first one's details.

    Returns:
        ``{"run_dir", "config_hash", "scenes": {name: {"status", "frames",
        "skipped_nonfinite", "missing_depth"}}, "metrics": dict or None}``.
    """
    check_args(args.eval)
    device = resolve_device(args.device)
    run_dir = Path(args.evalpath) / protocol.name
    scenes = list_scenes(args.eval_dataset, args.datapath, args.testlist)
    dirs = scene_dirs(run_dir, scenes)
    ckpt = read_checkpoint(args.loadckpt)
    apply_checkpoint_options(args, ckpt)
    config_hash, hashed = run_identity(args, protocol)
    depth_range = metrics_mod.eval_depth_range(args.eval_dataset, args.min_depth_eval,
                                               args.max_depth_eval)
    with folder_lock(str(run_dir), f"{protocol.name} evaluation of {args.loadckpt}"):
        for path in remove_stale_temps(str(run_dir), recursive=True):
            log.info("removed %s, left by a killed run", path)
        # Refuse a folder holding another configuration's results before touching anything.
        done = {name for name, _ in scenes
                if scene_is_done(dirs[name], config_hash, args.overwrite)}
        # Every scene to compute must yield a window, before any work or deletion.
        plans = {name: plan_scene(args, protocol, name, Path(folder), depth_range)
                 for name, folder in scenes if name not in done}
        write_run_file(args, protocol, run_dir, config_hash, hashed, scenes)
        log.info("%s evaluation of %d scene(s) into %s (configuration %s, device %s)",
                 protocol.name, len(scenes), run_dir, config_hash, device)
        model = inference_model(args, device, ckpt)
        del ckpt
        markers = evaluate_scenes(model, args, protocol, plans, dirs, config_hash)
        summary = {}
        for name, _ in scenes:
            if name in done:
                marker = read_marker(dirs[name])
                log.info("%s: done (%d frames), skipped", name, marker["num_frames"])
            else:
                marker = markers[name]
            summary[name] = {"status": "skipped" if name in done else "evaluated",
                             "frames": marker["num_frames"],
                             "skipped_nonfinite": marker["skipped_nonfinite"],
                             "missing_depth": marker["missing_depth"]}
        log_summary(summary)
        metrics = saved_run_metrics(args, run_dir) if args.metrics else None
    return {"run_dir": str(run_dir), "config_hash": config_hash, "scenes": summary,
            "metrics": metrics}


def write_run_file(args, protocol: Protocol, run_dir: Path, config_hash: str, hashed: dict,
                   scenes: list) -> None:
    """``run.json``: the run's configuration (all options) and its scenes."""
    config = {k: v for k, v in sorted(vars(args).items()) if k not in ("evalpath", "config")}
    save_json({"format": RUN_FORMAT, "version": FORMAT_VERSION, "mode": protocol.name,
               "config_hash": config_hash, "hashed": hashed, "config": config,
               "scenes": [name for name, _ in scenes]}, str(run_dir / RUN_FILE))


def inference_model(args, device: torch.device, ckpt: dict) -> DepthNetHybrid:
    """The checkpoint's model as the evaluation runs it: precision policy, folded batch
    norm / ``torch.compile`` / CUDA graphs as asked, TF32 as asked."""
    model = build_model(args, device, ckpt)
    model.amp_dtype = precision.amp_dtype(args.amp)
    model = prepare_for_inference(model, fold_bn=args.fold_bn, compile=args.compile,
                                  cuda_graphs=args.cuda_graphs)
    precision.configure_tf32(args.allow_tf32)
    return model


def log_summary(summary: dict) -> None:
    log.info("%d scene(s): %d evaluated, %d already done; %d frames predicted; %d frame(s) "
             "skipped for a non-finite pose", len(summary),
             sum(s["status"] == "evaluated" for s in summary.values()),
             sum(s["status"] == "skipped" for s in summary.values()),
             sum(s["frames"] for s in summary.values()),
             sum(s["skipped_nonfinite"] for s in summary.values()))


def saved_run_metrics(args, run_dir: Path) -> dict:
    """The metrics of the saved run (:func:`evaluation.run_metrics.evaluate_saved`)."""
    return metrics_mod.evaluate_saved(
        run_dir, datapath=args.datapath, eval_dataset=args.eval_dataset,
        testlist=args.testlist, intrinsics=args.intrinsics,
        frame_interval=args.frame_interval, min_depth_eval=args.min_depth_eval,
        max_depth_eval=args.max_depth_eval, pred_resize=args.pred_resize,
        clamp_pred=args.clamp_pred, allow_partial=args.allow_partial)


def evaluate_command_line(mode: str, argv=None, description: str | None = None) -> dict:
    """``eval_hybrid.py`` (``mode="joint"``) and ``eval_hybrid_seq.py`` (``"estm"``): the
    options of ``argv`` read, logging set up, the run made (see :func:`run_evaluation`)."""
    args = load_config("eval", argv, description=description)
    setup_logging(args.log_level)
    log_ignored(args, log)
    if mode == "joint":
        protocol = joint_protocol(args.seq_len)
    elif mode == "estm":
        protocol = estm_protocol(args.lwindow, args.memory_size)
    else:
        raise ValueError(f"mode must be joint or estm, got {mode!r}")
    return run_evaluation(args, protocol)
