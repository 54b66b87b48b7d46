"""The inference loop of every evaluator: windows in order, EST memory threaded between
them, each frame's features computed once per sequence."""

from __future__ import annotations

from typing import Iterator, Optional

import torch

from datasets.sequence import stack_frames
from models.depthnet import DepthNetHybrid, check_inputs
from models.memory import ESTMemory, MemoryBuffer


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

    def forget(self, frames, targets=()) -> None:
        """Forget the features of ``frames`` and the context maps of ``targets`` (a stream,
        whose later windows are not known: ESTM frame ``w[0]`` after window ``w``)."""
        for i in frames:
            self.matching.pop(i, None)
            self.context.pop(i, None)
        for i in targets:
            self.context.pop(i, None)


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
    if memory is not None:
        memory.reset()
    cache = FrameFeatureCache(model, windows) if cache_features else None
    items: dict = {}
    for k, window in enumerate(windows):
        items = {i: items[i] if i in items else seq[i] for i in window}
        batch = stack_frames([items[i] for i in window])
        if cache is None:
            outputs = official_window(model, memory, batch)
        else:
            outputs = decode_window(model, cache, memory, window, batch)
            cache.release(k)
        yield window, batch, outputs


@torch.no_grad()
def official_window(model: DepthNetHybrid, memory: Optional[MemoryBuffer], batch: dict) -> dict:
    """One window by the official forward call; its memory pushed onto ``memory``."""
    device = next(model.parameters()).device
    poses, intr = (to_device(batch[key][None], device) for key in ("cam_poses", "cam_intr"))
    pre_costs, pre_cam_poses = memory.as_inputs() if memory is not None else (None, None)
    outputs, new_costs, new_poses = model(
        to_device(batch["imgs"][None], device), poses, intr, None, pre_costs, pre_cam_poses,
        mode="val")
    if memory is not None:
        memory.append(ESTMemory.from_official(new_costs, new_poses))
    return outputs


@torch.no_grad()
def decode_window(model: DepthNetHybrid, cache: FrameFeatureCache,
                  memory: Optional[MemoryBuffer], window: list, batch: dict) -> dict:
    """One window of :func:`infer_windows` from cached features (the default path): the
    model's outputs; the window's memory is pushed onto ``memory``."""
    # an onnxruntime model (models/onnx_runtime.py) has no parameters; it names its device
    device = getattr(model, "device", None) or next(model.parameters()).device
    poses, intr = (to_device(batch[key][None], device) for key in ("cam_poses", "cam_intr"))
    check_inputs(batch["imgs"][None], batch["cam_poses"][None], batch["cam_intr"][None])
    matching, context = cache.features(window, batch["imgs"], device)
    outputs, new_memory = model.decode(
        matching, context, poses, intr, memory.memory() if memory is not None else None)
    if memory is not None:
        memory.append(new_memory)
    return outputs
