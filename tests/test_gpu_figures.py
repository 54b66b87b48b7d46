"""dev/gpu_figures.py: the prepared GPU run (its steps parse, its summary, its refusals)."""

import json

import pytest
import torch

from dev import gpu_figures
from utils.config import load_config


def test_every_step_is_a_valid_benchmark_command(tmp_path):
    for name, args, limit in gpu_figures.STEPS:
        parsed = load_config("benchmark", gpu_figures.benchmark_argv(args, tmp_path, name))
        assert parsed.device == "cuda" and parsed.out == str(tmp_path / f"{name}.json")
        assert 0 < limit <= 600  # one device call runs at most 10 minutes


def test_summary_gives_medians_and_ratios_to_the_official_step(tmp_path):
    def write(name, median_s, **extra):
        timings = {"train_step": {"median_s": median_s}}
        (tmp_path / f"{name}.json").write_text(json.dumps({"timings": timings, **extra}))

    write("train_official", 0.28)
    write("train_fp16", 0.14, train_peak_gpu_memory_gib=6.5)
    lines = gpu_figures.summary(tmp_path)
    assert "train_official: train_step 280.0 ms (1.00x official)" in lines
    assert "train_fp16: train_step 140.0 ms (2.00x official), train_peak_gpu_memory_gib 6.50" \
        in lines
    assert "train_bf16: no result (see log.txt)" in lines


def test_unknown_steps_are_refused(tmp_path):
    with pytest.raises(SystemExit, match="unknown steps"):
        gpu_figures.main(["--out", str(tmp_path), "--only", "train_fp8"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without a GPU")
def test_without_a_gpu_it_says_so(tmp_path):
    with pytest.raises(SystemExit, match="needs a CUDA GPU"):
        gpu_figures.main(["--out", str(tmp_path)])


def test_a_step_logs_its_output_and_a_step_past_its_limit_reads_124(tmp_path):
    log = tmp_path / "log.txt"
    assert gpu_figures.run(["-c", "print('step output')"], 60, log) == 0
    assert gpu_figures.run(["-c", "import time; time.sleep(30)"], 1, log) == 124
    text = log.read_text()
    assert "step output" in text and "== rc 0" in text and "== rc 124" in text


@pytest.mark.slow
def test_summary_reads_what_benchmark_writes(tmp_path):
    """The real JSON of benchmark.py (tiny, on the CPU), not a hand-made one."""
    import benchmark
    from tests.helpers import BENCHMARK_TINY as TINY

    for name in ("train_official", "train_fp32"):
        fast = "false" if name == "train_official" else "true"
        benchmark.main(TINY + ["--measure", "train", "--fast", fast,
                               "--out", str(tmp_path / f"{name}.json")])
    lines = gpu_figures.summary(tmp_path)
    assert lines[0].startswith("train_official: train_step ") and "1.00x official" in lines[0]
    assert lines[1].startswith("train_fp32: train_step ") and "x official" in lines[1]


def test_only_sets_the_order_and_the_budget_cuts_each_limit(tmp_path, monkeypatch):
    calls, clock = [], [1000.0]

    def fake_run(cmd, limit, log):
        calls.append((cmd[0], limit))
        clock[0] += 200  # every step takes 200 s
        return 0
    monkeypatch.setattr(gpu_figures, "run", fake_run)
    monkeypatch.setattr(gpu_figures.time, "time", lambda: clock[0])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: "a GPU")
    gpu_figures.main(["--out", str(tmp_path), "--budget", "450",
                      "--only", "train_fp16,tests,train_official,train_bf16"])
    limits = {name: limit for name, (_, limit) in gpu_figures.BENCHMARK_STEPS.items()}
    assert calls == [("benchmark.py", limits["train_fp16"]), ("-m", 250),
                     ("benchmark.py", 50)]  # train_bf16: 10 s or less left
    assert "train_bf16: not run, the budget is spent" in (tmp_path / "log.txt").read_text()
    assert (tmp_path / "summary.txt").read_text().startswith("a GPU, torch ")
