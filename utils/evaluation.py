"""What the two evaluators share: Joint (``eval_hybrid.py``) and ESTM (``eval_hybrid_seq.py``).

One run evaluates every scene (ScanNet) or sequence (7-Scenes) of a list with one
checkpoint and one inference protocol, and writes, in the official layout::

    <evalpath>/<mode>/run.json                          configuration of the run
    <evalpath>/<mode>/<scene>[/<seq>]/init_depth/<frame>.npy (+ .jpg)
                                      refined_depth/...
                                      init_prob/...        (with --save_init_prob)
                                      refined_prob/...     (with --save_refined_prob)
                                      .done.json           completion marker, written last
    <evalpath>/<mode>/metrics.{json,csv}, metrics_frames.csv   (utils.metrics)

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

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, Iterator, Optional

import cv2
import torch
from tqdm import tqdm

from datasets.scannet import ScanNetSequence
from datasets.sequence import FrameSequence, stack_frames
from datasets.seven_scenes import TEST_LIST as SEVEN_SCENES_TEST_LIST
from datasets.seven_scenes import SevenScenesSequence, is_sequence_dir, list_sequences
from datasets.io import listed_dirs
from datasets.windows import joint_windows, sliding_windows
from models import DepthNetHybrid, precision
from models.depthnet import check_inputs
from models.factory import checkpoint_options
from models.inference import prepare_for_inference
from models.memory import MemoryBuffer
from utils import metrics as metrics_mod
from utils.checkpoint import read_checkpoint
from utils.config import group_of, set_group
from utils.depth_kinds import DEPTH_KINDS  # noqa: F401  (importable from here too)
from utils.distributed import resolve_device
from utils.io import folder_lock, remove_stale_temps, save_image, save_json, save_npy
from utils.options import EvalOptions, ModelOptions
from utils.visualization import colorize_depth, colorize_prob

log = logging.getLogger("eval")

ROOT = Path(__file__).resolve().parents[1]
SCANNET_TEST_LIST = ROOT / "data" / "scannet_split" / "test_split.txt"
EVAL_DATASETS = ("scannet", "7scenes", "synthetic")
SAVE_DTYPES = ("float32", "float16")
RUN_FILE = "run.json"
MARKER = ".done.json"
RUN_FORMAT = "estdepth/eval-run"
MARKER_FORMAT = "estdepth/eval-scene"
FORMAT_VERSION = 1
# Depth colour maps span 0..5 m, as the official scripts' colorize_depth(max_depth=5.0).
COLOR_MAX_DEPTH = 5.0

# Output folder -> (model output key for target t, picture kind, option that enables it).
OUTPUT_KINDS = {
    "init_depth": (lambda t: ("depth", t, 2), "depth", "save_init_depth"),
    "refined_depth": (lambda t: ("depth", t, 0), "depth", "save_refined_depth"),
    "init_prob": (lambda t: ("init_prob", t), "prob", "save_init_prob"),
    "refined_prob": (lambda t: ("fused_prob", t), "prob", "save_refined_prob"),
}


# ------------------------------------------------------------------------ protocols
@dataclass(frozen=True)
class Protocol:
    """An inference protocol: which windows run, which outputs they keep, how much memory.

    ``windows(n)`` lists the windows (indices into the subsampled frames) of a sequence of
    ``n`` frames; ``targets(window)`` gives ``(output index, frame index)`` of the frames
    the window's outputs are saved for; ``memory_size`` windows of EST memory are kept.
    """

    name: str
    windows: Callable[[int], list]
    targets: Callable[[list], list]
    memory_size: int
    params: dict = field(default_factory=dict)


def _inner_targets(window: list) -> list:
    return [(t, window[t + 1]) for t in range(len(window) - 2)]


def joint_protocol(seq_len: int = 5) -> Protocol:
    """Official Joint: windows of ``seq_len`` stepping by ``seq_len - 2``, targets the inner
    frames, each window given the previous window's memory."""
    if seq_len < 3:
        raise ValueError(f"--seq_len must be at least 3, got {seq_len}")
    return Protocol("joint", partial(joint_windows, window=seq_len, step=seq_len - 2),
                    _inner_targets, memory_size=1, params={"seq_len": seq_len})


def estm_protocol(lwindow: int = 3, memory_size: int = 2) -> Protocol:
    """Official ESTM: a window of ``lwindow`` frames sliding one frame at a time, the
    memories of the last ``memory_size`` windows, the middle frame as target.

    The model predicts every inner frame of a window; the middle one (frame
    ``lwindow // 2``) is output ``lwindow // 2 - 1``. (The official script saved output 0
    under the middle frame's name, which is the same thing only for ``lwindow = 3``.)
    """
    if lwindow < 3:
        raise ValueError(f"--lwindow must be at least 3, got {lwindow}")
    if memory_size < 1:
        raise ValueError(f"--memory_size must be at least 1, got {memory_size}")
    middle = lwindow // 2
    return Protocol("estm", partial(sliding_windows, size=lwindow),
                    lambda window: [(middle - 1, window[middle])], memory_size=memory_size,
                    params={"lwindow": lwindow, "memory_size": memory_size})


# --------------------------------------------------------------------- scenes & data
def effective_intrinsics(eval_dataset: str, intrinsics: str) -> str:
    """Synthetic data ships exact per-scene intrinsics, which are always used."""
    return "scene" if eval_dataset == "synthetic" else intrinsics


def default_testlist(eval_dataset: str, datapath) -> Path:
    if eval_dataset == "scannet":
        return SCANNET_TEST_LIST
    if eval_dataset == "synthetic":
        return Path(datapath) / "splits" / "test_split.txt"
    if eval_dataset == "7scenes":
        return SEVEN_SCENES_TEST_LIST
    raise ValueError(f"--eval_dataset must be one of {EVAL_DATASETS}, got {eval_dataset!r}")


def list_scenes(eval_dataset: str, datapath, testlist=None) -> list[tuple[str, Path]]:
    """``(name, folder)`` of every scene/sequence to evaluate, in list order.

    ``name`` is the output sub-folder: the scene (ScanNet, synthetic) or ``scene/seq``
    (7-Scenes; for a single sequence folder given as ``datapath``, its parent's name and
    its own).
    """
    if eval_dataset not in EVAL_DATASETS:
        raise ValueError(f"--eval_dataset must be one of {EVAL_DATASETS}, got {eval_dataset!r}")
    if not datapath:
        raise ValueError("--datapath is required (the root of the test scans)")
    datapath = Path(datapath)
    listed = testlist or default_testlist(eval_dataset, datapath)
    if eval_dataset == "7scenes":
        if is_sequence_dir(datapath):
            # resolved: "." or "seq/.." have no name of their own
            resolved = datapath.resolve()
            return [(f"{resolved.parent.name}/{resolved.name}", datapath)]
        return [(p.relative_to(datapath).as_posix(), p) for p in list_sequences(datapath, listed)]
    return [(p.relative_to(datapath).as_posix(), p) for p in listed_dirs(datapath, listed)]


def scene_dirs(run_dir: Path, scenes: list) -> dict:
    """``{name: output folder}``, each strictly inside ``run_dir`` and none inside another.

    A scene's folder is deleted when its evaluation restarts, so a name like ``.``,
    ``..``, ``a/../b`` or one scene nested in another would let one scene delete others'
    results (or the run's own files).

    Raises:
        ValueError: naming the offending scene name(s).
    """
    root = Path(run_dir).resolve()
    dirs = {}
    for name, _ in scenes:
        parts = Path(name).parts
        target = (root / name).resolve()
        if (not name or Path(name).is_absolute() or any(p in (".", "..") for p in parts)
                or root not in target.parents):
            raise ValueError(f"scene name {name!r} does not resolve to a folder strictly inside "
                             f"{root} (check --datapath and the split file's lines)")
        if name in dirs:
            raise ValueError(f"scene {name!r} is listed twice (check the split file)")
        dirs[name] = target
    for name, target in dirs.items():
        for other, other_dir in dirs.items():
            if other != name and target in other_dir.parents:
                raise ValueError(f"scene {other!r} lies inside scene {name!r}: their outputs "
                                 f"would overlap (check the split file)")
    return dirs


def open_sequence(eval_dataset: str, folder, height: int, width: int, frame_interval: int,
                  intrinsics: str, depth_min: float, depth_max: float) -> FrameSequence:
    """The evaluation frames of one scene; ground truth is valid in ``[depth_min, depth_max]``."""
    cls = SevenScenesSequence if eval_dataset == "7scenes" else ScanNetSequence
    return cls(folder, height=height, width=width, frame_interval=frame_interval,
               depth_min=depth_min, depth_max=depth_max,
               intrinsics=effective_intrinsics(eval_dataset, intrinsics))


def frame_stem(img_path: str) -> str:
    """Output name of a frame: its colour file name without the extension."""
    return os.path.splitext(os.path.basename(img_path))[0]


