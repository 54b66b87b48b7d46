"""Time ESTDepth on this machine: inference windows, a training step, the loader, long runs.

    python benchmark.py                                # the paper's configuration (ResNet-50, 64 planes, 256x320)
    python benchmark.py --device cpu --resnet 18 --ndepths 16 --height 128 --width 160
    python benchmark.py --threads 1 --cpu_time true --fast false --out before.json
    python benchmark.py --threads 1 --cpu_time true --compare before.json
    python benchmark.py --threads 1 --cpu_time true --alternate 5     # official vs fast, one run
    python benchmark.py --measure "" --loader true --loader_workers 4
    python benchmark.py --measure "" --sequence 1000 --height 128 --width 128 --resnet 18
    python benchmark.py --device cuda --amp bf16 --frames ../shared/data/7scenes/redkitchen/seq-sample --frame_interval 1

ESTM and Joint windows run through the evaluation loop (``evaluation.inference_loop.infer_windows``)
on a synthetic sequence with random images and a moving camera (timings do not depend on
the pixels), so a window's time is what the evaluation spends per window in the
steady state, memory included; ``--frames`` reads real frames from disk instead (end to end:
decoding and resizing included). ``--fast false`` runs the official per-window forward
instead (the baseline), and training steps as the official ``train_sample`` (under anomaly
detection). Every measurement reports the median, min, max and standard
deviation over ``--iters`` repetitions after ``--warmup`` untimed ones.
"""

from __future__ import annotations

import json
import logging
import statistics
from contextlib import nullcontext

import torch

from datasets.prefetch import prefetched
from datasets.synthetic.random_frames import RandomSequence, random_window
from evaluation.inference_loop import infer_windows
from evaluation.protocols import estm_protocol, joint_protocol
from evaluation.scenes import open_sequence
from models import precision
from models.depthnet import DepthNetHybrid, check_compile_mode, compiled_parts
from models.inference import prepare_for_inference
from models.memory import MemoryBuffer
from training.loader_rate import run_loader
from utils.config import load_config
from utils.distributed import resolve_device
from utils.io import save_json
from utils.timing import Timer, module_timer, operator_times, rss_gib, summarize

MEASURES = ("estm", "joint", "train")
LABELS = {"estm_window": "ESTM window (3 frames, 1 target, 2 memories)",
          "joint_window": "Joint window (5 frames, 3 targets, 1 memory)",
          "train_step": "training step (5 frames, forward, backward, Adam)"}


# ------------------------------------------------------------------------ inputs
def window_frames(args, n: int):
    """The sequence the timed windows read: ``--frames`` from disk, else random images."""
    if not args.frames:
        return RandomSequence(n, args.height, args.width)
    seq = open_sequence("7scenes", args.frames, args.height, args.width, args.frame_interval,
                        args.intrinsics, args.depth_min, args.depth_max)
    if len(seq) < n:
        raise ValueError(f"--frames {args.frames}: {len(seq)} frames at --frame_interval "
                         f"{args.frame_interval}, the timed windows need {n} (lower --iters "
                         f"or --warmup)")
    return seq


# ---------------------------------------------------------------- measurements
def timed_windows(model, protocol, reps: int, warmup: int, args, timer, autocast,
                  on_first_timed=None) -> list:
    """Seconds of each of ``reps`` windows after the memory is full and ``warmup`` more."""
    skip = protocol.memory_size + warmup
    probe = protocol.windows(10 ** 4)
    n_windows = skip + reps
    frames = probe[n_windows - 1][-1] + 1
    memory = MemoryBuffer(protocol.memory_size) if model.IF_EST_transformer else None
    seconds = []
    with prefetched(window_frames(args, frames), probe[:n_windows], args.num_workers) as seq, \
            autocast():
        loop = infer_windows(model, seq, probe[:n_windows], memory, cache_features=args.fast)
        for k in range(n_windows):
            if k == skip and on_first_timed is not None:
                on_first_timed()
            start = timer.now()
            next(loop)
            if k >= skip:
                seconds.append(timer.now() - start)
    return seconds


