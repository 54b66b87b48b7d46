"""Checkpoint I/O in the official format ``{"epoch", "model", "optimizer", ...}``."""

import glob
import logging
import os
import pickle
import re
import sys

import numpy as np
import torch

from utils.io import save_torch

# The official --restore_part loads only the two feature extractors.
FEATURE_NET_PREFIXES = ("matchingFeature.", "semanticFeature.")
log = logging.getLogger("checkpoint")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not fit the model."""


def read_checkpoint(path: str, trusted: bool = False) -> dict:
    """Load a checkpoint file on the CPU; a bare state dict is wrapped as ``{"model": ...}``.

    Only tensors and plain data are read (``weights_only``: a downloaded file cannot run
    code); ``trusted`` reads any pickle, for a file whose source you trust (see
    :func:`convert`).
    """
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path!r} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=not trusted)
    except pickle.UnpicklingError as err:
        if trusted or "global" not in str(err).lower():  # else: corrupt, not refused
            raise CheckpointError(f"checkpoint {path!r} cannot be read: {err}") from err
        raise CheckpointError(
            f"checkpoint {path!r} holds Python objects other than tensors and plain data, "
            f"which could run code when loaded, so it is refused. If you trust its source, "
            f"convert it once: python -m utils.checkpoint {path} CONVERTED.ckpt") from err
    except Exception as err:  # torch raises many types for corrupt/truncated files
        raise CheckpointError(f"checkpoint {path!r} cannot be read: {err}") from err
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"checkpoint {path!r} holds a {type(ckpt).__name__}, not a dict")
    if "model" not in ckpt:
        if all(torch.is_tensor(v) for v in ckpt.values()):
            return {"model": ckpt}
        raise CheckpointError(f"checkpoint {path!r} has no 'model' entry (keys: {sorted(ckpt)})")
    return ckpt


def strip_module_prefix(state: dict) -> dict:
    """Remove the ``module.`` prefix that DataParallel/DDP add to every key."""
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


def load_model_state(model: torch.nn.Module, state: dict, source: str = "checkpoint",
                     prefixes: tuple | None = None) -> None:
    """Load a state dict strictly, or only the keys under ``prefixes`` (all of them).

    Raises:
        CheckpointError listing missing, unexpected and mis-shaped keys.
    """
    state = strip_module_prefix(state)
    target = model.state_dict()
    if prefixes is not None:
        keep = lambda k: k.startswith(prefixes)  # noqa: E731
        state = {k: v for k, v in state.items() if keep(k)}
        target = {k: v for k, v in target.items() if keep(k)}
    missing = sorted(set(target) - set(state))
    unexpected = sorted(set(state) - set(target))
    misshaped = sorted(f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(target[k].shape)}"
                       for k in set(state) & set(target) if state[k].shape != target[k].shape)
    if missing or unexpected or misshaped:
        raise CheckpointError(
            f"{source} does not fit the model:\n" + _listing("missing", missing)
            + _listing("unexpected", unexpected) + _listing("mis-shaped", misshaped)
            + "Check --resnet, --ndepths and --IF_EST_transformer against the checkpoint.")
    non_finite = sorted(k for k, v in state.items()
                        if v.is_floating_point() and not bool(torch.isfinite(v).all()))
    if non_finite:  # such weights predict nonsense (depth 0 everywhere) without an error
        raise CheckpointError(f"{source} holds non-finite values:\n"
                              + _listing("non-finite", non_finite))
    model.load_state_dict(state, strict=prefixes is None)


def load_checkpoint(model: torch.nn.Module, path: str, prefixes: tuple | None = None) -> dict:
    """Read ``path`` and load its model weights; returns the whole checkpoint dict."""
    ckpt = read_checkpoint(path)
    load_model_state(model, ckpt["model"], source=f"checkpoint {path!r}", prefixes=prefixes)
    return ckpt


def save_checkpoint(path: str, model: torch.nn.Module, optimizer=None, epoch: int = 0,
                    **extra) -> None:
    """Write ``{"epoch", "model", "optimizer", **extra}`` atomically (DDP prefix removed)."""
    model = getattr(model, "module", model)
    ckpt = {"epoch": epoch, "model": model.state_dict(),
            "optimizer": None if optimizer is None else optimizer.state_dict(), **extra}
    save_torch(ckpt, path)


def checkpoint_position(path: str) -> tuple | None:
    """``(epoch, iteration)`` order key of a checkpoint name this project writes, else None.

    ``model_{E}.ckpt`` is written at the end of epoch E and ``model_epoch{E}_iter{S}.ckpt``
    after S iterations in epoch E, so the end of epoch E comes after every iteration
    checkpoint of that epoch.
    """
    name = os.path.basename(path)
    mid_epoch = re.fullmatch(r"model_epoch(\d+)_iter(\d+)\.ckpt", name)
    if mid_epoch:
        return int(mid_epoch.group(1)), int(mid_epoch.group(2))
    end = re.fullmatch(r"model_(\d+)\.ckpt", name)
    if end:
        return int(end.group(1)) + 1, 0
    return None


def latest_checkpoint(logdir: str) -> str | None:
    """The furthest-trained checkpoint in ``logdir`` (None when there is none).

    Only the names training writes count: a ``model_best.ckpt`` or any other file a user
    put there is ignored (and logged), never an error.
    """
    paths = glob.glob(os.path.join(logdir, "*.ckpt"))
    ours = [p for p in paths if checkpoint_position(p) is not None]
    for other in sorted(set(paths) - set(ours)):
        log.info("--resume ignores %s (not a name training writes)", other)
    return max(ours, key=checkpoint_position) if ours else None


def _listing(what: str, keys: list, limit: int = 20) -> str:
    if not keys:
        return ""
    shown = "\n".join("    " + k for k in keys[:limit])
    more = f"\n    ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return f"  {len(keys)} {what} keys:\n{shown}{more}\n"


def plain(value):
    """``value`` with numpy arrays as tensors and numpy scalars as Python numbers."""
    if isinstance(value, dict):
        return type(value)((k, plain(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value)
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value.astype(np.int64) if value.dtype == np.uint32 else value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def convert(src: str, dst: str) -> None:
    """Rewrite a trusted checkpoint so that it loads with ``weights_only`` (numpy values
    as tensors and numbers); the weights are unchanged."""
    save_torch(plain(read_checkpoint(src, trusted=True)), dst)
    read_checkpoint(dst)  # it now loads as any checkpoint


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m utils.checkpoint TRUSTED.ckpt CONVERTED.ckpt")
    convert(sys.argv[1], sys.argv[2])
    print(f"wrote {sys.argv[2]}")
