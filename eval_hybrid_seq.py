"""ESTM evaluation of ESTDepth: a window of --lwindow frames sliding one frame at a time.

Each window predicts its middle frame and, with the EST transformer, receives the memory
of the last --memory_size windows (official ``eval_hybrid_seq.py``). Predictions are
written to ``<evalpath>/estm/<scene>[/<seq>]/{init_depth,refined_depth,...}/<frame>.npy``
(+ .jpg), an interrupted run resumes, and the metrics table follows (``--metrics``).

    python eval_hybrid_seq.py --eval_dataset scannet --datapath DATA/scannet_test \\
        --loadckpt checkpoint/model_000006.ckpt --evalpath outputs/est
See eval_hybrid_seq.sh, utils/evaluation.py (the run) and utils/protocols.py (the windows).
"""

import logging

from utils.config import load_config, log_ignored
from utils.evaluation import run_evaluation
from utils.logs import setup_logging
from utils.protocols import estm_protocol


def main(argv=None) -> dict:
    """Returns ``{"run_dir", "config_hash", "scenes", "metrics"}`` (see run_evaluation)."""
    args = load_config("eval", argv, description=__doc__)
    setup_logging(args.log_level)
    log_ignored(args, logging.getLogger("eval"))
    return run_evaluation(args, estm_protocol(args.lwindow, args.memory_size))


if __name__ == "__main__":
    main()
