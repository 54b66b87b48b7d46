"""utils.timing: readings, their summary, the profiler's operator times."""

import time

import pytest
import torch

from utils.timing import Timer, operator_times, summarize


def test_summary_gives_the_median_and_the_spread():
    got = summarize([3.0, 1.0, 2.0])
    assert (got["median_s"], got["min_s"], got["max_s"], got["reps"]) == (2.0, 1.0, 3.0, 3)
    assert got["stdev_s"] == pytest.approx(1.0)
    assert summarize([5.0])["stdev_s"] == 0.0


def test_cpu_timer_counts_work_not_sleep():
    timer = Timer(torch.device("cpu"), cpu_time=True)
    start = timer.now()
    time.sleep(0.2)
    assert timer.now() - start < 0.1


def test_gpu_busy_time_counts_each_kernel_once():
    """A kernel is listed by itself (a device event) and in the self device time of the
    operator that launched it: busy sums the kernels only, operators rank by theirs."""
    from types import SimpleNamespace

    from torch.autograd import DeviceType

    def event(key, device_type, cpu_us, device_us):
        return SimpleNamespace(key=key, device_type=device_type, self_cpu_time_total=cpu_us,
                               self_device_time_total=device_us)
    events = [event("aten::conv", DeviceType.CPU, 50, 3000),
              event("aten::add", DeviceType.CPU, 20, 1000),
              event("conv_kernel", DeviceType.CUDA, 0, 3000),
              event("add_kernel", DeviceType.CUDA, 0, 1000)]
    ops, busy = operator_times(events, on_gpu=True, top=12)
    assert busy == pytest.approx(4e-3) and list(ops) == ["aten::conv", "aten::add"]
    assert ops["aten::conv"]["share"] == pytest.approx(0.75)
    ops, busy = operator_times(events, on_gpu=False, top=1)
    assert busy == pytest.approx(70e-6) and list(ops) == ["aten::conv"]