def timed_train_steps(model, reps: int, warmup: int, args, device, timer, autocast,
                      losses_out: list | None = None) -> list:
    """Seconds of training steps (forward, loss, backward, clipping, Adam) on one window;
    ``losses_out`` receives every step's loss (floats, read after the last step), which
    compares runs of one seed: compiled against eager, fp16 against fp32.

    ``--fast true`` steps as training/trainer.py does (the model's fast layers on);
    ``--fast false`` as the official ``train_sample`` did: the official layer order, inside
    ``torch.autograd.set_detect_anomaly(True)``. Both with cuDNN's autotuner on a GPU, as
    both trainers set it.
    """
    imgs, poses, K, sample = random_window(5, args.height, args.width, device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    model.use_fast_layers(args.fast).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=1e-6)
    seconds, losses_seen = [], []
    for k in range(warmup + reps):
        start = timer.now()
        model.begin_step()
        optimizer.zero_grad(set_to_none=True)
        with torch.autograd.set_detect_anomaly(not args.fast):
            with autocast():
                _, losses = model(imgs, poses, K, sample, mode="train")
            losses["loss"].backward()
        losses_seen.append(losses["loss"].detach().clone())  # no wait for the device
        torch.nn.utils.clip_grad_norm_(params, 10.0)
        optimizer.step()
        if k >= warmup:
            seconds.append(timer.now() - start)
    if losses_out is not None:
        losses_out.extend(float(loss) for loss in losses_seen)
    return seconds


def profiled_parts(model) -> dict:
    """The modules a window's time is attributed to (no module inside another)."""
    parts = {name: getattr(model, name) for name in
             ("matchingFeature", "semanticFeature", "pre0", "pre1", "pre2")}
    for name, child in model.CostRegNet.named_children():
        parts[f"CostRegNet.{name}"] = child
    return parts


def profile_window(model, protocol, args, timer, autocast) -> dict:
    """Share of a window's time per module, over ``--iters`` steady windows."""
    totals: dict = {}
    with module_timer(profiled_parts(model), timer, totals):
        windows = timed_windows(model, protocol, args.iters, args.warmup, args, timer,
                                autocast, on_first_timed=totals.clear)
    total = sum(windows)
    parts = dict(totals)
    parts["other (geometry, warps, softmax, copies)"] = max(0.0, total - sum(parts.values()))
    return {name: {"s_per_window": t / args.iters, "share": t / total}
            for name, t in sorted(parts.items(), key=lambda kv: -kv[1])}


