"""Timing and memory readings for benchmarks: wall-clock or CPU time, medians and spread."""

from __future__ import annotations

import os
import resource
import statistics
import time

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
