"""DepthNetHybrid: official parameter names, interface, modes, memory and input checks."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from evaluation.metrics import window_metrics
from models.depthnet import DepthNetHybrid
from models.hybrid_decoder import depth_from_logits
from models.memory import MemoryBuffer
from tests.conftest import shared_path

H, W = 128, 160


def _window(batch=1, frames=4, seed=0):
    """A random but geometrically sane window: small camera motion, depths 1-4 m."""
    g = torch.Generator().manual_seed(seed)
    imgs = torch.rand(batch, frames, 3, H, W, generator=g) * 255
    poses = torch.eye(4).repeat(batch, frames, 1, 1)
    poses[..., 0, 3] = 0.05 * torch.arange(frames)
    intr = torch.tensor([[120.0, 0, W / 2 - 0.5], [0, 120.0, H / 2 - 0.5], [0, 0, 1]])
    dmaps = 1 + 3 * torch.rand(batch, frames, 1, H, W, generator=g)
    sample = {"dmaps": dmaps, "dmasks": dmaps > 1.2}
    return imgs, poses, intr.expand(batch, 3, 3), sample


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    return DepthNetHybrid(ndepths=32, depth_min=0.5, depth_max=5.0, resnet=18)


def test_parameter_names_and_shapes_equal_the_official_for_all_ten_configurations():
    official = json.loads(shared_path("reference", "official_state_dict.json").read_text())
    assert len(official) == 10
    for name, shapes in official.items():
        resnet, est = name.split("_est")
        with torch.device("meta"):
            model = DepthNetHybrid(ndepths=64, resnet=int(resnet[len("resnet"):]),
                                   IF_EST_transformer=est == "True")
        ours = {k: list(v.shape) for k, v in model.state_dict().items()}
        assert ours == shapes, name


@pytest.mark.slow
def test_batch2_ndepths32_train_mode_gives_finite_loss_and_gradients(small_model):
    model = small_model.train()
    imgs, poses, intr, sample = _window(batch=2, frames=4)
    outputs, losses = model(imgs, poses, intr, sample, mode="train")
    for t in range(2):
        for s in range(4):
            assert outputs[("depth", t, s)].shape == (2, 1, H, W)
        assert outputs[("init_prob", t)].shape == outputs[("fused_prob", t)].shape == (2, 1, H, W)
    assert set(losses) == {"loss"} | {f"{k}_{s}" for k in ("loss", "delta", "thred")
                                      for s in range(4)}
    losses["loss"].backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values()), \
        [n for n, g in grads.items() if g is None]
    model.zero_grad()


@pytest.mark.slow
@torch.no_grad()
def test_batch2_ndepths32_val_mode_with_memory(small_model):
    model = small_model.eval()
    imgs, poses, intr, _ = _window(batch=2, frames=5)
    poses[1, :, 1, 3] = 0.03 * torch.arange(5)  # the two sequences move differently
    memories = [MemoryBuffer(size=2) for _ in range(3)]  # the batch, sample 0, sample 1
    for start in (0, 1, 2):
        window = slice(start, start + 3)
        outputs, costs, cam_poses = model(imgs[:, window], poses[:, window], intr, None,
                                          *memories[0].as_inputs(), mode="val")
        assert outputs[("depth", 0, 0)].shape == (2, 1, H, W)
        assert costs["keys"][0].shape == costs["values"][0].shape == (2, 16, 32, H // 4, W // 4)
        assert cam_poses[0].shape == (2, 4, 4)
        memories[0].push(costs, cam_poses)
        # In eval mode the samples of a batch are independent: each equals a batch-1 run.
        for b in (0, 1):
            one = slice(b, b + 1)
            single, costs1, poses1 = model(imgs[one, window], poses[one, window], intr[one],
                                           None, *memories[1 + b].as_inputs(), mode="val")
            memories[1 + b].push(costs1, poses1)
            for key, value in single.items():
                torch.testing.assert_close(outputs[key][one], value, rtol=1e-4, atol=1e-4,
                                           msg=f"window {start}, sample {b}, {key}")
            torch.testing.assert_close(costs["values"][0][one], costs1["values"][0],
                                       rtol=1e-4, atol=1e-5)
    assert len(memories[0]) == 2


@torch.no_grad()
def test_the_official_window_metrics_are_computed_outside_the_model(small_model):
    imgs, poses, intr, sample = _window(frames=3)
    sample["dmaps"][:, 1, :, :8] = 0.0  # invalid rows the metrics must leave out
    sample["dmasks"][:, 1, :, :8] = False
    with pytest.raises(ValueError, match="window_metrics"):
        small_model.eval()(imgs, poses, intr, sample, mode="test")
    outputs = small_model(imgs, poses, intr, mode="val")[0]
    metrics = window_metrics(outputs, sample["dmaps"][:, 1:2], sample["dmasks"][:, 1:2])
    names = ("a1", "a2", "a3", "abs_diff", "abs_rel", "sq_rel", "rmse", "rmse_log")
    assert set(metrics) == {f"{n}_{s}" for n in names for s in (0, 2)}
    mask = sample["dmasks"][0, 1, 0].numpy()
    gt = sample["dmaps"][0, 1, 0].double().numpy()[mask]
    for s in (0, 2):  # one target: the metrics are those of frame 1, by hand
        pred = outputs[("depth", 0, s)][0, 0].double().numpy()[mask]
        ratio = np.maximum(gt / pred, pred / gt)
        hand = {"abs_rel": np.mean(np.abs(pred - gt) / gt), "abs_diff": np.mean(np.abs(pred - gt)),
                "sq_rel": np.mean((pred - gt) ** 2 / gt), "rmse": np.sqrt(np.mean((pred - gt) ** 2)),
                "rmse_log": np.sqrt(np.mean((np.log(pred) - np.log(gt)) ** 2)),
                "a1": np.mean(ratio < 1.25), "a2": np.mean(ratio < 1.25 ** 2),
                "a3": np.mean(ratio < 1.25 ** 3)}
        for name, value in hand.items():
            assert float(metrics[f"{name}_{s}"]) == pytest.approx(value, rel=1e-6), (name, s)


@torch.no_grad()
@pytest.mark.slow
def test_est_only_runs_with_memory_outside_training():
    """Without memory an eval forward skips the transformer: same as a model without one."""
    torch.manual_seed(0)
    with_est = DepthNetHybrid(ndepths=16, depth_min=0.5, depth_max=5.0, resnet=18).eval()
    without = DepthNetHybrid(ndepths=16, depth_min=0.5, depth_max=5.0, resnet=18,
                             IF_EST_transformer=False).eval()
    state = {k: v for k, v in with_est.state_dict().items() if "epipolar_transformer" not in k}
    without.load_state_dict(state, strict=True)
    imgs, poses, intr, _ = _window(frames=4)
    a, costs, cam_poses = with_est(imgs, poses, intr, None, mode="val")
    b, _, _ = without(imgs, poses, intr, None, mode="val")
    for key in a:
        torch.testing.assert_close(a[key], b[key])
    c, _, _ = with_est(imgs, poses, intr, None, costs, cam_poses, mode="val")
    assert not torch.allclose(a[("depth", 0, 2)], c[("depth", 0, 2)])


def test_depth_from_logits_equals_softmax_of_nearest_upsampled_logits():
    torch.manual_seed(0)
    logits, planes = torch.randn(2, 8, 5, 7), torch.linspace(0.5, 4, 8)
    depth, prob = depth_from_logits(logits, planes, scale=4)
    prob_volume = torch.softmax(F.interpolate(logits, scale_factor=4), dim=1)
    torch.testing.assert_close(depth, (prob_volume * planes.view(1, -1, 1, 1)).sum(1, True))
    torch.testing.assert_close(prob, prob_volume.max(1, keepdim=True).values)


@pytest.mark.parametrize("change, message", [
    (lambda i, p, k: (i[:, :2], p[:, :2], k), "at least 3 frames"),
    (lambda i, p, k: (i[..., :96, :], p, k), "multiples of 32 and at least 128"),
    (lambda i, p, k: (F.pad(i, (0, 0, 0, 8)), p, k), "multiples of 32"),
    (lambda i, p, k: (i, p[:, :, :3], k), "cam_poses must be"),
    (lambda i, p, k: (i, p, k[0]), "cam_intr must be"),
    (lambda i, p, k: (i, p * float("nan"), k), "non-finite"),
])
def test_inputs_the_model_cannot_take_raise_clear_errors(small_model, change, message):
    imgs, poses, intr, _ = _window(frames=3)
    imgs, poses, intr = change(imgs, poses, intr)
    with pytest.raises(ValueError, match=message):
        small_model.eval()(imgs, poses, intr, None, mode="val")


def test_constructor_rejects_bad_depth_settings():
    with pytest.raises(ValueError, match="ndepths"):
        DepthNetHybrid(ndepths=1, resnet=18)
    with pytest.raises(ValueError, match="depth_min"):
        DepthNetHybrid(depth_min=2.0, depth_max=1.0, resnet=18)
    with pytest.raises(ValueError, match="resnet"):
        DepthNetHybrid(resnet=20)


@pytest.mark.parametrize("shape, kernel", [((1, 8, 4, 6, 7), 3), ((1, 8, 4, 6, 7), 1),
                                           ((2, 8, 4, 6, 7), 3), ((1, 64, 16, 32, 10), 3)])
def test_cpu_conv3d_equals_torch_conv3d_forward_and_backward(shape, kernel):
    from models.layers import Conv3d

    torch.manual_seed(0)
    ours = Conv3d(shape[1], 5, kernel, padding=kernel // 2, bias=True)
    ref = torch.nn.Conv3d(shape[1], 5, kernel, padding=kernel // 2, bias=True)
    ref.load_state_dict(ours.state_dict())
    x1 = torch.randn(*shape, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_()
    y1, y2 = ours(x1), ref(x2)
    torch.testing.assert_close(y1, y2, atol=1e-5, rtol=1e-5)
    y1.square().sum().backward()
    y2.square().sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad, atol=1e-3, rtol=1e-4)


@pytest.mark.slow  # four training backward passes, ~20 s CPU each
@pytest.mark.parametrize("est", [True, False], ids=["est_on", "est_off"])
@pytest.mark.parametrize("frames", [3, 5])
def test_every_trainable_parameter_receives_a_gradient(est, frames):
    """A training backward reaches exactly the parameters the model does not list as
    gradient-less for its configuration (what DDP relies on without find_unused_parameters)."""
    torch.manual_seed(0)
    model = DepthNetHybrid(ndepths=4, depth_min=0.5, depth_max=5.0, resnet=18,
                           IF_EST_transformer=est)
    unused = set(model.parameters_without_gradient(frames))
    assert bool(unused) == (not est or frames == 3)
    g = torch.Generator().manual_seed(1)
    imgs = torch.rand(1, frames, 3, 128, 128, generator=g) * 255
    poses = torch.eye(4).repeat(1, frames, 1, 1)
    poses[..., 0, 3] = 0.05 * torch.arange(frames)
    intr = torch.tensor([[[100.0, 0, 63.5], [0, 100.0, 63.5], [0, 0, 1]]])
    dmaps = 1 + 3 * torch.rand(1, frames, 1, 128, 128, generator=g)
    _, losses = model.train()(imgs, poses, intr, {"dmaps": dmaps, "dmasks": dmaps > 0},
                              mode="train")
    losses["loss"].backward()
    no_grad = {n for n, p in model.named_parameters() if p.requires_grad and p.grad is None}
    assert no_grad == unused


def test_compile_parts_passes_the_mode_and_begin_step_marks_graph_steps(monkeypatch):
    """--compile_mode reaches torch.compile for every compiled part; only reduce-overhead
    (CUDA graphs) marks each training step's start; unknown modes are refused."""
    from models.depthnet import COMPILED_PARTS

    seen, marks = {}, []
    monkeypatch.setattr(torch.nn.Module, "compile",
                        lambda self, **kw: seen.setdefault(id(self), kw))
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: marks.append(1))
    for mode, expected in (("default", {}), ("reduce-overhead", {"mode": "reduce-overhead"})):
        seen.clear()
        model = DepthNetHybrid(ndepths=4, depth_min=0.5, depth_max=5.0, resnet=18)
        model.begin_step()  # not compiled: nothing to mark
        model.compile_parts(mode=mode)
        assert set(seen) == {id(getattr(model, name)) for name in COMPILED_PARTS}
        assert all(kw == {"backend": "inductor", "dynamic": False, **expected}
                   for kw in seen.values())
        model.begin_step()
    assert len(marks) == 1
    with pytest.raises(ValueError, match="--compile_mode must be one of"):
        model.compile_parts(mode="fastest")
    seen.clear()
    model.compile_parts(parts=("CostRegNet", "pre1"))
    assert set(seen) == {id(model.CostRegNet), id(model.pre1)}
    with pytest.raises(ValueError, match="compiled parts must be some of"):
        model.compile_parts(parts=("decoder",))
