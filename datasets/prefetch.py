"""Read a sequence's frames ahead of the inference loop, in background threads.

The evaluation reads each frame once, in an order known before it starts (the windows').
Decoding a 640x480 colour JPEG/PNG and a 16-bit depth PNG and resizing them costs about as
much CPU time as a whole bf16 ESTM window takes on a GPU, so reading in the loop's thread
halves its frame rate. OpenCV releases the GIL while decoding, so threads suffice.
"""

from __future__ import annotations

from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext


def reading_order(windows: list) -> list:
    """Frame indices in the order a loop over ``windows`` first needs them."""
    return list(OrderedDict.fromkeys(i for window in windows for i in window))


class PrefetchedFrames:
    """``seq[i]`` for the frames of ``order``, read up to ``ahead`` frames in advance.

    Indexing returns exactly what ``seq[i]`` returns (and raises what it raises, when that
    frame is asked for). A frame outside ``order``, or asked for again, is read in the
    caller's thread. Use as a context manager (or call :meth:`close`) so that the threads
    stop when the loop stops early.
    """

    def __init__(self, seq, order: list, workers: int = 2, ahead: int = 8):
        if workers < 1 or ahead < 1:
            raise ValueError(f"workers and ahead must be >= 1, got {workers} and {ahead}")
        self.seq = seq
        self._order = list(order)
        self._next = 0  # position in order of the next frame to submit
        self._pending: dict[int, Future] = {}
        self._ahead = ahead
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="frames")
        self._fill()

    def __len__(self) -> int:
        return len(self.seq)

    def __getattr__(self, name):
        # Dataset attributes (skipped_nonfinite, missing_depth, ...) are the sequence's.
        if name == "seq":
            raise AttributeError(name)
        return getattr(self.seq, name)

    def __getitem__(self, i: int):
        future = self._pending.pop(i, None)
        self._fill()
        return future.result() if future is not None else self.seq[i]

    def _fill(self) -> None:
        while (len(self._pending) < self._ahead and self._next < len(self._order)
               and self._pool is not None):
            i = self._order[self._next]
            self._next += 1
            if i not in self._pending:
                self._pending[i] = self._pool.submit(self.seq.__getitem__, i)

    def close(self) -> None:
        """Stop reading ahead; frames already being read are finished and dropped."""
        if self._pool is not None:
            for future in self._pending.values():
                future.cancel()
            self._pending.clear()
            self._pool.shutdown(wait=True)
            self._pool = None

    def __enter__(self) -> "PrefetchedFrames":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def prefetched(seq, windows: list, workers: int):
    """A context manager giving ``seq`` read ahead for a loop over ``windows`` by
    ``workers`` threads (0: ``seq`` itself, read in the loop's thread)."""
    if workers <= 0:
        return nullcontext(seq)
    return PrefetchedFrames(seq, reading_order(windows), workers=workers)
