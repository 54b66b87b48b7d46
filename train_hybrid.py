"""Train ESTDepth (DepthNetHybrid) on ScanNet or a synthetic set.

Single process:   python train_hybrid.py --datapath DATA [--device cpu] ...
Several GPUs:     torchrun --nproc_per_node=4 train_hybrid.py --sync_bn True ...
See `python train_hybrid.py --help` and configs/default.yaml for every option; the loop is
training/trainer.py, its model, data and precision set-up training/components.py.
"""

import sys

from training.run import run_training
from training.trainer import TrainingInterrupted


def main(argv=None) -> dict:
    """Train with the options of ``argv``; returns the run's summary (train_summary.json)."""
    return run_training(argv, description=__doc__)


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
