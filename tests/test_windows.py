"""datasets/windows.py: the official training, Joint and ESTM windows."""

from __future__ import annotations

from datasets.windows import joint_windows, sliding_windows, train_windows


def test_train_windows_follow_the_official_sampler():
    for n_frames in (3, 4, 5, 7):
        for num_frames in range(40):
            r = n_frames  # official build_dataset_index_train(r=n_frames) + read_sample_train
            official = [list(range(i - r, i - r + n_frames))
                        for i in range(r, num_frames - r, r // 2)]
            assert train_windows(num_frames, n_frames) == official


def test_joint_windows_follow_the_official_raw_frame_loop():
    interval, length, step = 10, 5, 3
    for num_raw in range(200):
        # Official prepare_seqs: raw positions i + k * interval, i stepping by seq_inter * interval
        official = [[(i + k * interval) // interval for k in range(length)]
                    for i in range(0, num_raw - length * interval, step * interval)]
        assert joint_windows(len(range(0, num_raw, interval)), length, step) == official
    windows = joint_windows(20)
    targets = [index for window in windows for index in window[1:-1]]
    assert targets == list(range(1, 1 + 3 * len(windows)))  # each inner frame exactly once


def test_sliding_windows_are_consecutive_triplets():
    assert sliding_windows(5) == [[0, 1, 2], [1, 2, 3], [2, 3, 4]]
    assert sliding_windows(2) == []
