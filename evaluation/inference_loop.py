"""The inference loop of every evaluator: windows in order, EST memory threaded between
them, each frame's features computed once per sequence; several sequences in lock-step as
one batch (``--batch_sequences N``).

Batched, each sequence keeps its own frames, feature cache, EST memory, poses and
intrinsics; at every step each running sequence advances by one window, and the windows
are decoded together, one batch per memory length (the EST transformer needs as many
memory views in every sequence of a batch). A sequence that ends frees its place for the
next, which runs its first ``memory_size`` windows in a batch of its own memory length
until it catches up. Frame features are computed one frame at a time (batch 1) either way,
so they are the one-at-a-time features bit for bit; only the decode runs batched
(docs/evaluation.md gives the measured difference).
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field
from itertools import islice
from typing import Iterable, Iterator, Optional

import torch

from datasets.prefetch import prefetched
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


@dataclass
class Lane:
    """One sequence of a run: where it is, its frames, features and memory."""

    key: object
    frames: object  # the sequence (or it read ahead: datasets.prefetch)
    windows: list
    cache: FrameFeatureCache
    memory: Optional[MemoryBuffer]
    closer: ExitStack = field(default_factory=ExitStack)
    step: int = 0
    items: dict = field(default_factory=dict)

    def next_window(self) -> tuple[list, dict]:
        """``(window, stacked frames)`` of the next window; frames shared with the previous
        window are not read again."""
        window = self.windows[self.step]
        self.items = {i: self.items[i] if i in self.items else self.frames[i] for i in window}
        return window, stack_frames([self.items[i] for i in window])

    def memory_length(self) -> int:
        return len(self.memory) if self.memory is not None else 0


def model_device(model) -> torch.device:
    # an onnxruntime model (models/onnx_runtime.py) has no parameters; it names its device
    return getattr(model, "device", None) or next(model.parameters()).device


@torch.no_grad()
def infer_windows(model: DepthNetHybrid, seq, windows: list, memory: Optional[MemoryBuffer],
                  cache_features: bool = True) -> Iterator[tuple[list, dict, dict]]:
    """Run the model on each window of one sequence in order, threading the EST memory
    between them.

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
    lane = Lane(None, seq, windows, FrameFeatureCache(model, windows), memory)
    device = model_device(model)
    while lane.step < len(windows):
        if cache_features:
            yield from (item[2:] for item in step_lanes(model, [lane], device))
        else:
            window, batch = lane.next_window()
            yield window, batch, official_window(model, memory, batch)
            lane.step += 1


def infer_sequences(model, jobs: Iterable, memory_size: Optional[int], batch_sequences: int = 1,
                    workers: int = 0) -> Iterator[tuple]:
    """Run the windows of several sequences, ``batch_sequences`` at a time in lock-step.

    Args:
        jobs: ``(key, seq, windows)`` per sequence, taken one at a time as places free up
            (a generator may prepare each sequence when it is taken).
        memory_size: EST memory windows per sequence (None: no memory).
        workers: frame-reading threads per sequence (:func:`datasets.prefetch.prefetched`).
    Yields:
        ``(key, k, window, batch, outputs)`` for window ``k`` of sequence ``key``: each
        sequence's windows in order, ``batch`` its frames, ``outputs`` the model's (batch
        size 1), as :func:`infer_windows`.
    """
    if batch_sequences < 1:
        raise ValueError(f"--batch_sequences must be at least 1, got {batch_sequences}")
    device = model_device(model)
    jobs, lanes = iter(jobs), []
    try:
        while True:
            for key, seq, windows in islice(jobs, batch_sequences - len(lanes)):
                if not windows:  # nothing to run (and nothing to yield) for this one
                    continue
                lane = Lane(key, None, windows, FrameFeatureCache(model, windows),
                            MemoryBuffer(memory_size) if memory_size else None)
                lane.frames = lane.closer.enter_context(prefetched(seq, windows, workers))
                lanes.append(lane)
            if not lanes:
                return
            yield from step_lanes(model, lanes, device)
            for lane in [lane for lane in lanes if lane.step == len(lane.windows)]:
                lane.closer.close()
                lanes.remove(lane)
    finally:
        for lane in lanes:
            lane.closer.close()


