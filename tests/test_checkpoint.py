"""Checkpoint I/O: official format, DDP prefixes, strict errors, atomic writes."""

import os
import re

import pytest
import torch
import torchvision

from models.depthnet import DepthNetHybrid
from utils import checkpoint as ckpt_io
from utils.io import atomic_open


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return DepthNetHybrid(ndepths=8, depth_min=0.5, depth_max=5.0, resnet=18)


def _fresh(**kwargs):
    args = dict(ndepths=8, depth_min=0.5, depth_max=5.0, resnet=18)
    args.update(kwargs)
    return DepthNetHybrid(**args)


def _same_weights(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_official_format_round_trip(model, tmp_path):
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    path = str(tmp_path / "model_000001.ckpt")
    ckpt_io.save_checkpoint(path, model, optimizer, epoch=1)
    raw = torch.load(path, weights_only=False)
    assert set(raw) == {"epoch", "model", "optimizer"} and raw["epoch"] == 1
    other = _fresh()
    assert not _same_weights(model, other)
    ckpt_io.load_checkpoint(other, path)
    assert _same_weights(model, other)


def test_ddp_module_prefix_and_bare_state_dicts_load(model, tmp_path):
    path = str(tmp_path / "ddp.ckpt")
    torch.save({"epoch": 0, "model": {"module." + k: v for k, v in model.state_dict().items()},
                "optimizer": None}, path)
    other = _fresh()
    ckpt_io.load_checkpoint(other, path)
    assert _same_weights(model, other)
    bare = str(tmp_path / "bare.pth")
    torch.save(model.state_dict(), bare)
    ckpt_io.load_checkpoint(_fresh(), bare)


def test_mismatch_lists_missing_unexpected_and_misshaped_keys(model, tmp_path):
    path = str(tmp_path / "m.ckpt")
    ckpt_io.save_checkpoint(path, model)
    with pytest.raises(ckpt_io.CheckpointError) as err:
        ckpt_io.load_checkpoint(_fresh(ndepths=16, IF_EST_transformer=False), path)
    text = str(err.value)
    assert "m.ckpt" in text
    assert "unexpected keys" in text and "CostRegNet.epipolar_transformer.gate_conv.weight" in text
    assert "mis-shaped keys" in text and "CostRegNet.upconv_2_0.conv.0.weight" in text
    with pytest.raises(ckpt_io.CheckpointError, match="missing keys"):
        ckpt_io.load_checkpoint(_fresh(resnet=34), path)


def test_restore_part_loads_only_the_feature_nets(model, tmp_path):
    path = str(tmp_path / "part.ckpt")
    ckpt_io.save_checkpoint(path, model)
    other = _fresh(ndepths=16)  # the decoder differs; the feature nets do not
    ckpt_io.load_checkpoint(other, path, prefixes=ckpt_io.FEATURE_NET_PREFIXES)
    for name, value in other.state_dict().items():
        if name.startswith(ckpt_io.FEATURE_NET_PREFIXES):
            assert torch.equal(value, model.state_dict()[name]), name


def test_unreadable_and_missing_checkpoints_name_the_file(tmp_path):
    with pytest.raises(ckpt_io.CheckpointError, match="does not exist"):
        ckpt_io.read_checkpoint(str(tmp_path / "nope.ckpt"))
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(ckpt_io.CheckpointError, match="broken.ckpt.*cannot be read"):
        ckpt_io.read_checkpoint(str(broken))


def test_crash_while_writing_leaves_the_previous_file_intact(model, tmp_path):
    path = str(tmp_path / "model_000000.ckpt")
    ckpt_io.save_checkpoint(path, model, epoch=0)
    with pytest.raises(RuntimeError, match="simulated crash"):
        with atomic_open(path, "wb") as f:
            f.write(b"half a checkpoint")
            raise RuntimeError("simulated crash")
    assert ckpt_io.read_checkpoint(path)["epoch"] == 0
    assert os.listdir(tmp_path) == ["model_000000.ckpt"]  # no temporary file left behind


def test_imagenet_weights_come_only_from_a_local_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="--pretrained_resnet"):
        _fresh(pretrained_resnet=str(tmp_path / "resnet18.pth"))
    torch.manual_seed(1)
    source = torchvision.models.resnet18(weights=None)
    weights = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), weights)
    model = _fresh(pretrained_resnet=str(weights))
    for name, value in source.state_dict().items():
        assert torch.equal(model.semanticFeature.encoder.state_dict()[name], value), name
    with pytest.raises(RuntimeError, match="not the ImageNet weights of this ResNet"):
        _fresh(resnet=34, pretrained_resnet=str(weights))


