"""Faster inference, same numbers: per-frame feature cache, folded batch norm, compile."""

import pytest
import torch

from evaluation.inference_loop import FrameFeatureCache, infer_sequences, infer_windows
from evaluation.protocols import estm_protocol, joint_protocol
from models.depthnet import DepthNetHybrid
from models.inference import fold_batchnorm, prepare_for_inference
from models.memory import MemoryBuffer
from tests.helpers import assert_outputs_match, reference_model, sideways_frames

FRAMES = 8
# Few windows keep the tests cheap, yet each shares frames with the next and gets memory.
WINDOWS = {"estm": [[0, 1, 2], [1, 2, 3], [2, 3, 4]], "joint": [[0, 1, 2, 3, 4], [3, 4, 5, 6, 7]]}
PROTOCOLS = [estm_protocol(), joint_protocol()]
# The cache computes features as the eval forward does: identical bits. Folded weights
# are the same maths rounded differently: depths in metres.
CACHED_TOL = 0.0
FOLDED_TOL = 1e-4
# Batched decoding runs the same maths on a batch: convolution kernels may round it
# differently (measured on this CPU: at most 1e-6 m).
BATCHED_TOL = 1e-5


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    net = DepthNetHybrid(ndepths=8, depth_min=0.5, depth_max=6.0, resnet=18)
    # Non-trivial running statistics, so that folding has something to fold.
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return net.eval()


@pytest.fixture(scope="module")
def sequence():
    return sideways_frames(FRAMES)


@pytest.fixture(scope="module")
def official(model, sequence):
    """The official call's outputs per protocol, computed once for the module."""
    return {p.name: _run(model, sequence, p, cache_features=False) for p in PROTOCOLS}


def _run(model, seq, protocol, cache_features):
    windows = WINDOWS[protocol.name]
    memory = MemoryBuffer(protocol.memory_size)
    return [outputs for _, _, outputs in infer_windows(model, seq, windows, memory,
                                                       cache_features=cache_features)]


def _worst_difference(runs_a, runs_b) -> float:
    assert len(runs_a) == len(runs_b) > 1
    worst = 0.0
    for a, b in zip(runs_a, runs_b):
        assert a.keys() == b.keys()
        worst = max(worst, max((a[k] - b[k]).abs().max().item() for k in a))
    return worst


@pytest.mark.parametrize("protocol", PROTOCOLS, ids=["estm", "joint"])
def test_cached_and_folded_paths_equal_the_official_call(model, sequence, official, protocol):
    plain = official[protocol.name]
    assert _worst_difference(plain, _run(model, sequence, protocol, True)) <= CACHED_TOL
    folded = fold_batchnorm(model)
    assert _worst_difference(plain, _run(folded, sequence, protocol, True)) <= FOLDED_TOL


@pytest.mark.parametrize("protocol", PROTOCOLS, ids=["estm", "joint"])
def test_each_frame_features_are_computed_once(model, sequence, protocol):
    counts = {"matching": [], "context": []}
    hooks = [model.matchingFeature.register_forward_hook(
                 lambda m, args, out: counts["matching"].append(args[0].shape[0])),
             model.semanticFeature.register_forward_hook(
                 lambda m, args, out: counts["context"].append(args[0].shape[0]))]
    try:
        _run(model, sequence, protocol, cache_features=True)
    finally:
        for hook in hooks:
            hook.remove()
    windows = WINDOWS[protocol.name]
    frames = {i for window in windows for i in window}
    targets = {i for window in windows for i in window[1:-1]}
    assert sum(counts["matching"]) == len(frames)
    assert sum(counts["context"]) == len(targets)


def test_feature_cache_keeps_only_frames_still_needed(model, sequence, monkeypatch):

    sizes = []
    release = FrameFeatureCache.release

    def spy(self, k):
        release(self, k)
        sizes.append(len(self.matching) + len(self.context))
    monkeypatch.setattr(FrameFeatureCache, "release", spy)
    _run(model, sequence, estm_protocol(), cache_features=True)
    # ESTM: the matching features of frames k+1, k+2 stay for the next window, no context
    # features (each target is in one window); the last window leaves nothing.
    assert sizes == [2, 2, 0]


def test_fold_batchnorm_returns_an_inference_copy(model):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = fold_batchnorm(model)
    bns = [m for m in folded.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert bns == [] and folded.folded_batchnorms > 50
    # The loaded model and its checkpoint layout are untouched.
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert any(isinstance(m, torch.nn.BatchNorm3d) for m in model.modules())
    with pytest.raises(RuntimeError, match="inference copy"):
        folded.train()
    folded.eval()  # eval() is allowed
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm(DepthNetHybrid(ndepths=4, resnet=18).train())


def test_fold_batchnorm_of_a_resnet50_bottleneck_is_exact():
    from models.context_encoder import ResnetEncoder

    torch.manual_seed(0)
    enc = ResnetEncoder(50)
    for m in enc.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 2.0)
    enc.eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        want, got = enc(x), fold_batchnorm(enc)(x)
    for a, b in zip(want, got):
        assert (a - b).abs().max().item() <= 1e-4 * max(1.0, a.abs().max().item())


@pytest.mark.slow  # dynamo traces each window's shapes: ~20-35 s on 2 busy cores
def test_compiled_inference_runs_and_matches(model, sequence, official):
    # The eager backend exercises the --compile plumbing (graph capture of every compiled
    # part) in seconds; inductor's code generation is left to GPU machines.
    from torch._dynamo.utils import counters

    counters.clear()
    compiled = prepare_for_inference(model, fold_bn=True, compile=True, compile_backend="eager")
    outputs = _run(compiled, sequence, estm_protocol(), True)
    assert counters["stats"]["unique_graphs"] > 0  # dynamo did capture graphs
    assert _worst_difference(official["estm"], outputs) <= FOLDED_TOL


