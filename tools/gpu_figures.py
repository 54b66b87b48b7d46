"""The GPU figures of the README's speed section, and the CUDA tests, in one run.

For a machine with one NVIDIA GPU and little time on it: every step has its own time
limit, writes ``benchmark.py``'s JSON into ``--out`` and appends its output to
``--out/log.txt``, so whatever finished is kept if the machine goes away; a summary of the
medians (and the ratios against the official training step) is printed at the end.

    ESTDEPTH_SHARED=../shared python tools/gpu_figures.py --out gpu_figures
    python tools/gpu_figures.py --only train_official,train_fp16 --skip_tests
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMON = ["--device", "cuda", "--iters", "10", "--warmup", "3"]
# (name, benchmark.py arguments, time limit in seconds): the paper's configuration.
STEPS = [
    ("train_official", ["--measure", "train", "--fast", "false"], 120),
    ("train_fp32", ["--measure", "train"], 120),
    ("train_bf16", ["--measure", "train", "--amp", "bf16"], 120),
    ("train_fp16", ["--measure", "train", "--amp", "fp16"], 120),
    ("train_fp16_profile", ["--measure", "train", "--amp", "fp16", "--profile", "true",
                            "--iters", "3"], 120),
    ("train_fp16_compile", ["--measure", "train", "--amp", "fp16", "--compile", "true"], 300),
    ("estm_joint_official", ["--measure", "estm,joint", "--fast", "false"], 120),
    ("estm_joint_bf16_graphs", ["--measure", "estm,joint", "--amp", "bf16",
                                "--cuda_graphs", "true"], 120),
]
CUDA_TESTS = (["-m", "pytest", "-q", "tests/test_cuda.py"], 300)


def benchmark_argv(args: list, out: Path, name: str) -> list:
    """The full ``benchmark.py`` command line of a step (later options win)."""
    return COMMON + args + ["--out", str(out / f"{name}.json")]


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
    """One line per finished step: its medians, training steps also against the official."""
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
        lines.append(f"{name}: " + ", ".join(parts))
    return lines


def main(argv=None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="gpu_figures", help="folder for the JSON and log")
    parser.add_argument("--only", default="", help="comma-separated step names")
    parser.add_argument("--skip_tests", action="store_true", help="no CUDA tests")
    args = parser.parse_args(argv)
    names = [n for n in args.only.split(",") if n]
    unknown = set(names) - {name for name, _, _ in STEPS}
    if unknown:
        raise SystemExit(f"--only: unknown steps {sorted(unknown)}; the steps are "
                         f"{[name for name, _, _ in STEPS]}")
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("tools/gpu_figures.py needs a CUDA GPU (torch.cuda.is_available() "
                         "is False)")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    log = out / "log.txt"
    if not args.skip_tests:
        run(*CUDA_TESTS, log)
    for name, step_args, limit in STEPS:
        if not names or name in names:
            run(["benchmark.py"] + benchmark_argv(step_args, out, name), limit, log)
    lines = [torch.cuda.get_device_name(0) + f", torch {torch.__version__}"] + summary(out)
    (out / "summary.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return lines


if __name__ == "__main__":
    main()
