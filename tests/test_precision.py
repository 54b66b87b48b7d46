"""Mixed precision (models/precision.py): bounded depth error on the official fixture, the
policy's float32 regions, the model's amp dtype, TF32 off in evaluation.

The figures themselves: ``ESTDEPTH_SHARED=../shared python -m dev.precision_error --amp bf16``
(dev/precision_error.py replays the fixture; the bounds are tests.helpers.BOUNDS).
"""

import pytest
import torch

from dev.precision_error import (depth_errors, emulate_reduced_precision, fixture_model,
                                 recorded_outputs, replay)
from models import precision
from models.depthnet import DepthNetHybrid
from tests.helpers import assert_float32_outputs, assert_within_bounds


@pytest.mark.slow  # ~10 s CPU for the bf16 replay, more on a busy machine
@pytest.mark.parametrize("inference_copy", [False, True], ids=["model", "inference-copy"])
def test_bf16_autocast_on_cpu_stays_within_the_bounds(reference, inference_copy):
    """Measured: scale 0 mean 0.019 m, p99 0.079 m, max 0.18 m (plain autocast without the
    policy: 0.17 / 0.74 / 2.49 m); the evaluation's inference copy (folded batch norm, its
    own layer order: models/inference.py) 0.018 / 0.073 / 0.16 m."""
    from models.inference import prepare_for_inference

    model = fixture_model(reference)
    if inference_copy:
        model = prepare_for_inference(model)
    outputs, memories = replay(model, reference, torch.bfloat16)
    assert_float32_outputs(outputs, memories)
    assert_within_bounds(depth_errors(outputs, recorded_outputs(reference)), torch.bfloat16)


@pytest.mark.slow  # a float32 replay with rounding hooks, ~12 s CPU
def test_fp16_emulated_on_cpu_stays_within_the_bounds(reference):
    """fp16 rounding emulated in float32 (CPU fp16 kernels are too slow); the real thing is
    in tests/test_cuda.py. Measured: scale 0 mean 0.0059 m, p99 0.026 m, max 0.073 m."""
    model = fixture_model(reference)
    emulate_reduced_precision(model, torch.float16)
    outputs, _ = replay(model, reference)
    assert_within_bounds(depth_errors(outputs, recorded_outputs(reference)), torch.float16)


def test_policy_regions_follow_the_table():
    x = torch.ones(2, dtype=torch.bfloat16)
    seen = {}

    def probe(t):
        seen["dtype"], seen["autocast"] = t.dtype, torch.is_autocast_enabled("cpu")
        return t

    precision.run("matching", probe, x)  # no autocast: a plain call
    assert seen == {"dtype": torch.bfloat16, "autocast": False}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        precision.run("matching", probe, x)
        assert seen == {"dtype": torch.float32, "autocast": False}
        precision.run("attention", lambda xs: probe(xs[0]), [x])  # lists are cast too
        assert seen == {"dtype": torch.float32, "autocast": False}
        assert precision.region_dtype("context", "cpu") == torch.float32
    with torch.autocast("cpu", dtype=torch.float16):
        assert precision.region_dtype("context", "cpu") is None  # fp16 keeps it reduced
        assert precision.region_dtype("matching", "cpu") == torch.float32
        assert precision.region_dtype("depth_softmax", "cpu") == torch.float32
    with pytest.raises(ValueError, match="--amp"):
        precision.amp_dtype("fp8")


def test_model_applies_its_amp_dtype_with_the_policy():
    """``model.amp_dtype`` (what evaluation's --amp sets) runs the model under autocast:
    bf16 where the table allows it, float32 in the matching net, float32 outputs."""
    torch.manual_seed(0)
    model = DepthNetHybrid(ndepths=4, depth_min=0.5, depth_max=5.0, resnet=18).eval()
    model.amp_dtype = torch.bfloat16
    seen = {}
    for name in ("matchingFeature", "CostRegNet.upconv_4_0"):
        model.get_submodule(name).register_forward_hook(
            lambda m, i, out, name=name: seen.update({name: out.dtype}))  # returns None
    g = torch.Generator().manual_seed(0)
    imgs = torch.rand(1, 3, 3, 128, 128, generator=g) * 255
    poses = torch.eye(4).repeat(1, 3, 1, 1)
    poses[..., 0, 3] = 0.05 * torch.arange(3)
    intr = torch.tensor([[[100.0, 0, 63.5], [0, 100.0, 63.5], [0, 0, 1]]])
    with torch.no_grad():
        outputs, costs, _ = model(imgs, poses, intr, None, mode="val")
    assert seen == {"matchingFeature": torch.float32, "CostRegNet.upconv_4_0": torch.bfloat16}
    assert_float32_outputs([outputs], [costs])


def test_evaluation_turns_tf32_off_by_default():
    from utils.config import load_config

    assert load_config("eval", []).allow_tf32 is False
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        precision.configure_tf32(False)
        assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
        precision.configure_tf32(True)
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
