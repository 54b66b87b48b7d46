"""The files of an evaluation run: where each output goes, how it is written, and the
completion markers that say a scene is finished (layout: :mod:`evaluation.run`)."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Optional

import cv2

from utils.io import save_image, save_json, save_npy
from utils.visualization import colorize_depth, colorize_prob

log = logging.getLogger("eval")

# The depth maps a run saves per frame, in the official folder names: the scale-2 depth
# after EST fusion and the refined full-resolution depth.
DEPTH_KINDS = ("init_depth", "refined_depth")
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


def frame_stem(img_path: str) -> str:
    """Output name of a frame: its colour file name without the extension."""
    return os.path.splitext(os.path.basename(img_path))[0]


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


def read_marker(folder: Path, name: str = MARKER, fmt: str = MARKER_FORMAT) -> Optional[dict]:
    """The completion marker ``folder/name`` of format ``fmt``, or None."""
    try:
        marker = json.loads((folder / name).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and marker.get("format") == fmt else None


def write_marker(folder: Path, marker: dict, files: list, name: str = MARKER) -> dict:
    """Mark ``folder`` finished: ``marker`` with the ``files`` written and their sizes (a
    later truncation by a full disk or a copy is seen before use), written atomically last."""
    marker = {**marker, "files": list(files),
              "sizes": {rel: (folder / rel).stat().st_size for rel in files}}
    save_json(marker, str(folder / name))
    return marker


def finished_marker(folder: Path, config_hash: str, overwrite: bool, name: str = MARKER,
                    fmt: str = MARKER_FORMAT, other_output: str = "--evalpath") -> Optional[dict]:
    """The marker of a complete result of this configuration in ``folder``, else None (no
    marker, a damaged file, or another configuration with ``overwrite``).

    Raises:
        RuntimeError: ``folder`` holds a complete result of another configuration (and not
            ``overwrite``): mixing two configurations in one output folder is refused.
    """
    marker = read_marker(folder, name, fmt)
    if marker is None:
        return None
    if marker.get("config_hash") != config_hash:
        if overwrite:
            log.warning("%s: done under configuration %s, recomputing (--overwrite)",
                        folder, marker.get("config_hash"))
            return None
        raise RuntimeError(
            f"{folder} holds results of another configuration (hash "
            f"{marker.get('config_hash')}, this run {config_hash}). Use another "
            f"{other_output}, or --overwrite True to replace them.")
    damaged = damaged_files(folder, marker)
    if damaged:
        log.warning("%s: marked done but %d file(s) are missing or of another size than "
                    "written (e.g. %s); recomputing", folder, len(damaged), damaged[0])
        return None
    return marker


def scene_is_done(scene_dir: Path, config_hash: str, overwrite: bool) -> bool:
    """Whether ``scene_dir`` holds a complete result of this configuration (see
    :func:`finished_marker`)."""
    return finished_marker(scene_dir, config_hash, overwrite) is not None


def damaged_files(scene_dir: Path, marker: dict) -> list[str]:
    """The files a marker lists that are absent or not of the size recorded when written."""
    sizes = marker.get("sizes", {})
    damaged = []
    for rel in marker.get("files", []):
        path = scene_dir / rel
        if not path.is_file() or (rel in sizes and path.stat().st_size != sizes[rel]):
            damaged.append(rel)
    return damaged



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
