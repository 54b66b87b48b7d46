"""An exported model (export.py's folder) run by onnxruntime, with the interface the
evaluation loop uses (evaluation.inference_loop: ``matching_features``,
``context_features``, ``decode``), so predict.py runs it like the eager inference copy."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from models.export import CONTEXT_MAPS, DECODE_OUTPUTS, decode_input_names
from models.memory import ESTMemory

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"
MANIFEST_FORMAT = "estdepth/export"


def read_manifest(folder: str | Path) -> dict:
    """The export's ``manifest.json``; an error names the folder when it is not one."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{folder}: no {MANIFEST}; not a folder written by export.py "
                                f"(or its export did not finish)")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"{path}: format {manifest.get('format')!r}, expected "
                         f"{MANIFEST_FORMAT!r}")
    return manifest


def apply_manifest(args, folder: Optional[str]) -> dict:
    """Set ``args``' model options and input size to the export's; refuse ``--loadckpt``
    (the export holds the weights), explicit options that differ and windows it lacks."""
    if not folder:
        raise ValueError("--backend onnxruntime needs --onnx (a folder written by export.py)")
    if args.loadckpt:
        raise ValueError(f"--loadckpt with --backend onnxruntime: the export {folder} holds "
                         f"the weights (export.py --loadckpt)")
    manifest = read_manifest(folder)
    given = getattr(args, "given", set())
    wanted = {**manifest["model"], "height": manifest["height"], "width": manifest["width"]}
    for key, value in wanted.items():
        if key in given and getattr(args, key) != value:
            raise ValueError(f"--{key} {getattr(args, key)} differs from the export's {value} "
                             f"({folder})")
        setattr(args, key, value)
    window = manifest["graphs"]["decode"].get(args.mode)
    frames = args.lwindow if args.mode == "estm" else args.seq_len
    views = args.memory_size if args.mode == "estm" else 1
    if window is None or window["frames"] != frames or (
            manifest["model"]["IF_EST_transformer"] and str(views) not in window["memory"]):
        raise ValueError(f"{folder}: no {args.mode} graphs for {frames}-frame windows with "
                         f"{views} memory views (exported: {manifest['graphs']['decode']}; "
                         f"export.py --modes --lwindow --seq_len --memory_size)")
    return manifest


def providers(device: str = "auto") -> list[str]:
    """onnxruntime execution providers: CUDA where onnxruntime has it (and ``device`` is not
    ``cpu``), then the CPU."""
    import onnxruntime

    available = onnxruntime.get_available_providers()
    chosen = ["CPUExecutionProvider"]
    if device != "cpu" and "CUDAExecutionProvider" in available:
        chosen.insert(0, "CUDAExecutionProvider")
    elif device.startswith("cuda"):
        raise RuntimeError(f"--device {device}: this onnxruntime has no CUDA provider "
                           f"(available: {', '.join(available)}); install onnxruntime-gpu")
    return chosen


class OnnxModel:
    """The graphs of an export for one protocol (``mode``: estm or joint)."""

    def __init__(self, folder: str | Path, mode: str, device: str = "auto", threads: int = 0):
        import onnxruntime

        self.folder, self.manifest = Path(folder), read_manifest(folder)
        graphs = self.manifest["graphs"]
        if mode not in graphs["decode"]:
            raise ValueError(f"{folder}: exported for {', '.join(graphs['decode'])}, not "
                             f"{mode} (export.py --modes)")
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.providers = providers(device)

        def session(name: str):
            return onnxruntime.InferenceSession(str(self.folder / name), options,
                                                providers=self.providers)

        self.matching = session(graphs["matching"])
        self.context = session(graphs["context"])
        self.window = graphs["decode"][mode]
        self.decoders = {int(k): session(name) for k, name in self.window["memory"].items()}
        self.IF_EST_transformer = self.manifest["model"]["IF_EST_transformer"]
        self.device = torch.device("cpu")  # inputs and outputs are host tensors
        log.info("onnxruntime (%s) runs %s", ", ".join(self.providers), folder)

    def matching_features(self, imgs_n3hw: torch.Tensor) -> torch.Tensor:
        (matching,) = self.matching.run(None, {"image": _numpy(imgs_n3hw)})
        return torch.from_numpy(matching)

    def context_features(self, imgs_n3hw: torch.Tensor) -> list:
        return [torch.from_numpy(x) for x in self.context.run(None,
                                                              {"image": _numpy(imgs_n3hw)})]

    def decode(self, matching: list, context_feats: list, world_T_cam_bn44, cam_intr,
               memory: Optional[ESTMemory] = None) -> tuple[dict, ESTMemory]:
        """:meth:`models.depthnet.DepthNetHybrid.decode`'s outputs that predict.py reads:
        ``("depth", t, 0)`` and ``("fused_prob", t)`` (as its peak ``[B, 1, h, w]``)."""
        views = len(memory) if memory is not None and self.IF_EST_transformer else 0
        if len(matching) != self.window["frames"] or views not in self.decoders:
            raise ValueError(f"{self.folder}: no graph for {len(matching)}-frame windows with "
                             f"{views} memory views (exported: {self.window})")
        inputs = [torch.stack(matching, dim=1), *context_feats[:CONTEXT_MAPS],
                  world_T_cam_bn44, cam_intr]
        if views:
            inputs += [torch.stack(memory.keys_bcdhw, 1), torch.stack(memory.values_bcdhw, 1),
                       torch.stack(memory.world_T_cam_b44, 1)]
        feed = {name: _numpy(x) for name, x in zip(decode_input_names(views), inputs)}
        results = dict(zip(DECODE_OUTPUTS, self.decoders[views].run(None, feed)))
        depth, confidence = (torch.from_numpy(results[k]) for k in ("depth", "confidence"))
        outputs = {}
        for t in range(depth.shape[1]):
            outputs[("depth", t, 0)] = depth[:, t]
            outputs[("fused_prob", t)] = confidence[:, t:t + 1]
        handed_on = ESTMemory([torch.from_numpy(results["key"])],
                              [torch.from_numpy(results["value"])],
                              [torch.from_numpy(results["key_world_T_cam"])])
        return outputs, handed_on


def _numpy(x: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.detach().cpu().numpy())