@pytest.mark.slow  # six 64-plane windows: ~15-40 s on 2 busy cores
def test_fast_path_replays_the_official_fixture(reference):
    """Cached features + folded batch norm, through the evaluation loop, stay within the
    fixture tolerances of tests.helpers (ESTM: six windows, memory evicted)."""
    model = prepare_for_inference(reference_model(reference, train=False), fold_bn=True)
    inputs = reference["inputs"]
    seq = [{"img": inputs["imgs"][0, i].float(), "cam_pose": inputs["cam_poses"][0, i],
            "cam_intr": inputs["cam_intr"][0], "dmap": None, "dmask": None,
            "img_path": f"{i}.jpg", "frame_id": i} for i in range(inputs["imgs"].shape[1])]
    expected = reference["estm"]["windows"]
    windows = [[s, s + 1, s + 2] for s in range(len(expected))]
    loop = infer_windows(model, seq, windows, MemoryBuffer(2), cache_features=True)
    for s, (_, _, outputs) in enumerate(loop):
        assert_outputs_match(outputs, expected[s], f"estm {s}")


def test_window_decode_never_waits_for_the_device(model, sequence, monkeypatch):
    """No ``.item()``, no truth value of a tensor, no checked inverse (each makes the host
    wait for a GPU) while a window is decoded: checked on the CPU by making them raise."""
    def forbidden(*args, **kwargs):
        raise AssertionError("host-device synchronisation in the inner loop")

    decode = DepthNetHybrid.decode

    def guarded(self, *args, **kwargs):
        with monkeypatch.context() as m:
            for name in ("item", "__bool__", "tolist"):
                m.setattr(torch.Tensor, name, forbidden)
            m.setattr(torch.linalg, "inv", forbidden)
            return decode(self, *args, **kwargs)
    monkeypatch.setattr(DepthNetHybrid, "decode", guarded)
    assert len(_run(model, sequence, estm_protocol(), cache_features=True)) == 3


def test_the_inference_copy_leaves_the_callers_model_as_it_was():
    model = DepthNetHybrid(ndepths=4, resnet=18).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    copy = prepare_for_inference(model, fold_bn=True)
    assert model.training and not copy.training
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def _distinct_sequences(lengths) -> list:
    """Sequences that differ in length, motion and intrinsics (a mix-up between sequences
    in a batch changes depths by far more than rounding)."""
    sequences = []
    for n, step, focal in zip(lengths, (0.05, -0.04, 0.06), (1.0, 0.8, 1.1)):
        frames = sideways_frames(n)
        for i, frame in enumerate(frames):
            frame["cam_pose"] = frame["cam_pose"].clone()
            frame["cam_pose"][:2, 3] = torch.tensor([step * i, 0.01 * i])
            frame["cam_intr"] = frame["cam_intr"] * torch.tensor([[focal], [focal], [1.0]])
        sequences.append(frames)
    return sequences


@pytest.mark.slow  # 16 ESTM / 14 Joint windows: ~15-40 s each on 2 busy cores
@pytest.mark.parametrize("protocol, lengths, batches", [
    # (batch, memory views) of each decode: sequences 0 and 1 (2 and 4 windows) together;
    # sequence 2 starts when 0 ends and runs beside 1 in batches of their own memory length.
    (estm_protocol(), (4, 6, 4), [(2, 0), (2, 1), (1, 0), (1, 2), (1, 1), (1, 2)]),
    (joint_protocol(), (11, 14, 9), [(2, 0), (2, 1), (1, 0), (1, 1), (1, 1)])],
    ids=["estm", "joint"])
def test_batched_sequences_equal_one_at_a_time(model, protocol, lengths, batches, monkeypatch):
    """Two places for three ragged sequences: the third starts while the second has
    memory, so batches of different memory lengths run side by side."""
    sequences = _distinct_sequences(lengths)
    alone = [[out for _, _, out in infer_windows(model, seq, protocol.windows(len(seq)),
                                                  MemoryBuffer(protocol.memory_size))]
             for seq in sequences]
    sizes, decode = [], DepthNetHybrid.decode

    def spy(self, matching, context, poses, intr, memory=None, use_est=None):
        sizes.append((poses.shape[0], len(memory) if memory is not None else 0))
        return decode(self, matching, context, poses, intr, memory, use_est)
    monkeypatch.setattr(DepthNetHybrid, "decode", spy)
    jobs = [(key, seq, protocol.windows(len(seq))) for key, seq in enumerate(sequences)]
    batched = {key: [] for key in range(len(sequences))}
    for key, k, window, _, out in infer_sequences(model, jobs, protocol.memory_size, 2):
        assert k == len(batched[key]) and window == jobs[key][2][k]  # each in its own order
        batched[key].append(out)
    assert sizes == batches
    for key, outputs in batched.items():
        assert len(outputs) == len(alone[key]) == len(jobs[key][2])
        assert all(out[("depth", 0, 0)].shape[0] == 1 for out in outputs)
        assert _worst_difference(alone[key], outputs) <= BATCHED_TOL


def test_batched_sequences_refuse_a_batch_size_below_one(model):
    with pytest.raises(ValueError, match="batch_sequences"):
        list(infer_sequences(model, [], 2, 0))