def test_latest_checkpoint_orders_by_number(tmp_path):
    assert ckpt_io.latest_checkpoint(str(tmp_path)) is None
    for name in ("model_000002.ckpt", "model_000010.ckpt", "model_000009.ckpt"):
        (tmp_path / name).write_bytes(b"")
    assert ckpt_io.latest_checkpoint(str(tmp_path)).endswith("model_000010.ckpt")
    (tmp_path / "model_epoch000011_iter00000120.ckpt").write_bytes(b"")
    assert ckpt_io.latest_checkpoint(str(tmp_path)).endswith("model_epoch000011_iter00000120.ckpt")
    (tmp_path / "model_000011.ckpt").write_bytes(b"")  # the end of that same epoch
    assert ckpt_io.latest_checkpoint(str(tmp_path)).endswith("model_000011.ckpt")


def test_checkpoints_with_non_finite_weights_are_refused(tmp_path):
    model = DepthNetHybrid(ndepths=4, depth_min=0.5, depth_max=5.0, resnet=18)
    state = model.state_dict()
    key = next(k for k in state if k.endswith("running_mean"))
    state[key][0] = float("nan")
    path = tmp_path / "bad.ckpt"
    torch.save({"model": state}, path)
    with pytest.raises(ckpt_io.CheckpointError, match=f"(?s)non-finite.*{re.escape(key)}"):
        ckpt_io.load_checkpoint(DepthNetHybrid(ndepths=4, depth_min=0.5, depth_max=5.0,
                                               resnet=18), str(path))


def test_stray_checkpoint_names_do_not_block_resume(tmp_path):
    (tmp_path / "model_best.ckpt").write_bytes(b"")
    assert ckpt_io.latest_checkpoint(str(tmp_path)) is None
    (tmp_path / "model_000000.ckpt").write_bytes(b"")
    (tmp_path / "my_export.ckpt").write_bytes(b"")
    assert ckpt_io.latest_checkpoint(str(tmp_path)).endswith("model_000000.ckpt")


class _Payload:
    """Unpickling this runs code: what a malicious checkpoint would hold."""

    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_a_checkpoint_that_could_run_code_is_refused_with_how_to_load_it(model, tmp_path):
    path = tmp_path / "evil.ckpt"
    torch.save({"model": model.state_dict(), "extra": _Payload()}, path)
    with pytest.raises(ckpt_io.CheckpointError, match=r"refused.*python -m utils.checkpoint"):
        ckpt_io.read_checkpoint(str(path))


def test_a_trusted_checkpoint_with_numpy_values_converts_to_a_safe_one(model, tmp_path):
    import numpy as np

    old = tmp_path / "old.ckpt"
    rng = np.random.get_state()
    torch.save({"model": model.state_dict(), "rng": {"numpy": rng}, "step": np.int64(7)}, old)
    with pytest.raises(ckpt_io.CheckpointError, match="refused"):
        ckpt_io.read_checkpoint(str(old))
    ckpt_io.convert(str(old), str(tmp_path / "new.ckpt"))
    new = ckpt_io.read_checkpoint(str(tmp_path / "new.ckpt"))
    assert new["step"] == 7 and torch.equal(new["rng"]["numpy"][1],
                                            torch.from_numpy(rng[1].astype(np.int64)))
    for key, value in model.state_dict().items():
        assert torch.equal(new["model"][key], value)


def test_training_rng_state_round_trips_through_a_safe_checkpoint(tmp_path):
    import random

    import numpy as np

    from training.components import rng_state, set_rng_state

    state = rng_state()
    torch.save({"model": {}, "rng": state}, tmp_path / "c.ckpt")
    expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    set_rng_state(ckpt_io.read_checkpoint(str(tmp_path / "c.ckpt"))["rng"])
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected
