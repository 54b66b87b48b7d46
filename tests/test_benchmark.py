"""benchmark.py runs and reports every measurement (tiny settings: this is not a timing)."""

import json

import pytest
import torch

import benchmark
from datasets.synthetic.writer import generate
from models.depthnet import compiled_parts
from tests.helpers import BENCHMARK_TINY as TINY
from utils.timing import Timer


@pytest.mark.slow
def test_benchmark_reports_timings_writes_json_and_compares(tmp_path, capsys):
    out = tmp_path / "before.json"
    results = benchmark.main(TINY + ["--fast", "false", "--cpu_time", "true", "--out", str(out)])
    assert set(results["timings"]) == {"estm_window", "joint_window", "train_step"}
    for t in results["timings"].values():
        assert 0 < t["min_s"] <= t["median_s"] <= t["max_s"] and t["reps"] == 1
    assert results["config"]["fast"] is False and results["config"]["timer"] == "cpu"
    assert json.loads(out.read_text())["timings"].keys() == results["timings"].keys()
    assert "ESTM window" in capsys.readouterr().out

    again = benchmark.main(TINY + ["--measure", "estm", "--compare", str(out)])
    assert list(again["timings"]) == ["estm_window"] and again["config"]["fast"] is True
    ratio = results["timings"]["estm_window"]["median_s"] / again["timings"]["estm_window"]["median_s"]
    assert f"x{ratio:.2f}" in capsys.readouterr().out


def test_benchmark_profile_sequence_and_loader(tmp_path, capsys):
    data = tmp_path / "data"
    generate(data, "scannet", scenes=1, frames=14, height=120, width=160, seed=0, val=0,
             test=0, workers=1)
    results = benchmark.main(TINY + ["--measure", "", "--profile", "true", "--sequence", "6",
                                     "--loader", "true", "--loader_workers", "0",
                                     "--loader_samples", "3", "--loader_data", str(data),
                                     "--frame_interval", "1", "--intrinsics", "scene"])
    assert list(results["profile"]) == ["estm"]  # nothing measured: the ESTM window's
    profile = results["profile"]["estm"]
    assert "matchingFeature" in profile and "CostRegNet.dres0" in profile
    assert abs(sum(p["share"] for p in profile.values()) - 1) < 1e-6
    seq = results["sequence"]
    assert seq["after_6_frames"]["frame_s"] > 0 and seq["after_6_frames"]["peak_rss_gib"] > 0
    assert results["loader"]["samples"] == 3 and results["loader"]["samples_per_s"] > 0
    printed = capsys.readouterr().out
    assert "where an ESTM window's time goes" in printed and "training loader" in printed


def test_training_loader_gives_contiguous_float_images(tmp_path):
    from datasets.scannet import ScanNetTrainDataset

    generate(tmp_path, "scannet", scenes=1, frames=12, height=120, width=160, seed=0, val=0,
             test=0, workers=1)
    ds = ScanNetTrainDataset(tmp_path, tmp_path / "splits" / "train_split.txt", height=128,
                             width=160, frame_interval=1, intrinsics="scene")
    imgs = ds[0]["imgs"]
    assert imgs.shape == (5, 3, 128, 160) and imgs.dtype == torch.float32
    assert imgs.is_contiguous()  # no second copy before the first convolution or pinning


def test_benchmark_reads_real_frames_end_to_end(redkitchen, monkeypatch):
    """--frames: the timed windows read (decode, resize) the folder's frames, in order."""
    read = []
    original = benchmark.window_frames

    def spy(args, n):
        seq = original(args, n)
        get = seq.__getitem__
        seq_type = type(seq)
        monkeypatch.setattr(seq_type, "__getitem__",
                            lambda self, i: read.append(i) or get(i))
        return seq

    monkeypatch.setattr(benchmark, "window_frames", spy)
    results = benchmark.main(TINY + ["--measure", "estm", "--frames", str(redkitchen),
                                     "--frame_interval", "1"])
    assert results["timings"]["estm_window"]["reps"] == 1
    assert results["config"]["frames"] == str(redkitchen)
    # 2 memory windows + 1 timed one of 3 frames: frames 0..4, each read once (ahead, by
    # --num_workers threads: in any order).
    assert sorted(read) == [0, 1, 2, 3, 4]


def test_benchmark_refuses_too_few_real_frames(redkitchen):
    with pytest.raises(ValueError, match="--frames .* 3 frames at --frame_interval 20"):
        benchmark.main(TINY + ["--measure", "estm", "--frames", str(redkitchen),
                               "--frame_interval", "20", "--iters", "5"])


@pytest.mark.parametrize("fast", [True, False])
def test_training_steps_run_as_ours_or_as_the_official_train_sample(fast):
    """``--fast false`` times the official step: anomaly detection on in forward and
    backward; ours runs without it. Both take an optimizer step."""
    from contextlib import nullcontext

    from models.depthnet import DepthNetHybrid
    from utils.config import load_config

    args = load_config("benchmark", TINY + ["--fast", str(fast).lower()])
    torch.manual_seed(0)
    model = DepthNetHybrid(ndepths=4, depth_min=0.5, depth_max=5.0, resnet=18)
    seen = []
    model.pre1.register_forward_hook(lambda m, i, o: seen.append(torch.is_anomaly_enabled()))
    before = model.pre1[0].weight.detach().clone()
    seconds = benchmark.timed_train_steps(model, 1, 0, args, torch.device("cpu"),
                                          Timer(torch.device("cpu"), True), nullcontext)
    assert len(seconds) == 1 and seen and set(seen) == {not fast}
    assert not torch.equal(before, model.pre1[0].weight)  # Adam stepped
    assert not torch.is_anomaly_enabled()


@pytest.mark.slow
def test_the_profile_covers_each_measured_windows_protocol(capsys):
    results = benchmark.main(TINY + ["--measure", "joint", "--profile", "true"])
    profile = results["profile"]["joint"]
    assert list(results["profile"]) == ["joint"]
    assert "semanticFeature" in profile and "CostRegNet.epipolar_transformer" in profile
    assert abs(sum(p["share"] for p in profile.values()) - 1) < 1e-6
    assert "where a Joint window's time goes" in capsys.readouterr().out


def test_training_step_profile_names_the_operators(capsys):
    results = benchmark.main(TINY + ["--measure", "train", "--profile", "true"])
    ops = results["train_profile"]
    assert "aten::convolution_backward" in ops and len(ops) == 12
    shares = [p["share"] for p in ops.values()]
    assert shares == sorted(shares, reverse=True) and 0 < sum(shares) <= 1 + 1e-6
    busy = results["train_profile_busy_s"]
    assert ops["aten::convolution_backward"]["s_per_step"] < busy
    assert "where a training step's time goes" in capsys.readouterr().out


@pytest.mark.slow
def test_training_losses_are_recorded_for_every_step():
    results = benchmark.main(TINY + ["--measure", "train", "--iters", "2", "--warmup", "1"])
    losses = results["train_losses"]
    assert len(losses) == 3 and all(isinstance(v, float) and v > 0 for v in losses)


def test_an_unknown_compile_mode_or_part_is_refused_before_any_work():
    with pytest.raises(ValueError, match="--compile_mode must be one of"):
        benchmark.main(TINY + ["--compile_mode", "fastest"])
    with pytest.raises(ValueError, match="compiled parts must be some of"):
        benchmark.main(TINY + ["--compiled_parts", "CostRegNet,decoder"])
    assert compiled_parts(" pre1, CostRegNet") == ("pre1", "CostRegNet")


@pytest.mark.slow
def test_alternating_rounds_time_both_paths_and_state_the_ratio_spread(capsys, monkeypatch):
    """--alternate: each round times the official path, then the fast one; every ratio is
    a round's official / fast, and the report states their median and range."""
    paths = []
    timed = benchmark.timed_windows

    def recording(model, *args, **kwargs):
        paths.append(getattr(model, "folded_batchnorms", None) is not None)
        return timed(model, *args, **kwargs)

    monkeypatch.setattr(benchmark, "timed_windows", recording)
    results = benchmark.main(TINY + ["--measure", "estm", "--alternate", "3", "--cpu_time",
                                     "true"])
    assert paths == [False, True] * 3  # official (unfolded), then the folded inference copy
    r = results["alternating"]["estm_window"]
    assert len(r["official_s"]) == len(r["fast_s"]) == len(r["ratios"]) == 3
    assert r["ratios"] == [o / f for o, f in zip(r["official_s"], r["fast_s"])]
    assert r["ratio_min"] <= r["ratio_median"] <= r["ratio_max"]
    assert results["config"]["fast"] == "alternating" and results["timings"] == {}
    assert f"x{r['ratio_median']:.2f} (range {r['ratio_min']:.2f}-" in capsys.readouterr().out
