"""ESTM evaluation of ESTDepth: a window of --lwindow frames sliding one frame at a time.

Each window predicts its middle frame and, with the EST transformer, receives the memory
of the last --memory_size windows (official ``eval_hybrid_seq.py``). Predictions are
written to ``<evalpath>/estm/<scene>[/<seq>]/{init_depth,refined_depth,...}/<frame>.npy``
(+ .jpg), an interrupted run resumes, and the metrics table follows (``--metrics``).

    python eval_hybrid_seq.py --eval_dataset scannet --datapath DATA/scannet_test \\
        --loadckpt checkpoint/model_000006.ckpt --evalpath outputs/est
See eval_hybrid_seq.sh, evaluation/run.py (the run) and evaluation/protocols.py (the windows).
"""

from evaluation.run import evaluate_command_line


def main(argv=None) -> dict:
    """Returns ``{"run_dir", "config_hash", "scenes", "metrics"}`` (see run_evaluation)."""
    return evaluate_command_line("estm", argv, description=__doc__)


if __name__ == "__main__":
    main()
