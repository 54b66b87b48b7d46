"""The official learning-rate schedule: linear warm-up, then step decay at given epochs."""

from bisect import bisect_right

from torch.optim.lr_scheduler import LambdaLR


def parse_lrepochs(spec: str):
    """``"2,4,6,8:2"`` -> (epochs ``[2, 4, 6, 8]``, factor ``0.5``)."""
    try:
        epochs, divisor = spec.split(":")
        milestones = [int(e) for e in epochs.split(",") if e.strip()]
        gamma = 1.0 / float(divisor)
    except ValueError:
        raise ValueError(f"--lrepochs must look like '2,4,6,8:2', got {spec!r}") from None
    if milestones != sorted(milestones):
        raise ValueError(f"--lrepochs epochs must increase, got {spec!r}")
    return milestones, gamma


def warmup_multistep_factor(milestones: list, gamma: float, warmup_factor: float,
                            warmup_iters: int):
    """lr factor at iteration ``it``: linear warm-up from ``warmup_factor``, then ``gamma``
    per milestone passed (maskrcnn-benchmark's WarmupMultiStepLR, as the official uses)."""
    def factor(it: int) -> float:
        warm = 1.0
        if it < warmup_iters:
            alpha = it / warmup_iters
            warm = warmup_factor * (1 - alpha) + alpha
        return warm * gamma ** bisect_right(milestones, it)
    return factor


def build_scheduler(optimizer, iters_per_epoch: int, lrepochs: str, warmup_factor: float,
                    warmup_iters: int) -> LambdaLR:
    """A per-iteration scheduler; milestones are epochs converted to iterations."""
    epochs, gamma = parse_lrepochs(lrepochs)
    milestones = [iters_per_epoch * e for e in epochs]
    return LambdaLR(optimizer, warmup_multistep_factor(milestones, gamma, warmup_factor,
                                                       warmup_iters))
