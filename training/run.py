"""A training run from command-line options: configuration, processes, logging, the loop."""

from __future__ import annotations

import logging

from training.components import check_args, seed_everything
from training.logdir import claimed_logdir
from training.trainer import Trainer
from utils import distributed as dist_utils
from utils.config import load_config, log_ignored
from utils.logs import setup_logging

log = logging.getLogger("train")


def run_training(argv=None, description: str | None = None) -> dict:
    """Train with the options of ``argv``; returns the run's summary (train_summary.json)."""
    args = load_config("train", argv, description=description)
    check_args(args.train)
    env = dist_utils.init_distributed(args.device)
    setup_logging(args.log_level, env.is_main)
    log_ignored(args, log)
    seed_everything(args.seed)
    try:
        with claimed_logdir(args, env):  # the whole run: set-up, training, summary
            return Trainer(args, env).train()
    finally:
        dist_utils.cleanup()
