"""The inference copy as exported graphs: ``torch.export`` programs and ONNX files.

A window is run as the evaluation runs it (evaluation/inference_loop.py): each frame's
features once, then the window decoded from them with the EST memory. So three kinds of
graph, each for batch 1 at one fixed input size:

* ``matching``: image ``[1, 3, H, W]`` (RGB 0..255) -> ``matching [1, 32, H/4, W/4]``.
* ``context``: image -> ``context0..context4``, the ResNet maps.
* ``decode`` of a window of ``N`` frames with ``k`` memory views (one graph per ``k``,
  since the first windows of a sequence have fewer): ``matching [1, N, 32, h, w]``, the
  targets' ``context0..4`` (batch ``T = N - 2``), ``world_T_cam [1, N, 4, 4]``,
  ``K [1, 3, 3]`` (at H x W) and, for ``k > 0``, ``memory_keys``/``memory_values``
  ``[1, k, 16, D, h, w]`` and ``memory_world_T_cam [1, k, 4, 4]`` (oldest first) ->
  ``depth [1, T, 1, H, W]`` (scale 0, metres), ``confidence [1, T, h, w]`` (the largest
  plane probability of the final volume) and the view handed on: ``key``, ``value``
  ``[1, 16, D, h, w]``, ``key_world_T_cam [1, 4, 4]``.

Two operators are not ONNX's as PyTorch exports them: ``linalg.inv_ex`` (ONNX has no
matrix inverse; the 4x4 poses and 3x3 intrinsics are inverted by
:func:`utils.geometry.adjugate_inverse` in the ONNX graphs) and the 5-D ``grid_sampler_3d``
of the EST volume warp (translated to ONNX ``GridSample``, opset 20, which is N-D).
"""

from __future__ import annotations

import torch
from torch import nn

from models.memory import ESTMemory
from utils.geometry import adjugate_inverse

OPSET = 20  # the first with N-D GridSample
# onnxscript's graph optimiser: its pattern rewrites take minutes per graph (over ten for a
# Joint window with memory); onnxruntime optimises the graph itself when it loads it.
OPTIMIZE = False
CONTEXT_MAPS = 5
DECODE_OUTPUTS = ("depth", "confidence", "key", "value", "key_world_T_cam")
MEMORY_INPUTS = ("memory_keys", "memory_values", "memory_world_T_cam")


class MatchingPart(nn.Module):
    """``matching`` graph: the model's per-frame matching features."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image_b3hw: torch.Tensor) -> torch.Tensor:
        return self.model.matching_features(image_b3hw)


class ContextPart(nn.Module):
    """``context`` graph: the model's five per-frame ResNet maps."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image_b3hw: torch.Tensor) -> tuple:
        return tuple(self.model.context_features(image_b3hw))


class DecodePart(nn.Module):
    """``decode`` graph of ``frames``-frame windows given ``memory_views`` memory views."""

    def __init__(self, model: nn.Module, frames: int, memory_views: int):
        super().__init__()
        self.model, self.frames, self.memory_views = model, frames, memory_views

    def forward(self, matching_bn, context0, context1, context2, context3, context4,
                world_T_cam_bn44, K_b33, *memory) -> tuple:
        views = None
        if self.memory_views:
            keys, values, poses = memory
            views = ESTMemory(list(keys.unbind(1)), list(values.unbind(1)),
                              list(poses.unbind(1)))
        outputs, handed_on = self.model.decode(
            list(matching_bn.unbind(1)), [context0, context1, context2, context3, context4],
            world_T_cam_bn44, K_b33, views)
        targets = range(self.frames - 2)
        depth = torch.stack([outputs[("depth", t, 0)] for t in targets], dim=1)
        confidence = torch.stack([outputs[("fused_prob", t)].amax(dim=1) for t in targets],
                                 dim=1)
        return (depth, confidence, handed_on.keys_bcdhw[0], handed_on.values_bcdhw[0],
                handed_on.world_T_cam_b44[0])


def decode_input_names(memory_views: int) -> list[str]:
    names = ["matching"] + [f"context{i}" for i in range(CONTEXT_MAPS)] + ["world_T_cam", "K"]
    return names + (list(MEMORY_INPUTS) if memory_views else [])


@torch.no_grad()
def example_inputs(model: nn.Module, height: int, width: int, frames: int,
                   memory_views: int, seed: int = 0) -> dict:
    """Inputs of every part for tracing (and the numeric check): random images, a camera
    moving sideways, and memory views made by decoding earlier windows."""
    generator = torch.Generator().manual_seed(seed)
    image = torch.rand(1, 3, height, width, generator=generator) * 255
    matching = model.matching_features(image)
    context = tuple(model.context_features(image))
    world_T_cam = torch.eye(4).repeat(1, frames, 1, 1)
    world_T_cam[0, :, 0, 3] = 0.1 * torch.arange(frames)
    f = 0.8 * width
    K = torch.tensor([[[f, 0.0, (width - 1) / 2], [0.0, f, (height - 1) / 2], [0, 0, 1]]])
    matching_bn = torch.stack([matching] * frames, dim=1)
    targets = [torch.cat([c] * (frames - 2)) for c in context]
    memory = []
    for _ in range(memory_views):
        views = sum(memory, ESTMemory()) if memory else None
        _, handed_on = model.decode(list(matching_bn.unbind(1)), targets, world_T_cam, K, views)
        memory.append(handed_on)
    decode = (matching_bn, *targets, world_T_cam, K)
    if memory_views:
        views = sum(memory, ESTMemory())
        decode += (torch.stack(views.keys_bcdhw, 1), torch.stack(views.values_bcdhw, 1),
                   torch.stack(views.world_T_cam_b44, 1))
    return {"image": image, "decode": decode}


def export_program(part: nn.Module, args: tuple) -> torch.export.ExportedProgram:
    """``torch.export`` of one part (no data-dependent control flow in the model)."""
    with torch.no_grad():
        return torch.export.export(part, args, strict=False)


def _inv_ex_by_adjugate(A, check_errors: bool = False):
    return adjugate_inverse(A), torch.zeros(A.shape[:-2], dtype=torch.int32, device=A.device)


def onnx_ready(program: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    """``program`` with ``linalg.inv_ex`` rewritten as :func:`adjugate_inverse`."""
    table = torch.export.default_decompositions()
    table[torch.ops.aten.linalg_inv_ex.default] = _inv_ex_by_adjugate
    return program.run_decompositions(table)


def _translations() -> dict:
    """ATen operators PyTorch's ONNX exporter has no translation for, translated."""
    from onnxscript import opset20

    modes = {0: "linear", 1: "nearest", 2: "cubic"}
    paddings = {0: "zeros", 1: "border", 2: "reflection"}

    def grid_sampler_3d(input, grid, interpolation_mode: int, padding_mode: int,
                        align_corners: bool):
        return opset20.GridSample(input, grid, align_corners=int(align_corners),
                                  mode=modes[interpolation_mode],
                                  padding_mode=paddings[padding_mode])

    return {torch.ops.aten.grid_sampler_3d.default: grid_sampler_3d}


def save_onnx(program: torch.export.ExportedProgram, args: tuple, path: str,
              input_names: list, output_names: list) -> None:
    """Write ``program`` (see :func:`onnx_ready`) as an ONNX file (weights inside)."""
    torch.onnx.export(onnx_ready(program), args, path, dynamo=True, opset_version=OPSET,
                      input_names=input_names, output_names=output_names,
                      custom_translation_table=_translations(), external_data=False,
                      verbose=False, optimize=OPTIMIZE)