def profile_train_ops(model, args, device, autocast, top: int = 12) -> tuple:
    """The operators one training step spends its time in (``torch.profiler``), see
    :func:`operator_times`."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        timed_train_steps(model, 1, 0, args, device, Timer(device, False), autocast)
    return operator_times(list(prof.key_averages()), device.type == "cuda", top)


def run_sequence(model, args, timer, autocast) -> dict:
    """ESTM over ``--sequence`` frames: per-frame time and RSS after 100 frames and at the end."""
    n = args.sequence
    protocol = estm_protocol()
    seq = RandomSequence(n, args.height, args.width)
    windows = protocol.windows(n)
    memory = MemoryBuffer(protocol.memory_size) if model.IF_EST_transformer else None
    checkpoints = sorted({min(100, n), n})
    seconds, report = [], {}
    span = max(1, min(50, len(windows) // 4))
    with autocast():
        loop = infer_windows(model, seq, windows, memory, cache_features=args.fast)
        for k in range(len(windows)):
            start = timer.now()
            next(loop)
            seconds.append(timer.now() - start)
            frames_seen = windows[k][-1] + 1
            if frames_seen in checkpoints or k == len(windows) - 1:
                recent = seconds[-span:]
                report[f"after_{frames_seen}_frames"] = {
                    "frame_s": statistics.median(recent), "windows": len(recent), **rss_gib()}
    keys = sorted(report, key=lambda k: int(k.split("_")[1]))
    first, last = report[keys[0]], report[keys[-1]]
    report["time_ratio"] = last["frame_s"] / first["frame_s"]
    report["peak_rss_ratio"] = last["peak_rss_gib"] / first["peak_rss_gib"]
    return report


# ------------------------------------------------------------------------ report
def print_report(results: dict, before: dict | None) -> None:
    c = results["config"]
    print(f"ResNet-{c['resnet']}, {c['ndepths']} planes, {c['height']}x{c['width']}, "
          f"EST {'on' if c['IF_EST_transformer'] else 'off'}, {c['device']}, amp {c['amp']}, "
          f"{c['fast'] if c['fast'] == 'alternating' else 'fast' if c['fast'] else 'official'} "
          f"inference path, compile {c['compile']}, "
          f"CUDA graphs {c.get('cuda_graphs', False)}, "
          f"torch {c['torch']}, {c['threads']} CPU threads, {c['timer']} time")
    for key, t in results["timings"].items():
        line = (f"  {LABELS[key]}: {t['median_s'] * 1e3:9.1f} ms  (min {t['min_s'] * 1e3:.1f}, "
                f"max {t['max_s'] * 1e3:.1f}, sd {t['stdev_s'] * 1e3:.1f}, n {t['reps']})")
        old = (before or {}).get("timings", {}).get(key)
        if old:
            line += f"   before {old['median_s'] * 1e3:.1f} ms: x{old['median_s'] / t['median_s']:.2f}"
        print(line)
    for protocol, profile in results.get("profile", {}).items():
        print(f"  where {'an ESTM' if protocol == 'estm' else 'a Joint'} window's time goes:")
        for name, p in profile.items():
            print(f"    {name:45s} {p['share'] * 100:5.1f}%  {p['s_per_window'] * 1e3:8.1f} ms")
    if "train_profile" in results:
        busy = results["train_profile_busy_s"] * 1e3
        step = results["timings"]["train_step"]["median_s"] * 1e3
        where = "GPU" if c["device"].startswith("cuda") else "CPU"
        print(f"  where a training step's time goes (operators, self {where} time; {where} "
              f"busy {busy:.1f} ms of a {step:.1f} ms step):")
        for name, p in results["train_profile"].items():
            print(f"    {name:45s} {p['share'] * 100:5.1f}%  {p['s_per_step'] * 1e3:8.1f} ms")
    if "loader" in results:
        r = results["loader"]
        line = f"  training loader, {r['workers']} workers: {r['samples_per_s']:.1f} samples/s"
        if "loader_vs_model" in r:
            line += (f" = {r['loader_vs_model']:.1f}x what a training step consumes "
                     f"({r['model_samples_per_s']:.2f} samples/s)")
        print(line)
    if "sequence" in results:
        for key, r in results["sequence"].items():
            if key.startswith("after_"):
                print(f"  ESTM {key.replace('_', ' ')}: {r['frame_s'] * 1e3:.1f} ms/frame, "
                      f"RSS {r['rss_gib']:.3f} GiB, peak {r['peak_rss_gib']:.3f} GiB")
        s = results["sequence"]
        print(f"  end vs 100 frames: time x{s['time_ratio']:.3f}, peak RSS x{s['peak_rss_ratio']:.3f}")
    for key in ("peak_gpu_memory_gib", "train_peak_gpu_memory_gib", "peak_rss_gib"):
        if key in results:
            print(f"  {key.replace('_', ' ')}: {results[key]:.2f}")


def checked_measures(args) -> list:
    """``--measure`` as a list; every option checked before any work."""
    precision.amp_dtype(args.amp)
    check_compile_mode(args.compile_mode)
    compiled_parts(args.compiled_parts)
    measures = [m.strip() for m in args.measure.split(",") if m.strip()]
    unknown = set(measures) - set(MEASURES)
    if unknown:
        raise ValueError(f"--measure takes {', '.join(MEASURES)}, got {sorted(unknown)}")
    if args.cuda_graphs and not args.fast:
        raise ValueError("--cuda_graphs replays the evaluation's decode: it needs --fast true")
    return measures


def run_config(args, device: torch.device) -> dict:
    """What the figures were measured with (the report's ``config``)."""
    config = {"resnet": args.resnet, "ndepths": args.ndepths, "height": args.height,
              "width": args.width, "IF_EST_transformer": args.IF_EST_transformer,
              "device": str(device), "amp": args.amp, "fast": args.fast,
              "compile": args.compile, "compile_mode": args.compile_mode,
              "compiled_parts": args.compiled_parts, "cuda_graphs": args.cuda_graphs,
              "frames": args.frames, "torch": torch.__version__,
              "threads": torch.get_num_threads(), "timer": "cpu" if args.cpu_time else "wall"}
    if device.type == "cuda":
        config["gpu"] = torch.cuda.get_device_name(device)
    return config


@torch.no_grad()
def measure_inference(model, measures: list, args, timer, autocast, results: dict) -> None:
    """ESTM and Joint windows, the profile and the long sequence, into ``results``."""
    infer_model = prepare_for_inference(model, fold_bn=args.fast, compile=args.compile,
                                        cuda_graphs=args.cuda_graphs) \
        if (args.fast or args.compile) else model.eval()  # --cuda_graphs needs --fast
    for name, protocol in (("estm", estm_protocol), ("joint", joint_protocol)):
        if name in measures:
            results["timings"][f"{name}_window"] = summarize(timed_windows(
                infer_model, protocol(), args.iters, args.warmup, args, timer, autocast))
    if args.profile:  # the measured protocols' windows (ESTM's when neither is measured)
        protocols = {"estm": estm_protocol, "joint": joint_protocol}
        profiled = [name for name in protocols if name in measures] or ["estm"]
        results["profile"] = {name: profile_window(infer_model, protocols[name](), args,
                                                   timer, autocast) for name in profiled}
    if args.sequence:
        results["sequence"] = run_sequence(infer_model, args, timer, autocast)


def measure_training(model, args, device, timer, autocast, results: dict) -> None:
    """Training steps (their losses, peak memory, the operator profile), into ``results``."""
    if args.compile:
        model.compile_parts(mode=args.compile_mode,  # as train_hybrid.py --compile True
                            parts=compiled_parts(args.compiled_parts))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    results["train_losses"] = []
    results["timings"]["train_step"] = summarize(timed_train_steps(
        model, args.iters, args.warmup, args, device, timer, autocast, results["train_losses"]))
    if device.type == "cuda":
        results["train_peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2 ** 30
    if args.profile:
        results["train_profile"], results["train_profile_busy_s"] = profile_train_ops(
            model, args, device, autocast)


def measure_alternating(model, measures: list, args, device, timer, autocast) -> dict:
    """``--alternate`` rounds, each timing every measure on the official path, then on the
    fast one (one machine state for both: the ratio of a round is a fair comparison even
    when the machine's load drifts between rounds)."""
    rounds: dict = {}
    args.profile = False
    for _ in range(args.alternate):
        for path in ("official", "fast"):
            args.fast = path == "fast"
            results = {"timings": {}}
            measure_inference(model, measures, args, timer, autocast, results)
            if "train" in measures:
                measure_training(model, args, device, timer, autocast, results)
            for key, t in results["timings"].items():
                rounds.setdefault(key, {"official_s": [], "fast_s": []})[f"{path}_s"].append(
                    t["median_s"])
    for r in rounds.values():
        r["ratios"] = [o / f for o, f in zip(r["official_s"], r["fast_s"])]
        r["ratio_median"] = statistics.median(r["ratios"])
        r["ratio_min"], r["ratio_max"] = min(r["ratios"]), max(r["ratios"])
    return rounds


def print_alternating(rounds: dict) -> None:
    for key, r in rounds.items():
        print(f"  {LABELS[key]}: official / fast x{r['ratio_median']:.2f} (range "
              f"{r['ratio_min']:.2f}-{r['ratio_max']:.2f} over {len(r['ratios'])} rounds; "
              f"official {statistics.median(r['official_s']) * 1e3:.0f} ms, fast "
              f"{statistics.median(r['fast_s']) * 1e3:.0f} ms, medians)")


def main(argv=None) -> dict:
    args = load_config("benchmark", argv, description=__doc__)
    logging.basicConfig(level=getattr(logging, args.log_level, logging.INFO))
    measures = checked_measures(args)
    dtype = precision.amp_dtype(args.amp)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    before = None
    if args.compare:
        with open(args.compare) as f:
            before = json.load(f)
    device = resolve_device(args.device)
    torch.manual_seed(args.seed)
    model = DepthNetHybrid.from_options(args.model).to(device)
    timer = Timer(device, args.cpu_time)

    def autocast():
        return nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)

    results = {"config": run_config(args, device), "timings": {}}
    if args.alternate:
        results["alternating"] = measure_alternating(model, measures, args, device, timer,
                                                     autocast)
        results["config"]["fast"] = "alternating"
        print_report(results, None)
        print_alternating(results["alternating"])
        return save_results(results, args.out)
    measure_inference(model, measures, args, timer, autocast, results)
    if "train" in measures:
        measure_training(model, args, device, timer, autocast, results)
    if args.loader:
        step = results["timings"].get("train_step", {}).get("median_s")
        results["loader"] = run_loader(args, step)
    results["peak_rss_gib"] = rss_gib()["peak_rss_gib"]
    if device.type == "cuda":
        results["peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2 ** 30
    print_report(results, before)
    return save_results(results, args.out)


def save_results(results: dict, out: str | None) -> dict:
    if out:
        save_json(results, out)
    return results


if __name__ == "__main__":
    main()
