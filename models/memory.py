"""The EST memory: key and value volumes of earlier targets with their camera poses.

One type, :class:`ESTMemory`, inside the model and in the evaluation loop. The official
format, ``pre_costs = {"keys": [k], "values": [v]}`` and ``pre_cam_poses = [pose]``,
exists only at the official ``DepthNetHybrid.forward`` call (:meth:`ESTMemory.from_official`,
:meth:`ESTMemory.to_official`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Optional

import torch


@dataclass
class ESTMemory:
    """Views the EST transformer attends to, in order (entry ``i`` of each list together).

    Attributes:
        keys_bcdhw: key volumes ``[B, 16, D, H/4, W/4]``.
        values_bcdhw: value volumes, same shape.
        world_T_cam_b44: camera-to-world poses ``[B, 4, 4]``.
    """

    keys_bcdhw: list = field(default_factory=list)
    values_bcdhw: list = field(default_factory=list)
    world_T_cam_b44: list = field(default_factory=list)

    def __post_init__(self):
        sizes = {len(self.keys_bcdhw), len(self.values_bcdhw), len(self.world_T_cam_b44)}
        if len(sizes) != 1:
            raise ValueError(f"an EST memory needs as many keys, values and poses, got "
                             f"{len(self.keys_bcdhw)}, {len(self.values_bcdhw)} and "
                             f"{len(self.world_T_cam_b44)}")

    def __len__(self) -> int:
        return len(self.keys_bcdhw)

    def __add__(self, other: "ESTMemory") -> "ESTMemory":
        """The views of ``self`` followed by those of ``other``."""
        return ESTMemory(self.keys_bcdhw + other.keys_bcdhw,
                         self.values_bcdhw + other.values_bcdhw,
                         self.world_T_cam_b44 + other.world_T_cam_b44)

    @classmethod
    def from_official(cls, pre_costs: Optional[dict],
                      pre_cam_poses: Optional[list]) -> Optional["ESTMemory"]:
        """The memory the official ``forward`` arguments describe (None for no memory)."""
        if pre_costs is None:
            return None
        if pre_cam_poses is None:
            raise ValueError("pre_costs were given without pre_cam_poses")
        return cls(list(pre_costs["keys"]), list(pre_costs["values"]), list(pre_cam_poses))

    def to_official(self) -> tuple[dict, list]:
        """``(costs, cam_poses)`` as the official ``forward`` returns and takes them."""
        return ({"keys": list(self.keys_bcdhw), "values": list(self.values_bcdhw)},
                list(self.world_T_cam_b44))

    def detached(self) -> "ESTMemory":
        """Detached float32 copies of the volumes (what a window hands on; float32 even
        under autocast). Copies, also in float32: a volume may be a view into a window's
        larger tensor (all its targets, or keys and values stacked), which the memory
        would otherwise keep alive."""
        copy = lambda x: x.detach().to(torch.float32, copy=True)  # noqa: E731
        return ESTMemory([copy(k) for k in self.keys_bcdhw],
                         [copy(v) for v in self.values_bcdhw],
                         list(self.world_T_cam_b44))


class MemoryBuffer:
    """The memories of the last ``size`` windows, oldest first.

    Joint inference keeps 1 (the previous window's), ESTM keeps ``--memory_size`` (2).
    :meth:`append` and :meth:`memory` are the typed interface; :meth:`push` and
    :meth:`as_inputs` take and give the official format, for callers of the official
    ``forward`` (the fixture replay).
    """

    def __init__(self, size: int):
        if size < 1:
            raise ValueError(f"memory size must be at least 1, got {size}")
        self._windows: deque = deque(maxlen=size)

    def __len__(self) -> int:
        return len(self._windows)

    def reset(self) -> None:
        """Forget everything (a new sequence starts)."""
        self._windows.clear()

    def append(self, new: ESTMemory) -> None:
        """Store the newest view of a window's memory."""
        if len(new) < 1:
            raise ValueError("a window's memory holds at least one view")
        self._windows.append(ESTMemory(new.keys_bcdhw[-1:], new.values_bcdhw[-1:],
                                       new.world_T_cam_b44[-1:]))

    def memory(self) -> Optional[ESTMemory]:
        """The stored views, oldest first, or None when empty."""
        if not self._windows:
            return None
        return sum(self._windows, ESTMemory())

    def push(self, new_costs: dict, new_cam_poses: list) -> None:
        """:meth:`append` of what the official ``forward(mode="val")`` returned."""
        self.append(ESTMemory.from_official(new_costs, new_cam_poses))

    def as_inputs(self) -> tuple[Optional[dict], Optional[list]]:
        """``(pre_costs, pre_cam_poses)`` for the official ``forward``, ``(None, None)`` when
        empty."""
        memory = self.memory()
        return (None, None) if memory is None else memory.to_official()
