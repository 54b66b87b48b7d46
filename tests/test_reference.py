"""Replay the official implementation's recorded outputs (../shared/reference)."""

import pytest
import torch

from models.memory import MemoryBuffer
from tests.helpers import DEPTH_TOL, assert_outputs_match, reference_model

def _frames(reference, first: int, last: int):
    inputs = reference["inputs"]
    window = slice(first, last + 1)
    sample = {"dmaps": inputs["dmaps"][:, window], "dmasks": inputs["dmasks"][:, window]}
    return inputs["imgs"][:, window].float(), inputs["cam_poses"][:, window], \
        inputs["cam_intr"], sample


@pytest.mark.slow
@pytest.mark.parametrize("fast_layers", [False, True], ids=["official-layers", "fast-layers"])
def test_train_forward_loss_and_gradient(reference, fast_layers):
    """The official layer order, and the trainer's (the same numbers with less work)."""
    model = reference_model(reference, train=True).use_fast_layers(fast_layers)
    imgs, poses, intr, sample = _frames(reference, 0, 4)
    outputs, losses = model(imgs, poses, intr, sample, mode="train")
    assert_outputs_match(outputs, reference["train"]["outputs"], "train")
    for name, want in reference["train"]["losses"].items():
        assert losses[name].item() == pytest.approx(want.item(), abs=DEPTH_TOL), name
    losses["loss"].backward()
    grad_norm = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in model.parameters()
                               if p.grad is not None))
    assert grad_norm.item() == pytest.approx(reference["train"]["grad_norm"].item(), rel=1e-3)


@pytest.mark.slow
@torch.no_grad()
def test_joint_windows_with_memory(reference):
    model = reference_model(reference, train=False)
    memory = MemoryBuffer(size=1)
    for index, first in enumerate((0, 3)):
        imgs, poses, intr, _ = _frames(reference, first, first + 4)
        outputs, costs, cam_poses = model(imgs, poses, intr, None, *memory.as_inputs(),
                                          mode="val")
        assert_outputs_match(outputs, reference["joint"]["windows"][index], f"joint {index}")
        memory.push(costs, cam_poses)


@pytest.mark.slow
@torch.no_grad()
def test_estm_sliding_windows_with_two_memories(reference):
    model = reference_model(reference, train=False)
    memory = MemoryBuffer(size=2)
    for s, expected in enumerate(reference["estm"]["windows"]):
        imgs, poses, intr, _ = _frames(reference, s, s + 2)
        outputs, costs, cam_poses = model(imgs, poses, intr, None, *memory.as_inputs(),
                                          mode="val")
        assert_outputs_match(outputs, expected, f"estm {s}")
        memory.push(costs, cam_poses)
