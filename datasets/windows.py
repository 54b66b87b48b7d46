"""Which frames go together: training windows and the two evaluation protocols.

All indices refer to a list of already subsampled frames (every ``frame_interval``-th
frame, see :mod:`datasets.sequence`), not to raw frame ids.
"""

from __future__ import annotations


def train_windows(num_frames: int, n_frames: int = 5) -> list[list[int]]:
    """The training windows of the official ScanNet sampler.

    The official ``build_dataset_index_train(r=n_frames)`` stores, for each centre
    ``i in range(r, num_frames - r, r // 2)``, the ``2r + 1`` frames ``i - r .. i + r``;
    ``read_sample_train`` then reads only the first ``n_frames`` of them. The effective
    window is therefore ``n_frames`` consecutive frames starting at
    ``s in range(0, num_frames - 2 * n_frames, n_frames // 2)``: the second half of each
    stored span is never used and the last ``n_frames`` frames never start a window.

    Returns:
        one list of ``n_frames`` consecutive indices per window.
    """
    return [list(range(start, start + n_frames))
            for start in range(0, num_frames - 2 * n_frames, n_frames // 2)]


def joint_windows(num_frames: int, window: int = 5, step: int = 3) -> list[list[int]]:
    """Windows of the official "Joint" evaluation (``data/general_eval.py``).

    The official loop runs over raw frame positions ``i in range(0, num - window *
    interval, step * interval)`` and takes ``i + k * interval`` for ``k < window``. In
    subsampled indices that is ``start in range(0, num_frames - window, step)`` (with
    ``num_frames = len(raw[::interval])``): a window never ends on the last subsampled
    frame. The model predicts the inner ``window - 2`` frames of each window (official
    ``img_path[img_i + 1]`` for ``img_i < window - 2``); with ``step = window - 2`` the
    targets tile the sequence: frames ``1 .. last_start + window - 2`` each get exactly one
    prediction, while frame 0 and the tail frames after the last window's targets get none.

    Returns:
        one list of ``window`` consecutive indices per window; targets are ``w[1:-1]``.
    """
    return [list(range(start, start + window)) for start in range(0, num_frames - window, step)]


def sliding_windows(num_frames: int, size: int = 3) -> list[list[int]]:
    """Windows of the official "ESTM" evaluation (``eval_hybrid_seq.py``, ``lwindow=3``).

    Frames arrive one at a time; once ``size`` frames are buffered the model runs on them
    and the oldest is dropped, so every run sees ``size`` consecutive frames and predicts
    the middle one (``size // 2``). The first and last ``size // 2`` frames get no
    prediction.

    Returns:
        one list of ``size`` consecutive indices per step; the target is ``w[size // 2]``.
    """
    return [list(range(start, start + size)) for start in range(num_frames - size + 1)]
