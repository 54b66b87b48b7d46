"""Train ESTDepth (DepthNetHybrid) on ScanNet or a synthetic set.

Single process:   python train_hybrid.py --datapath DATA [--device cpu] ...
Several GPUs:     torchrun --nproc_per_node=4 train_hybrid.py --sync_bn True ...
See `python train_hybrid.py --help` and configs/default.yaml for every option; the loop is
training/trainer.py, its model, data and precision set-up training/components.py.
"""

import logging
import sys

from training.components import check_args, seed_everything
# Also the names tests and tools use from here.
from training.components import amp_dtype, build_dataset, build_model, grad_scaler  # noqa: F401
from training.components import wrap_ddp  # noqa: F401
from training.trainer import NonFiniteLossError, NonFiniteStateError  # noqa: F401
from training.trainer import Trainer, TrainingInterrupted
from utils import distributed as dist_utils
from utils.config import load_config, log_ignored
from utils.logs import setup_logging

log = logging.getLogger("train")


def main(argv=None) -> dict:
    """Train with the options of ``argv``; returns the run's summary (train_summary.json)."""
    args = load_config("train", argv, description=__doc__)
    check_args(args.train)
    env = dist_utils.init_distributed(args.device)
    setup_logging(args.log_level, env.is_main)
    log_ignored(args, log)
    seed_everything(args.seed)
    try:
        return Trainer(args, env).train()
    finally:
        dist_utils.cleanup()


def cli(argv=None) -> None:
    """The command line: an interruption ends with its message and exit status 128 + signal
    (130 for Ctrl-C), not a traceback."""
    try:
        main(argv)
    except TrainingInterrupted as stop:
        print(stop, file=sys.stderr)
        sys.exit(128 + stop.signum)


if __name__ == "__main__":
    cli()