# --------------------------------------------------------------------------- model
def apply_checkpoint_options(args, ckpt: dict) -> None:
    """Take the model options the checkpoint was trained with, unless given explicitly
    (:func:`models.factory.checkpoint_options`).

    Raises:
        ValueError: an explicitly given option conflicts with the checkpoint.
    """
    set_group(args, checkpoint_options(group_of(args, ModelOptions), ckpt,
                                       getattr(args, "given", set()), args.loadckpt))


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


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host -> device copy that does not block the host (pinned memory) on CUDA."""
    if device.type != "cuda":
        return x.to(device)
    return x.pin_memory().to(device, non_blocking=True)


class FrameFeatureCache:
    """Each frame's matching (and, for targets, context) features, computed once per
    sequence and dropped after the last window that uses them.

    A frame's features depend on its image only, so the windows that share a frame
    (ESTM: three, Joint: two) can share them; nothing else a window computes is shared
    (each frame is a target of one window, and its cost volume and EST fusion depend on
    the window's neighbours and memory).
    """

    def __init__(self, model: DepthNetHybrid, windows: list):
        self.model = model
        # The last window that needs a frame's matching / context (targets) features.
        self.last_use = {i: k for k, window in enumerate(windows) for i in window}
        self.last_target = {i: k for k, window in enumerate(windows) for i in window[1:-1]}
        self.matching: dict = {}
        self.context: dict = {}

    def features(self, window: list, imgs_n3hw: torch.Tensor, device: torch.device):
        """``(matching per frame, context maps of the targets)`` for :meth:`decode`.

        ``imgs_n3hw`` (host) holds the window's images; only frames without cached
        features are copied to ``device`` and run through the feature nets, one frame at a
        time as the model's own eval forward does (bit-identical features).
        """
        targets = window[1:-1]
        for p, i in enumerate(window):
            is_target = 0 < p < len(window) - 1
            if i in self.matching and (i in self.context or not is_target):
                continue
            img = to_device(imgs_n3hw[p:p + 1], device)
            if i not in self.matching:
                self.matching[i] = self.model.matching_features(img)
            if is_target and i not in self.context:
                self.context[i] = self.model.context_features(img)
        matching = [self.matching[i] for i in window]
        per_target = [self.context[i] for i in targets]
        context = [maps[0] if len(targets) == 1 else torch.cat(maps)
                   for maps in zip(*per_target)]
        return matching, context

    def release(self, k: int) -> None:
        """Forget the frames no window after the ``k``-th uses."""
        for store, last in ((self.matching, self.last_use), (self.context, self.last_target)):
            for i in [i for i in store if last[i] <= k]:
                del store[i]


@torch.no_grad()
def infer_windows(model: DepthNetHybrid, seq, windows: list, memory: Optional[MemoryBuffer],
                  cache_features: bool = True) -> Iterator[tuple[list, dict, dict]]:
    """Run the model on each window in order, threading the EST memory between them.

    The official call: ``outputs, new_costs, new_poses = model(imgs, cam_poses, cam_intr,
    None, pre_costs, pre_cam_poses, mode="val")`` with ``(pre_costs, pre_cam_poses)`` the
    memory of earlier windows, then the new memory is pushed. ``memory=None`` runs every
    window alone (the model without the EST transformer). Frames shared by consecutive
    windows are read once. With ``cache_features`` (default) each frame's features are
    computed once (:class:`FrameFeatureCache`) and the window is decoded from them
    (:meth:`DepthNetHybrid.decode`): the same numbers as the official call up to float
    rounding, without recomputing shared frames; ``False`` makes the official call.
    Inputs are checked on the host and copied without blocking it, and nothing in the
    loop waits for the device.

    Yields:
        ``(window, batch, outputs)``: ``batch`` is :func:`datasets.sequence.stack_frames`
        of the window, ``outputs`` the model's (batch size 1).
    """
    device = next(model.parameters()).device
    if memory is not None:
        memory.reset()
    cache = FrameFeatureCache(model, windows) if cache_features else None
    items: dict = {}
    for k, window in enumerate(windows):
        items = {i: items[i] if i in items else seq[i] for i in window}
        batch = stack_frames([items[i] for i in window])
        pre_costs, pre_cam_poses = memory.as_inputs() if memory is not None else (None, None)
        poses, intr = (to_device(batch[key][None], device) for key in ("cam_poses", "cam_intr"))
        if cache is None:
            outputs, new_costs, new_poses = model(
                to_device(batch["imgs"][None], device), poses, intr, None, pre_costs,
                pre_cam_poses, mode="val")
        else:
            check_inputs(batch["imgs"][None], batch["cam_poses"][None], batch["cam_intr"][None])
            matching, context = cache.features(window, batch["imgs"], device)
            outputs, new_costs, new_poses = model.decode(
                matching, context, poses, intr,
                None if pre_costs is None else (pre_costs, pre_cam_poses))
            cache.release(k)
        if memory is not None:
            memory.push(new_costs, new_poses)
        yield window, batch, outputs


# ------------------------------------------------------------------------- outputs
def enabled_kinds(opts: EvalOptions) -> list[str]:
    """The output folders the ``--save_*`` options ask for."""
    return [kind for kind, (_, _, option) in OUTPUT_KINDS.items() if getattr(opts, option)]


def save_target(scene_dir: Path, stem: str, outputs: dict, t: int, kinds: list, dtype: str,
                images: bool) -> list[str]:
    """Write target ``t`` of a window's outputs; returns the written paths (scene-relative)."""
    written = []
    for kind in kinds:
        key, picture, _ = OUTPUT_KINDS[kind]
        value = outputs[key(t)][0, 0].detach().float().cpu().numpy()
        rel = f"{kind}/{stem}"
        save_npy(value.astype(dtype), str(scene_dir / f"{rel}.npy"))
        written.append(f"{rel}.npy")
        if images:
            rgb = (colorize_depth(value, max_depth=COLOR_MAX_DEPTH) if picture == "depth"
                   else colorize_prob(value))
            save_image(str(scene_dir / f"{rel}.jpg"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            written.append(f"{rel}.jpg")
    return written


def read_marker(scene_dir: Path) -> Optional[dict]:
    try:
        marker = json.loads((scene_dir / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and marker.get("format") == MARKER_FORMAT else None


def scene_is_done(scene_dir: Path, config_hash: str, overwrite: bool) -> bool:
    """Whether ``scene_dir`` holds a complete result of this configuration.

    Raises:
        RuntimeError: it holds a complete result of another configuration (and not
            ``overwrite``): mixing two configurations in one run folder is refused.
    """
    marker = read_marker(scene_dir)
    if marker is None:
        return False
    if marker.get("config_hash") != config_hash:
        if overwrite:
            log.warning("%s: done under configuration %s, recomputing (--overwrite)",
                        scene_dir, marker.get("config_hash"))
            return False
        raise RuntimeError(
            f"{scene_dir} was evaluated with another configuration (hash "
            f"{marker.get('config_hash')}, this run {config_hash}; see run.json and the "
            f"marker's 'config'). Use another --evalpath, or --overwrite True to replace it.")
    damaged = damaged_files(scene_dir, marker)
    if damaged:
        log.warning("%s: marked done but %d file(s) are missing or of another size than "
                    "written (e.g. %s); recomputing", scene_dir, len(damaged), damaged[0])
        return False
    return True


def damaged_files(scene_dir: Path, marker: dict) -> list[str]:
    """The files a marker lists that are absent or not of the size recorded when written."""
    sizes = marker.get("sizes", {})
    damaged = []
    for rel in marker.get("files", []):
        path = scene_dir / rel
        if not path.is_file() or (rel in sizes and path.stat().st_size != sizes[rel]):
            damaged.append(rel)
    return damaged


# ---------------------------------------------------------------------- run config
def file_sha256(path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


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
    text = json.dumps(hashed, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16], hashed


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


def clear_attempt(scene_dir: Path) -> None:
    """Delete an unfinished attempt at a scene, refusing if it holds finished results.

    Scene folders never overlap (:func:`scene_dirs`) and a finished scene is deleted only
    when it is recomputed on purpose; this is the last guard that a scene folder holds no
    other scene's marker and no run's files.
    """
    if not scene_dir.exists():
        return
    foreign = [p for p in scene_dir.rglob("*")
               if (p.name == MARKER and p.parent != scene_dir) or p.name == RUN_FILE]
    if foreign:
        raise RuntimeError(f"refusing to delete {scene_dir}: it holds other results "
                           f"({foreign[0]})")
    shutil.rmtree(scene_dir)


def evaluate_scene(model, args, protocol: Protocol, name: str, seq, windows: list,
                   scene_dir: Path, config_hash: str) -> dict:
    """Predict every target frame of one scene and write its files, the marker last."""
    clear_attempt(scene_dir)  # an interrupted attempt: none of its files may survive
    targets = [pair for window in windows for pair in protocol.targets(window)]
    assert len({i for _, i in targets}) == len(targets), "a frame would be predicted twice"
    log.info("%s: %d frames (frame interval %d), %d skipped for a non-finite pose, %d without "
             "ground truth; %d windows, %d target frames", name, len(seq), args.frame_interval,
             seq.skipped_nonfinite, len(seq.missing_depth), len(windows), len(targets))

    memory = (MemoryBuffer(protocol.memory_size) if model.IF_EST_transformer else None)
    kinds = enabled_kinds(args)
    files, stems, frame_ids = [], [], []
    scene_dir.mkdir(parents=True, exist_ok=True)
    with tqdm(total=len(targets), desc=name, unit="frame", dynamic_ncols=True) as bar:
        for window, batch, outputs in infer_windows(model, seq, windows, memory):
            for t, index in protocol.targets(window):
                position = window.index(index)
                stem = frame_stem(batch["img_paths"][position])
                files += save_target(scene_dir, stem, outputs, t, kinds, args.save_dtype,
                                     args.save_images)
                stems.append(stem)
                frame_ids.append(batch["frame_ids"][position])
                bar.update(1)
    if not stems:  # windows always have targets; never mark an empty scene done
        raise NothingPredictedError(f"{name}: no frame was predicted")
    marker = {
        "format": MARKER_FORMAT,
        "version": FORMAT_VERSION,
        "scene": name,
        "mode": protocol.name,
        "config_hash": config_hash,
        "num_frames": len(stems),
        "frames": stems,
        "frame_ids": frame_ids,
        "sequence_frames": len(seq),
        "skipped_nonfinite": seq.skipped_nonfinite,
        "missing_depth": len(seq.missing_depth),
        "windows": len(windows),
        "files": files,
        # sizes as written: a later truncation (full disk, copy) is seen before use
        "sizes": {rel: (scene_dir / rel).stat().st_size for rel in files},
    }
    save_json(marker, str(scene_dir / MARKER))
    return marker


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
        config = {k: v for k, v in sorted(vars(args).items()) if k not in ("evalpath", "config")}
        save_json({"format": RUN_FORMAT, "version": FORMAT_VERSION, "mode": protocol.name,
                   "config_hash": config_hash, "hashed": hashed, "config": config,
                   "scenes": [name for name, _ in scenes]}, str(run_dir / RUN_FILE))
        log.info("%s evaluation of %d scene(s) into %s (configuration %s, device %s)",
                 protocol.name, len(scenes), run_dir, config_hash, device)

        model = build_model(args, device, ckpt)
        model.amp_dtype = precision.amp_dtype(args.amp)
        model = prepare_for_inference(model, fold_bn=args.fold_bn, compile=args.compile)
        precision.configure_tf32(args.allow_tf32)
        del ckpt
        summary = {}
        for name, _ in scenes:
            if name in done:
                marker = read_marker(dirs[name])
                log.info("%s: done (%d frames), skipped", name, marker["num_frames"])
                status = "skipped"
            else:
                marker = evaluate_scene(model, args, protocol, name, *plans.pop(name),
                                        dirs[name], config_hash)
                status = "evaluated"
            summary[name] = {"status": status, "frames": marker["num_frames"],
                             "skipped_nonfinite": marker["skipped_nonfinite"],
                             "missing_depth": marker["missing_depth"]}
        log.info("%d scene(s): %d evaluated, %d already done; %d frames predicted; %d frame(s) "
                 "skipped for a non-finite pose", len(summary),
                 sum(s["status"] == "evaluated" for s in summary.values()),
                 sum(s["status"] == "skipped" for s in summary.values()),
                 sum(s["frames"] for s in summary.values()),
                 sum(s["skipped_nonfinite"] for s in summary.values()))

        metrics = None
        if args.metrics:
            metrics = metrics_mod.evaluate_saved(
                run_dir, datapath=args.datapath, eval_dataset=args.eval_dataset,
                testlist=args.testlist, intrinsics=args.intrinsics,
                frame_interval=args.frame_interval, min_depth_eval=args.min_depth_eval,
                max_depth_eval=args.max_depth_eval, pred_resize=args.pred_resize,
                clamp_pred=args.clamp_pred, allow_partial=args.allow_partial)
    return {"run_dir": str(run_dir), "config_hash": config_hash, "scenes": summary,
            "metrics": metrics}