def step_lanes(model, lanes: list, device) -> Iterator[tuple]:
    """Advance every lane by one window, decoding lanes of equal memory length together;
    yields ``(key, k, window, batch, outputs)`` per lane."""
    windows, batches = zip(*(lane.next_window() for lane in lanes))
    lengths = [lane.memory_length() for lane in lanes]
    outputs = [None] * len(lanes)
    for length in sorted(set(lengths)):
        group = [b for b, n in enumerate(lengths) if n == length]
        decoded = decode_batch(model, [lanes[b].cache for b in group],
                               [lanes[b].memory for b in group], [windows[b] for b in group],
                               [batches[b] for b in group], device)
        for b, out in zip(group, decoded):
            outputs[b] = out
    for lane, window, batch, out in zip(lanes, windows, batches, outputs):
        lane.cache.release(lane.step)
        yield lane.key, lane.step, window, batch, out
        lane.step += 1


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


def decode_window(model: DepthNetHybrid, cache: FrameFeatureCache,
                  memory: Optional[MemoryBuffer], window: list, batch: dict) -> dict:
    """One window from cached features (a stream's): the model's outputs; the window's
    memory is pushed onto ``memory``."""
    return decode_batch(model, [cache], [memory], [window], [batch], model_device(model))[0]


@torch.no_grad()
def decode_batch(model, caches: list, memories: list, windows: list, batches: list,
                 device) -> list[dict]:
    """Decode a window of each of several sequences as one batch (their memories of equal
    length) from their cached features; each memory gets its part of the new memory.
    Returns each sequence's outputs (batch size 1)."""
    matching, context = [], []
    for cache, window, batch in zip(caches, windows, batches):
        check_inputs(batch["imgs"][None], batch["cam_poses"][None], batch["cam_intr"][None])
        features = cache.features(window, batch["imgs"], device)
        matching.append(features[0])
        context.append(features[1])
    poses, intr = (to_device(torch.stack([batch[key] for batch in batches]), device)
                   for key in ("cam_poses", "cam_intr"))
    memory = stack_memories([m.memory() if m is not None else None for m in memories])
    outputs, new_memory = model.decode([_cat(f) for f in zip(*matching)],
                                       [_cat(f) for f in zip(*context)], poses, intr, memory)
    if len(batches) == 1:
        per_sequence, new_memories = [outputs], [new_memory]
    else:
        per_sequence = [{key: x[b:b + 1] for key, x in outputs.items()}
                        for b in range(len(batches))]
        new_memories = [batch_slice(new_memory, b) for b in range(len(batches))]
    for memory_buffer, new in zip(memories, new_memories):
        if memory_buffer is not None:
            memory_buffer.append(new)
    return per_sequence


def _cat(tensors) -> torch.Tensor:
    """Tensors concatenated along the batch (one tensor as it is, not copied)."""
    return tensors[0] if len(tensors) == 1 else torch.cat(list(tensors))


def stack_memories(memories: list) -> Optional[ESTMemory]:
    """One memory of batch ``len(memories)`` from per-sequence memories of equal length
    (None when they are empty)."""
    if memories[0] is None:
        return None
    return ESTMemory([_cat(v) for v in zip(*(m.keys_bcdhw for m in memories))],
                     [_cat(v) for v in zip(*(m.values_bcdhw for m in memories))],
                     [_cat(v) for v in zip(*(m.world_T_cam_b44 for m in memories))])


def batch_slice(memory: ESTMemory, b: int) -> ESTMemory:
    """Sequence ``b``'s part of a batched memory."""
    take = lambda xs: [x[b:b + 1] for x in xs]  # noqa: E731
    return ESTMemory(take(memory.keys_bcdhw), take(memory.values_bcdhw),
                     take(memory.world_T_cam_b44))
