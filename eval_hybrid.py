"""Joint evaluation of ESTDepth: windows of --seq_len frames stepping by --seq_len - 2.

Each window predicts its inner frames and, with the EST transformer, receives the memory
of the previous window (official ``eval_hybrid.py``). Predictions are written to
``<evalpath>/joint/<scene>[/<seq>]/{init_depth,refined_depth,...}/<frame>.npy`` (+ .jpg),
an interrupted run resumes, and the metrics table follows (``--metrics``).

    python eval_hybrid.py --eval_dataset 7scenes --datapath DATA/7scenes \\
        --loadckpt checkpoint/model_000006.ckpt --evalpath outputs/est
See eval_hybrid.sh, evaluation/run.py (the run) and evaluation/protocols.py (the windows).
"""

from evaluation.run import evaluate_command_line


def main(argv=None) -> dict:
    """Returns ``{"run_dir", "config_hash", "scenes", "metrics"}`` (see run_evaluation)."""
    return evaluate_command_line("joint", argv, description=__doc__)


if __name__ == "__main__":
    main()
