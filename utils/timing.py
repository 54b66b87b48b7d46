"""Timing and memory readings for benchmarks: wall-clock or CPU time, medians and spread."""

from __future__ import annotations

import os
import resource
import statistics
import time
from contextlib import contextmanager

import torch


class Timer:
    """Wall-clock or process CPU time; waits for the GPU before each reading."""

    def __init__(self, device: torch.device, cpu_time: bool):
        self.device, self.cpu_time = device, cpu_time

    def now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.process_time() if self.cpu_time else time.perf_counter()


def summarize(seconds: list) -> dict:
    """Median and spread of repeated timings."""
    return {"median_s": statistics.median(seconds), "min_s": min(seconds),
            "max_s": max(seconds),
            "stdev_s": statistics.stdev(seconds) if len(seconds) > 1 else 0.0,
            "reps": len(seconds)}


def rss_gib() -> dict:
    """Current and peak resident memory of this process, GiB."""
    current = 0.0
    try:
        with open("/proc/self/statm") as f:
            current = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 30
    except (OSError, ValueError):
        pass  # not Linux: only the peak
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # KiB on Linux
    return {"rss_gib": current, "peak_rss_gib": peak}


@contextmanager
def module_timer(parts: dict, timer: Timer, totals: dict):
    """Accumulate each part's forward time into ``totals`` (hooks; nested calls excluded)."""
    starts, handles = {}, []
    for name, module in parts.items():
        def pre(_m, _a, name=name):
            starts[name] = timer.now()

        def post(_m, _a, _o, name=name):
            totals[name] = totals.get(name, 0.0) + timer.now() - starts.pop(name)
        handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    try:
        yield totals
    finally:
        for h in handles:
            h.remove()


def operator_times(events: list, on_gpu: bool, top: int) -> tuple:
    """``({operator: {s_per_step, share}}`` of the ``top`` largest, busy seconds``) from the
    profiler's averaged events.

    On the CPU: each operator's self CPU time; busy is their sum. On a GPU: each operator's
    self device time (its kernels'); busy is the sum over the kernels themselves (device
    events), which are also listed under the operators that launched them, so summing every
    event would count them twice. Busy against the step's time says whether the GPU or the
    host launching kernels limits a step.
    """
    from torch.autograd import DeviceType

    key = "self_device_time_total" if on_gpu else "self_cpu_time_total"
    operators = [e for e in events if e.device_type == DeviceType.CPU]
    device_events = [e for e in events if e.device_type != DeviceType.CPU] if on_gpu \
        else operators
    busy = sum(getattr(e, key) for e in device_events) or 1.0
    ranked = sorted(operators, key=lambda e: -getattr(e, key))[:top]
    ops = {e.key: {"s_per_step": getattr(e, key) / 1e6, "share": getattr(e, key) / busy}
           for e in ranked}
    return ops, busy / 1e6
