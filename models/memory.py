"""The EST memory carried from window to window during inference."""

from collections import deque


class MemoryBuffer:
    """The last ``size`` memories returned by ``mode="val"`` forwards, oldest first.

    Joint inference keeps 1 (the previous window's), ESTM keeps ``--memory_size`` (2).
    """

    def __init__(self, size: int):
        if size < 1:
            raise ValueError(f"memory size must be at least 1, got {size}")
        self._items = deque(maxlen=size)

    def __len__(self) -> int:
        return len(self._items)

    def reset(self) -> None:
        """Forget everything (a new sequence starts)."""
        self._items.clear()

    def push(self, new_costs: dict, new_cam_poses: list) -> None:
        """Store what the model returned: ``{"keys": [k], "values": [v]}`` and ``[pose]``."""
        self._items.append((new_costs["keys"][-1], new_costs["values"][-1], new_cam_poses[-1]))

    def as_inputs(self):
        """``(pre_costs, pre_cam_poses)`` for the model, or ``(None, None)`` when empty."""
        if not self._items:
            return None, None
        keys, values, poses = map(list, zip(*self._items))
        return {"keys": keys, "values": values}, poses
