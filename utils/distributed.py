"""Process-group setup for torchrun/DDP, rank-aware helpers and a resumable sampler."""

import contextlib
import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler


@dataclass
class DistEnv:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> this process's GPU when CUDA is available, else the CPU."""
    if name == "auto":
        name = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    elif name == "cuda":
        name = f"cuda:{local_rank}"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"--device {name}: CUDA is not available on this machine")
    return device


def init_distributed(device_name: str) -> DistEnv:
    """Join the process group that torchrun describes (WORLD_SIZE, RANK, LOCAL_RANK, ...).

    NCCL on GPUs, gloo on the CPU; a plain ``python`` run is a world of one.
    """
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    rank = int(os.environ.get("RANK", 0))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if world_size > 1 and device_name.startswith("cuda:"):
        raise ValueError(f"--device {device_name} with {world_size} processes would put every "
                         f"rank on one GPU; each rank uses the GPU of its LOCAL_RANK: pass "
                         f"--device cuda (or auto), and choose GPUs with CUDA_VISIBLE_DEVICES")
    device = resolve_device(device_name, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                timeout=datetime.timedelta(minutes=30))
    return DistEnv(rank, local_rank, world_size, device)


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(env: DistEnv) -> None:
    """Wait for every rank (nothing without a process group)."""
    if env.distributed:
        dist.barrier(device_ids=[env.device.index] if env.device.type == "cuda" else None)


@contextlib.contextmanager
def main_process_first(env: DistEnv):
    """Rank 0 runs the block first (e.g. builds a cache on disk); the others wait at a
    barrier, then run it (reading what rank 0 wrote)."""
    if not env.is_main:
        barrier(env)
        yield
        return
    try:
        yield
    finally:  # also on an error, so that the others fail on their own instead of hanging
        barrier(env)


@dataclass
class StepSummary:
    """What every rank learns at the end of a training step (see :func:`reduce_step`)."""

    losses: dict  # name -> loss averaged over ranks (Python floats)
    all_finite: bool  # every rank's loss is finite
    stop: bool  # some rank asked to stop (a signal)


def reduce_step(losses: dict, loss: torch.Tensor, stop: bool, env: DistEnv) -> StepSummary:
    """One reduction over ranks, and the only wait for the device, per training step.

    Carries the losses (0-d tensors), whether ``loss`` is finite and ``stop`` in a single
    ``all_reduce`` and a single device-to-host copy.
    """
    keys = sorted(losses)
    flags = torch.stack([(~torch.isfinite(loss.detach())).float(),
                         torch.full((), float(stop), device=loss.device)])
    values = torch.cat([torch.stack([losses[k].detach().float() for k in keys]), flags])
    values = values.to(env.device)
    if env.distributed:
        dist.all_reduce(values)
    *sums, non_finite, stops = values.tolist()
    return StepSummary({k: v / env.world_size for k, v in zip(keys, sums)},
                       all_finite=non_finite == 0, stop=stops > 0)


def gather_objects(obj, env: DistEnv) -> list:
    """Every rank's ``obj``, in rank order (a list of one without a process group)."""
    if not env.distributed:
        return [obj]
    out = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out


def replicas_in_sync(model: torch.nn.Module, env: DistEnv) -> bool:
    """Whether every rank holds exactly the same parameters.

    (Batch-norm running statistics are not compared: without SyncBN each rank updates its
    own in the last forward; DDP broadcasts rank 0's at the next one.)
    """
    with torch.no_grad():
        flat = torch.cat([p.detach().double().flatten() for p in model.parameters()])
        fingerprint = torch.stack([flat.sum(), flat.abs().sum(),
                                   (flat * torch.arange(flat.numel(), device=flat.device,
                                                        dtype=flat.dtype).remainder(97)).sum()])
    prints = gather_objects(fingerprint.cpu().tolist(), env)
    return all(p == prints[0] for p in prints)


class ResumableSampler(DistributedSampler):
    """A DistributedSampler (also for one process) that can start an epoch mid-way.

    The order of an epoch depends only on the seed and the epoch, so a resumed run skips
    exactly the batches the interrupted run had done, without loading them.
    """

    def __init__(self, dataset, batch_size: int, env: DistEnv, seed: int):
        super().__init__(dataset, num_replicas=env.world_size, rank=env.rank, shuffle=True,
                         seed=seed, drop_last=False)
        self.batch_size = batch_size
        self.start_batch = 0

    def set_position(self, epoch: int, start_batch: int = 0) -> None:
        self.set_epoch(epoch)
        self.start_batch = start_batch

    def __iter__(self):
        indices = list(super().__iter__())
        return iter(indices[self.start_batch * self.batch_size:])

    def __len__(self) -> int:
        return max(0, self.num_samples - self.start_batch * self.batch_size)
