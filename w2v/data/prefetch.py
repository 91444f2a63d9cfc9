"""Decode the audio of the next batches in background threads while the current one trains.

Decoding (FLAC/WAV through soundfile) is the expensive part of building a batch: about 2,900
seconds of audio per second per worker on the H100 machine's cores (BENCHMARKS.md), against
3,000-5,000 consumed per second by BASE pre-training on one H100. libsndfile releases the GIL,
so threads scale (4 threads: ~7,800 audio-s/s) without pickling cuts into processes. Only the
deterministic decode moves off the main thread; random crops and collation stay where they
were, so seeded runs and resumes are unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np


class Prefetcher:
    """`get(i)` returns `load(i)`, computed ahead in `workers` threads for indices `schedule`d
    earlier (0 workers: computed on demand in the caller's thread)."""

    def __init__(self, load: Callable[[int], np.ndarray], workers: int):
        self.load = load
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="w2v-audio") if workers > 0 else None
        self.pending: dict[int, Future] = {}

    def schedule(self, indices: Iterable[int]) -> None:
        if self.pool is None:
            return
        for i in indices:
            if i not in self.pending:
                self.pending[i] = self.pool.submit(self.load, i)

    def get(self, i: int) -> np.ndarray:
        future = self.pending.pop(i, None)
        return future.result() if future is not None else self.load(i)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
        self.pending.clear()

    def __enter__(self) -> "Prefetcher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = ["Prefetcher"]
