"""Joint evaluation of ESTDepth: windows of --seq_len frames stepping by --seq_len - 2.

Each window predicts its inner frames and, with the EST transformer, receives the memory
of the previous window (official ``eval_hybrid.py``). Predictions are written to
``<evalpath>/joint/<scene>[/<seq>]/{init_depth,refined_depth,...}/<frame>.npy`` (+ .jpg),
an interrupted run resumes, and the metrics table follows (``--metrics``).

    python eval_hybrid.py --eval_dataset 7scenes --datapath DATA/7scenes \\
        --loadckpt checkpoint/model_000006.ckpt --evalpath outputs/est
See eval_hybrid.sh, utils/evaluation.py (the run) and utils/protocols.py (the windows).
"""

import logging

from utils.config import load_config, log_ignored
from utils.evaluation import run_evaluation
from utils.logs import setup_logging
from utils.protocols import joint_protocol


def main(argv=None) -> dict:
    """Returns ``{"run_dir", "config_hash", "scenes", "metrics"}`` (see run_evaluation)."""
    args = load_config("eval", argv, description=__doc__)
    setup_logging(args.log_level)
    log_ignored(args, logging.getLogger("eval"))
    return run_evaluation(args, joint_protocol(args.seq_len))


if __name__ == "__main__":
    main()
