"""One training run per ``--logdir``: an exclusive lock for the whole run, and no fresh
run over another run's checkpoints (a later ``--resume`` or ``--keep_checkpoints`` would
mix the two runs)."""

from __future__ import annotations

import contextlib
import glob
import logging
import os

from utils import checkpoint as ckpt_io
from utils import distributed as dist_utils
from utils.io import FolderLockedError, folder_lock

log = logging.getLogger("train")


class LogdirInUseError(RuntimeError):
    """``--logdir`` is held by another run, or holds another run's checkpoints."""


def run_checkpoints(logdir: str) -> list:
    """The checkpoints of the names training writes in ``logdir``, oldest first."""
    ours = [p for p in glob.glob(os.path.join(logdir, "*.ckpt"))
            if ckpt_io.checkpoint_position(p) is not None]
    return sorted(ours, key=ckpt_io.checkpoint_position)


def check_fresh_logdir(args) -> None:
    """A run without ``--resume`` starts in a logdir free of training checkpoints;
    ``--overwrite True`` deletes them instead (other files stay)."""
    found = run_checkpoints(args.logdir)
    if args.resume or not found:
        return
    if not args.overwrite:
        names = ", ".join(os.path.basename(p) for p in found[-3:])
        raise LogdirInUseError(
            f"--logdir {args.logdir} already holds another run's checkpoints ({names}); "
            f"use --resume True to continue that run, another --logdir, or --overwrite True "
            f"to start afresh there (deletes those checkpoints)")
    for path in found:
        os.remove(path)
        log.warning("--overwrite: removed %s of the previous run", path)


@contextlib.contextmanager
def claimed_logdir(args, env: dist_utils.DistEnv):
    """Hold ``--logdir`` for the block: rank 0 locks and checks it; every rank raises when
    rank 0 cannot start (the others would otherwise wait for it at a barrier)."""
    with contextlib.ExitStack() as stack:
        error = None
        if env.is_main:
            try:
                stack.enter_context(folder_lock(args.logdir, "train_hybrid.py"))
                check_fresh_logdir(args)
            except (FolderLockedError, LogdirInUseError) as err:
                error = err
        first = dist_utils.gather_objects(None if error is None else str(error), env)[0]
        if error is not None:
            raise error
        if first is not None:
            raise LogdirInUseError(f"rank 0 could not start: {first}")
        yield
