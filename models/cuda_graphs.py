"""CUDA graphs for inference: replay a whole per-frame or per-window step as one launch.

An ESTM window launches hundreds of small kernels; on a fast GPU the GPU waits on the host
launching them (README, *Speed*: 17.4 instead of 22.6-29.0 ms per bf16 window on an H200
when replayed). A CUDA graph records the kernels of one
call and replays them with a single launch. It can only replay what it recorded: the same
shapes, dtypes and tensor addresses, so :class:`GraphedCall` keeps one graph per input
signature (the structure of the arguments with every tensor's shape, dtype and device,
plus the active autocast dtype), copies each call's tensors into the graph's own input
tensors, and returns copies of the graph's outputs (the next replay overwrites them; the
EST memory a window hands on is the next window's input).

A signature's first call runs eagerly (it warms up cuDNN, ``torch.compile`` and the
allocator); the second records the graph and replays it; later ones only replay. So the
first windows of a sequence (with a memory still filling up) run eagerly once each, and
every steady-state window replays. What is recorded must not make the host wait for the
device (no ``.item()``, no branch on a tensor's value): the decode loop is written that way.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections import Counter
from typing import Callable

import torch

log = logging.getLogger(__name__)

# The model methods the inference loop calls per frame (features) and per window (decode).
GRAPHED_METHODS = ("matching_features", "context_features", "decode")


def flatten(obj, leaves: list):
    """Append the tensors of ``obj`` (nested lists, tuples, dicts, dataclasses) to ``leaves``
    and return a hashable description of its structure and of each tensor's layout."""
    if torch.is_tensor(obj):
        leaves.append(obj)
        return ("tensor", tuple(obj.shape), obj.dtype, str(obj.device), obj.is_contiguous())
    if isinstance(obj, (list, tuple)):
        return (type(obj), tuple(flatten(v, leaves) for v in obj))
    if isinstance(obj, dict):
        return (dict, tuple((k, flatten(v, leaves)) for k, v in obj.items()))
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return (type(obj), tuple((f.name, flatten(getattr(obj, f.name), leaves))
                                 for f in dataclasses.fields(obj)))
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return ("constant", obj)
    raise TypeError(f"cannot record a {type(obj).__name__} in a CUDA graph")


def unflatten(spec, leaves):
    """The object :func:`flatten` described by ``spec``, its tensors taken from the
    iterator ``leaves`` in order."""
    kind, content = spec[0], spec[1]
    if kind == "tensor":
        return next(leaves)
    if kind == "constant":
        return content
    if kind is dict:
        return {k: unflatten(s, leaves) for k, s in content}
    if kind in (list, tuple):
        return kind(unflatten(s, leaves) for s in content)
    return kind(**{name: unflatten(s, leaves) for name, s in content})


def _autocast_state() -> tuple:
    return (torch.is_autocast_enabled("cuda"),
            torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled("cuda") else None)


def _without_autocast_cache():
    """The active CUDA autocast state without its weight-cast cache.

    The cache would free, when the outermost autocast exits, casts a recorded graph still
    reads; nested autocasts (the model's own) inherit the flag. Eager calls run this way
    too, so that ``torch.compile`` sees one global state and never recompiles mid-record.
    """
    enabled, dtype = _autocast_state()
    return torch.autocast("cuda", dtype=dtype or torch.float16, enabled=enabled,
                          cache_enabled=False)


class _Graph:
    """One recorded call: its input tensors, the graph, its output tensors."""

    def __init__(self, fn: Callable, args: tuple):
        in_leaves: list = []
        in_spec = flatten(args, in_leaves)
        self.inputs = [t.clone() for t in in_leaves]
        static_args = unflatten(in_spec, iter(self.inputs))
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            fn(*static_args)  # warm-up on a side stream, as torch.cuda.graph asks
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        # thread_local: the frame-reading threads may use CUDA while this one records.
        with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
            out = fn(*static_args)
        out_leaves: list = []
        self.out_spec = flatten(out, out_leaves)
        self.outputs = out_leaves

    def __call__(self, in_leaves: list):
        for static, t in zip(self.inputs, in_leaves):
            static.copy_(t, non_blocking=True)
        self.graph.replay()
        return unflatten(self.out_spec, iter([t.clone() for t in self.outputs]))


class GraphedCall:
    """``fn(*args)`` for inference, replayed from CUDA graphs (one per input signature).

    ``fn`` must take and return tensors in lists, tuples, dicts and dataclasses, with
    constants (None, numbers, strings) as part of the signature, and run on CUDA tensors.
    Calls run without autograd.
    """

    def __init__(self, fn: Callable, name: str = ""):
        self.fn, self.name = fn, name or getattr(fn, "__name__", "call")
        self.calls: Counter = Counter()
        self.graphs: dict = {}
        self.replays = 0

    def __call__(self, *args):
        leaves: list = []
        key = (flatten(args, leaves), _autocast_state())
        if any(t.device.type != "cuda" for t in leaves):
            raise ValueError(f"CUDA graphs ({self.name}): every tensor must be on a CUDA "
                             f"device, got {sorted({str(t.device) for t in leaves})}")
        with torch.no_grad(), _without_autocast_cache():
            graph = self.graphs.get(key)
            if graph is None:
                self.calls[key] += 1
                if self.calls[key] == 1:
                    return self.fn(*args)  # warms up kernels, compile and allocator
                graph = self.graphs[key] = self._record(args)
                log.debug("recorded a CUDA graph of %s (%d so far)", self.name,
                          len(self.graphs))
            self.replays += 1
            return graph(leaves)

    def _record(self, args: tuple) -> _Graph:
        try:
            return _Graph(self.fn, args)
        except RuntimeError as err:
            raise RuntimeError(f"recording a CUDA graph of {self.name} failed ({err}); run "
                               f"without --cuda_graphs") from err


def graph_inference(model: torch.nn.Module) -> torch.nn.Module:
    """A shallow copy of an inference model whose :data:`GRAPHED_METHODS` replay CUDA
    graphs (same parameters; ``model`` itself is not changed)."""
    if model.training:
        raise ValueError("--cuda_graphs is for inference: put the model in eval mode")
    device = next(model.parameters()).device
    if device.type != "cuda":
        raise ValueError(f"--cuda_graphs needs the model on a CUDA device, it is on {device}")
    graphed = copy.copy(model)  # shares the modules; only the methods below differ
    for name in GRAPHED_METHODS:
        setattr(graphed, name, GraphedCall(getattr(model, name), name))
    return graphed
