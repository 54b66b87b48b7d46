"""Export a model for deployment: ONNX graphs (and ``torch.export`` programs) of its
per-frame features and of its ESTM and Joint windows, run by onnxruntime.

    python export.py --loadckpt model_000006.ckpt --output model_onnx
    python predict.py --backend onnxruntime --onnx model_onnx --input my_capture

The model is the evaluation's inference copy (batch norm folded) at the checkpoint's input
size (``--height``/``--width`` to choose another), batch 1. Writes, into ``--output``
(built in a temporary folder beside it, renamed when complete): ``matching``, ``context``
and one ``decode`` graph per window kind and memory length, as ``.onnx`` (and ``.pt2``),
and ``manifest.json`` last (model options, size, graphs, versions, and the check: each
graph run by onnxruntime against eager PyTorch on the tracing inputs; a depth further than
``MAX_DEPTH_ERROR`` m from eager's fails the export). What each graph takes and gives:
models/export.py.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from evaluation.run import apply_checkpoint_options, checkpoint_or_random_model
from models import export as export_mod
from models.onnx_runtime import MANIFEST, MANIFEST_FORMAT
from utils.checkpoint import read_checkpoint
from utils.config import group_of, load_config
from utils.io import file_sha256, save_json
from utils.logs import setup_logging
from utils.options import ModelOptions

log = logging.getLogger("export")
VERSION = 1
MAX_DEPTH_ERROR = 1e-3  # m, onnxruntime against eager on the tracing inputs
WINDOW_KINDS = ("estm", "joint")
# The ONNX exporter's packages log every graph rewrite at INFO.
QUIET_LOGGERS = ("onnxscript", "onnx_ir", "torch.onnx")


def window_kinds(args) -> dict:
    """``{kind: (frames, memory views)}`` of ``--modes``."""
    kinds = [m.strip() for m in args.export.modes.split(",") if m.strip()]
    unknown = set(kinds) - set(WINDOW_KINDS)
    if unknown or not kinds:
        raise ValueError(f"--modes must name some of {', '.join(WINDOW_KINDS)}, got "
                         f"{args.export.modes!r}")
    if args.lwindow < 3 or args.seq_len < 3 or args.memory_size < 1:
        raise ValueError("--lwindow and --seq_len must be >= 3 and --memory_size >= 1")
    sizes = {"estm": (args.lwindow, args.memory_size), "joint": (args.seq_len, 1)}
    return {kind: sizes[kind] for kind in kinds}


def load_model(args):
    """The inference copy of ``--loadckpt`` (its options and size), or random weights."""
    ckpt = None
    if args.loadckpt:
        if not Path(args.loadckpt).is_file():
            raise FileNotFoundError(f"--loadckpt {args.loadckpt}: no such file")
        ckpt = read_checkpoint(args.loadckpt)
        apply_checkpoint_options(args, ckpt)
    else:
        log.warning("no --loadckpt: exporting RANDOM weights (for tests and timing only)")
    return checkpoint_or_random_model(args, torch.device("cpu"), ckpt)


def run_onnx(path: Path, names: list, args: tuple) -> list:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {n: np.ascontiguousarray(a.numpy()) for n, a in zip(names, args)})


def export_part(part, args: tuple, folder: Path, name: str, input_names: list,
                output_names: list, torch_export: bool) -> dict:
    """Export one part; returns its manifest entry with the largest difference between
    onnxruntime's and eager's outputs (per output)."""
    start = time.perf_counter()
    program = export_mod.export_program(part, args)
    files = {}
    if torch_export:
        torch.export.save(program, str(folder / f"{name}.pt2"))
        files["pt2"] = f"{name}.pt2"
    export_mod.save_onnx(program, args, str(folder / f"{name}.onnx"), input_names,
                         output_names)
    files["onnx"] = f"{name}.onnx"
    with torch.no_grad():
        eager = part(*args)
    eager = eager if isinstance(eager, tuple) else (eager,)
    onnx_out = run_onnx(folder / files["onnx"], input_names, args)
    errors = {out: float(np.abs(o - e.numpy()).max())
              for out, o, e in zip(output_names, onnx_out, eager)}
    log.info("%s: exported in %.0f s; onnxruntime - eager, largest: %s", name,
             time.perf_counter() - start, ", ".join(f"{k} {v:.2e}" for k, v in errors.items()))
    return {**files, "max_abs_error": errors}


def export_graphs(model, folder: Path, args, kinds: dict) -> dict:
    """Every graph of ``kinds`` into ``folder``; ``{"graphs": ..., "check": ...}``."""
    torch_export = args.export.torch_export
    inputs = export_mod.example_inputs(model, args.height, args.width, 3, 0)
    image = (inputs["image"],)
    check = {
        "matching": export_part(export_mod.MatchingPart(model), image, folder, "matching",
                                ["image"], ["matching"], torch_export),
        "context": export_part(export_mod.ContextPart(model), image, folder, "context",
                               ["image"], [f"context{i}" for i in
                                           range(export_mod.CONTEXT_MAPS)], torch_export),
    }
    graphs = {"matching": "matching.onnx", "context": "context.onnx", "decode": {}}
    for kind, (frames, max_views) in kinds.items():
        views = range(max_views + 1) if model.IF_EST_transformer else [0]
        graphs["decode"][kind] = {"frames": frames, "memory": {}}
        for k in views:
            name = f"{kind}_decode_m{k}"
            args_k = export_mod.example_inputs(model, args.height, args.width, frames, k)
            check[name] = export_part(export_mod.DecodePart(model, frames, k),
                                      args_k["decode"], folder, name,
                                      export_mod.decode_input_names(k),
                                      list(export_mod.DECODE_OUTPUTS), torch_export)
            graphs["decode"][kind]["memory"][str(k)] = f"{name}.onnx"
    worst = max(c["max_abs_error"]["depth"] for n, c in check.items() if "decode" in n)
    if worst > MAX_DEPTH_ERROR:
        raise RuntimeError(f"onnxruntime's depth differs from eager's by {worst:.2e} m "
                           f"(> {MAX_DEPTH_ERROR} m): the export is not used")
    return {"graphs": graphs, "check": check, "max_depth_error_m": worst}


def prepare_output(out: Path, overwrite: bool) -> Path:
    """A fresh temporary folder beside ``out`` (stale ones of killed runs removed)."""
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"--output {out} exists and is not empty; pass --overwrite to "
                              f"replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(f".{out.name}.partial-*"):
        shutil.rmtree(stale, ignore_errors=True)
    temp = out.parent / f".{out.name}.partial-{os.getpid()}"
    temp.mkdir()
    return temp


def finish_output(temp: Path, out: Path) -> None:
    """Put the complete export in place of ``out`` (a reader sees the old or the new)."""
    if out.exists():
        old = out.parent / f".{out.name}.partial-old-{os.getpid()}"
        os.replace(out, old)
        os.replace(temp, out)
        shutil.rmtree(old)
    else:
        os.replace(temp, out)


def main(argv=None) -> dict:
    args = load_config("export", argv, description=__doc__)
    setup_logging(args.log_level)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, log.getEffectiveLevel()))
    kinds = window_kinds(args)
    model = load_model(args)
    out = Path(args.output)
    temp = prepare_output(out, args.export.overwrite)
    try:
        result = export_graphs(model, temp, args, kinds)
        manifest = {
            "format": MANIFEST_FORMAT, "version": VERSION,
            "model": dataclasses.asdict(group_of(args, ModelOptions)), "height": args.height,
            "width": args.width, "checkpoint": args.loadckpt,
            "checkpoint_sha256": file_sha256(args.loadckpt) if args.loadckpt else None,
            "random_weights": not args.loadckpt, "seed": None if args.loadckpt else args.seed,
            "opset": export_mod.OPSET,
            "torch": torch.__version__, **result,
        }
        save_json(manifest, str(temp / MANIFEST))
        finish_output(temp, out)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    log.info("wrote %s (largest depth difference from eager %.2e m)", out,
             manifest["max_depth_error_m"])
    return manifest


if __name__ == "__main__":
    main()
