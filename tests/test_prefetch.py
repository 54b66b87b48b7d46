"""datasets/prefetch.py: frames read ahead in threads are exactly the sequence's frames."""

import threading
import time

import pytest
import torch

from datasets.prefetch import PrefetchedFrames, reading_order


class RecordingSequence:
    """Frames made on demand; records which frames were read and in which thread."""

    skipped_nonfinite = 3

    def __init__(self, n: int, bad: int | None = None):
        self.n, self.bad = n, bad
        self.reads: list[tuple[int, str]] = []
        self.lock = threading.Lock()

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        with self.lock:
            self.reads.append((i, threading.current_thread().name))
        if i == self.bad:
            raise ValueError(f"frame-{i:06d}.color.png: truncated PNG")
        g = torch.Generator().manual_seed(i)
        return {"img": torch.rand(3, 4, 5, generator=g), "frame_id": i}


def settle(seq, count: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while len(seq.reads) < count and time.monotonic() < deadline:
        time.sleep(0.005)


def test_reading_order_is_first_use_over_the_windows():
    assert reading_order([[0, 1, 2], [1, 2, 3], [2, 3, 4]]) == [0, 1, 2, 3, 4]
    assert reading_order([[0, 1, 2, 3, 4], [3, 4, 5, 6, 7]]) == [0, 1, 2, 3, 4, 5, 6, 7]


def test_prefetched_frames_equal_the_sequence_and_are_read_in_threads():
    seq, plain = RecordingSequence(12), RecordingSequence(12)
    order = reading_order([[i, i + 1, i + 2] for i in range(10)])
    with PrefetchedFrames(seq, order, workers=2, ahead=4) as frames:
        assert len(frames) == 12 and frames.skipped_nonfinite == 3
        for i in order:
            got, want = frames[i], plain[i]
            assert got["frame_id"] == want["frame_id"] == i
            assert torch.equal(got["img"], want["img"])
    assert sorted(i for i, _ in seq.reads) == order  # each frame read once
    assert all(name.startswith("frames") for _, name in seq.reads)


def test_reads_at_most_ahead_frames_in_advance():
    seq = RecordingSequence(20)
    with PrefetchedFrames(seq, list(range(20)), workers=2, ahead=3) as frames:
        settle(seq, 3)
        time.sleep(0.05)
        assert sorted(i for i, _ in seq.reads) == [0, 1, 2]  # before anything is asked for
        for consumed in range(10):
            frames[consumed]
            settle(seq, consumed + 4)
            assert max(i for i, _ in seq.reads) <= consumed + 3


def test_a_bad_frame_raises_when_it_is_asked_for():
    seq = RecordingSequence(8, bad=4)
    with PrefetchedFrames(seq, list(range(8)), workers=2, ahead=8) as frames:
        for i in range(4):
            assert frames[i]["frame_id"] == i
        with pytest.raises(ValueError, match=r"frame-000004\.color\.png: truncated PNG"):
            frames[4]


def test_frames_outside_the_order_or_asked_twice_are_read_in_the_callers_thread():
    seq = RecordingSequence(6)
    with PrefetchedFrames(seq, [0, 1], workers=1, ahead=2) as frames:
        assert frames[0]["frame_id"] == 0
        assert frames[0]["frame_id"] == 0
        assert frames[5]["frame_id"] == 5
    main = threading.current_thread().name
    assert [i for i, name in seq.reads if name == main] == [0, 5]


def test_close_stops_the_threads():
    seq = RecordingSequence(100)
    frames = PrefetchedFrames(seq, list(range(100)), workers=2, ahead=4)
    frames[0]
    frames.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("frames")]
    assert len(seq.reads) <= 6
    assert frames[50]["frame_id"] == 50  # still usable, in the caller's thread


def test_refuses_no_workers():
    with pytest.raises(ValueError, match="workers and ahead must be >= 1"):
        PrefetchedFrames(RecordingSequence(2), [0, 1], workers=0)
