"""The GPU figures of docs/performance.md, and the CUDA tests, in one run.

For a machine with one NVIDIA GPU and little time on it: every step has its own time
limit, writes ``benchmark.py``'s JSON into ``--out`` and appends its output to
``--out/log.txt``, so whatever finished is kept if the machine goes away; a summary of the
medians (and the ratios against the official training step) is printed at the end.

    ESTDEPTH_SHARED=../shared python dev/gpu_figures.py --out gpu_figures
    python dev/gpu_figures.py --only train_official,train_fp16,tests --budget 500
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from utils.io import shared_dir

ROOT = Path(__file__).resolve().parents[1]
SHARED = shared_dir()
COMMON = ["--device", "cuda", "--iters", "10", "--warmup", "3"]
TRAIN, FP16, BF16 = ["--measure", "train"], ["--amp", "fp16"], ["--amp", "bf16"]
COMPILE_RO = ["--compile", "true", "--compile_mode", "reduce-overhead"]
# (name, benchmark.py arguments, time limit in seconds): the paper's configuration. The
# run's order is this list's, or --only's.
STEPS = [
    ("train_official", TRAIN + ["--fast", "false"], 90),
    ("train_fp32", TRAIN, 90),
    ("train_bf16", TRAIN + BF16, 90),
    ("train_fp16", TRAIN + FP16 + ["--profile", "true"], 120),
    ("train_fp16_compile", TRAIN + FP16 + ["--compile", "true"], 300),
    ("train_fp16_compile_ro", TRAIN + FP16 + COMPILE_RO, 300),
    ("train_bf16_compile_ro", TRAIN + BF16 + COMPILE_RO, 300),
    ("train_fp32_compile_ro", TRAIN + COMPILE_RO, 300),
    # One compiled part at a time: whose compiled training code moves the losses (compare
    # each step's losses with train_fp16's; on the H100 all parts together gave 3.4e-4
    # relative on the sideways window before utils.geometry.BOUNDARY_SLACK; after it, 1.4e-7
    # on the generic window, and the decoder alone 4.0e-7 on the sideways one).
    *((f"train_fp16_compile_ro_{part}", TRAIN + FP16 + COMPILE_RO + ["--compiled_parts", parts],
       240) for part, parts in (("matching", "matchingFeature"), ("context", "semanticFeature"),
                                ("decoder", "CostRegNet"), ("fusion", "pre1,pre2"))),
    ("estm_joint_official", ["--measure", "estm,joint", "--fast", "false"], 120),
    ("estm_joint_bf16_graphs", ["--measure", "estm,joint", "--amp", "bf16",
                                "--cuda_graphs", "true"], 120),
    # 100 frames/s end to end: real frames decoded and resized by 8 threads.
    ("estm_disk_bf16_compile_graphs",
     ["--measure", "estm", "--amp", "bf16", "--compile", "true", "--cuda_graphs", "true",
      "--frames", str(SHARED / "data/7scenes/redkitchen/seq-sample"), "--frame_interval", "1",
      "--num_workers", "8", "--iters", "40"], 300),
]
# Steps that are not benchmark.py runs: the CUDA tests (the compiled-training ones, which
# inductor compiles for minutes, apart), and where compiled training departs from eager, part by part (dev/compile_diff.py, the
# paper's configuration; with aot_eager: the same graphs on PyTorch's kernels). "{out}" in
# an argument is the run's --out folder.
TESTS, COMPILE_TESTS = "tests", "tests_compile"
COMPILE_DIFF = ["-m", "dev.compile_diff", "--device", "cuda", "--amp", "fp16"]
OTHER_STEPS = {
    TESTS: (["-m", "pytest", "-q", "tests/test_cuda.py", "-k", "not compiled_training"], 300),
    COMPILE_TESTS: (["-m", "pytest", "-q", "tests/test_cuda.py", "-k", "compiled_training"],
                    400),
    "compile_diff": (COMPILE_DIFF + ["--mode", "reduce-overhead",
                                     "--out", "{out}/compile_diff.json"], 300),
    "compile_diff_aot_eager": (COMPILE_DIFF + ["--backend", "aot_eager", "--mode", "default",
                                               "--out", "{out}/compile_diff_aot_eager.json"],
                               120),
    # The window the first H100 figures used: whole EST planes on the frustum boundary,
    # decided an ulp apart by eager and compiled code (datasets.synthetic.random_frames.CAMERAS).
    "compile_diff_sideways": (COMPILE_DIFF + ["--camera", "sideways", "--parts", "CostRegNet",
                                              "--mode", "default", "--steps", "1",
                                              "--out", "{out}/compile_diff_sideways.json"],
                              200),
}
# name -> (benchmark.py arguments, limit) of the benchmark steps
BENCHMARK_STEPS = {name: (step_args, limit) for name, step_args, limit in STEPS}


def benchmark_argv(args: list, out: Path, name: str) -> list:
    """The full ``benchmark.py`` command line of a step (later options win)."""
    return COMMON + args + ["--out", str(out / f"{name}.json")]


def command(name: str, out: Path) -> tuple[list, int]:
    """``(python arguments, time limit)`` of a step."""
    if name in OTHER_STEPS:
        step_args, limit = OTHER_STEPS[name]
        return [a.replace("{out}", str(out)) for a in step_args], limit
    step_args, limit = BENCHMARK_STEPS[name]
    return ["benchmark.py"] + benchmark_argv(step_args, out, name), limit


def run(cmd: list, limit: int, log: Path) -> int:
    """Run ``python cmd`` from the repository root, appending its output to ``log``."""
    with open(log, "a") as f:
        f.write(f"\n== {' '.join(cmd)} (limit {limit} s)\n")
        f.flush()
        start = time.time()
        try:
            rc = subprocess.run([sys.executable] + cmd, cwd=ROOT, stdout=f,
                                stderr=subprocess.STDOUT, timeout=limit).returncode
        except subprocess.TimeoutExpired:
            rc = 124
        f.write(f"== rc {rc} after {time.time() - start:.0f} s\n")
    return rc


def summary(out: Path) -> list[str]:
    """One line per finished step: its medians, training steps also against the official,
    and their first and last loss (one seed: eager and compiled runs must agree)."""
    lines, official = [], None
    path = out / "train_official.json"
    if path.exists():
        official = json.loads(path.read_text())["timings"]["train_step"]["median_s"]
    for name, _, _ in STEPS:
        path = out / f"{name}.json"
        if not path.exists():
            lines.append(f"{name}: no result (see log.txt)")
            continue
        results = json.loads(path.read_text())
        parts = []
        for key, t in results["timings"].items():
            text = f"{key} {t['median_s'] * 1e3:.1f} ms"
            if key == "train_step" and official:
                text += f" ({official / t['median_s']:.2f}x official)"
            parts.append(text)
        for key in ("train_peak_gpu_memory_gib", "peak_gpu_memory_gib"):
            if key in results:
                parts.append(f"{key} {results[key]:.2f}")
        if "train_profile_busy_s" in results:
            parts.append(f"GPU busy {results['train_profile_busy_s'] * 1e3:.1f} ms of a step")
        if results.get("train_losses"):
            losses = results["train_losses"]
            parts.append(f"loss first {losses[0]:.6f} last {losses[-1]:.6f}")
        lines.append(f"{name}: " + ", ".join(parts))
    for name in ("compile_diff", "compile_diff_aot_eager", "compile_diff_sideways"):
        path = out / f"{name}.json"
        if path.exists():
            lines.append(f"{name}: " + compile_diff_line(json.loads(path.read_text())))
    return lines


def compile_diff_line(report: dict) -> str:
    """dev/compile_diff.py's report in one line: the first loss against eager, both runs'
    distance from float64, the part that departs most on its own inputs, the gradients."""
    first, ref = report["steps"][0], report["float64"]
    part, e = max(first["parts"].items(), key=lambda kv: kv[1]["local"])
    return (f"first loss {first['loss_relative']:.2e} relative to eager (from float64: eager "
            f"{ref['eager']['loss_relative']:.2e}, compiled {ref['compiled']['loss_relative']:.2e}"
            f"), most local departure {part} {e['local']:.2e} at {e['local_at'] or 'output'}, "
            f"gradients {report['gradients']['relative']:.2e} (from float64: eager "
            f"{ref['eager']['gradients']:.2e}, compiled {ref['compiled']['gradients']:.2e})")


def main(argv=None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="gpu_figures", help="folder for the JSON and log")
    parser.add_argument("--only", default="", help="comma-separated step names (and "
                        f"{', '.join(OTHER_STEPS)}), run in this order")
    parser.add_argument("--skip_tests", action="store_true", help="no CUDA tests")
    parser.add_argument("--budget", type=float, default=float("inf"),
                        help="seconds for the whole run: each step's limit is cut to what is "
                        "left, and the summary is written in time")
    args = parser.parse_args(argv)
    known = set(BENCHMARK_STEPS) | set(OTHER_STEPS)
    names = [n for n in args.only.split(",") if n]
    unknown = set(names) - known
    if unknown:
        raise SystemExit(f"--only: unknown steps {sorted(unknown)}; the steps are "
                         f"{sorted(known)}")
    if not names:
        names = ([] if args.skip_tests else [TESTS, COMPILE_TESTS]) + [n for n, _, _ in STEPS]
        names += [n for n in OTHER_STEPS if n not in (TESTS, COMPILE_TESTS)]
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("dev/gpu_figures.py needs a CUDA GPU (torch.cuda.is_available() "
                         "is False)")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    log = out / "log.txt"
    deadline = time.time() + args.budget
    for name in names:
        cmd, limit = command(name, out)
        left = int(deadline - time.time())
        if left < 10:
            with open(log, "a") as f:
                f.write(f"\n== {name}: not run, the budget is spent\n")
            continue
        run(cmd, min(limit, left), log)
    lines = [torch.cuda.get_device_name(0) + f", torch {torch.__version__}"] + summary(out)
    (out / "summary.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return lines


if __name__ == "__main__":
    main()
