"""Inference protocols: which windows of a sequence run, which outputs they keep, how much
EST memory they carry (the official Joint and ESTM)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Callable

from datasets.windows import joint_windows, sliding_windows


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
