"""models.memory: the typed EST memory and its official format."""

import pytest
import torch

from models.memory import ESTMemory, MemoryBuffer


def _view(tag: float) -> ESTMemory:
    """One view whose key, value and pose carry ``tag`` (to follow them through)."""
    return ESTMemory([torch.full((1, 2), tag)], [torch.full((1, 2), -tag)],
                     [torch.eye(4)[None] * tag])


def test_official_format_round_trip():
    memory = _view(1.0) + _view(2.0)
    costs, poses = memory.to_official()
    assert set(costs) == {"keys", "values"}
    assert [k[0, 0].item() for k in costs["keys"]] == [1.0, 2.0]
    assert [v[0, 0].item() for v in costs["values"]] == [-1.0, -2.0]
    assert [p[0, 0, 0].item() for p in poses] == [1.0, 2.0]
    again = ESTMemory.from_official(costs, poses)
    assert again.keys_bcdhw == memory.keys_bcdhw and again.world_T_cam_b44 == poses
    assert ESTMemory.from_official(None, None) is None
    with pytest.raises(ValueError, match="without pre_cam_poses"):
        ESTMemory.from_official(costs, None)


def test_lists_of_different_lengths_are_refused():
    with pytest.raises(ValueError, match="as many keys, values and poses"):
        ESTMemory([torch.zeros(1)], [], [torch.eye(4)[None]])


def test_buffer_keeps_the_newest_view_of_the_last_windows():
    buffer = MemoryBuffer(2)
    assert buffer.memory() is None and buffer.as_inputs() == (None, None)
    buffer.append(_view(1.0) + _view(9.0))  # a window hands on its last view only
    buffer.push(*_view(2.0).to_official())  # the official format, as forward returns it
    buffer.append(_view(3.0))
    memory = buffer.memory()
    assert len(buffer) == 2 and len(memory) == 2
    assert [k[0, 0].item() for k in memory.keys_bcdhw] == [2.0, 3.0]
    assert [v[0, 0].item() for v in memory.values_bcdhw] == [-2.0, -3.0]
    costs, poses = buffer.as_inputs()
    assert [p[0, 0, 0].item() for p in poses] == [2.0, 3.0]
    buffer.reset()
    assert buffer.memory() is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_detached_volumes_are_float32_copies_of_their_own(dtype):
    """A handed-on volume may be a view into a window's larger tensor (all targets, or
    keys and values stacked): the memory keeps a compact copy, not the whole tensor."""
    stacked = torch.randn(3, 4, 2, 2, 2, dtype=dtype, requires_grad=True)
    memory = ESTMemory([stacked[2:3, :2]], [stacked[2:3, 2:]], [torch.eye(4)[None]]).detached()
    for volume, want in ((memory.keys_bcdhw[0], stacked[2:3, :2]),
                         (memory.values_bcdhw[0], stacked[2:3, 2:])):
        assert volume.dtype == torch.float32 and not volume.requires_grad
        assert volume.untyped_storage().nbytes() == volume.numel() * 4
        assert torch.equal(volume, want.detach().float())
