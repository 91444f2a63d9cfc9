"""Decode the audio of the next batches in background workers while the current one trains.

Decoding (FLAC/WAV through soundfile) is the expensive part of building a batch: about 2,900
seconds of audio per second per worker on the H100 machine's cores (BENCHMARKS.md), against
3,000-5,000 consumed per second by BASE pre-training on one H100. Only the deterministic
decode moves off the main thread; random crops and collation stay where they were, so seeded
runs and resumes are unchanged whichever kind of worker decodes.

Two kinds of worker:

- ``threads``: no start-up cost and nothing pickled; libsndfile releases the GIL while it
  decodes, but lhotse's and numpy's Python around it does not. Right for CPU training, whose
  main thread spends its time inside torch kernels.
- ``processes`` (forked, as torch's DataLoader on Linux): no GIL shared with the main thread,
  each decoded array sent back pickled. On a GPU the main thread is busy launching kernels in
  Python, and loader threads take turns with it: BASE pre-training on an H100 ran 2,308
  audio-s/s with 4 threads and 1,783 with 8, and 1,648 from the in-memory cache against 1,050
  decoding (before collation moved to the GPU). With 4 workers, on one H100 and one warm
  machine, processes gave 2,562 audio-s/s (the loop waited for audio 11% of the time) against
  2,426 (13%) for threads: ``auto`` means processes on a GPU, threads elsewhere.
"""

from __future__ import annotations

import multiprocessing
import sys
import warnings
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor

import numpy as np

KINDS = ("auto", "threads", "processes")

_worker_load: Callable[[int], np.ndarray] | None = None


def _init_worker(load: Callable[[int], np.ndarray]) -> None:
    global _worker_load
    _worker_load = load
    torch = sys.modules.get("torch")
    if torch is not None:  # a forked copy of the parent's thread pools: stay on one thread
        torch.set_num_threads(1)


def _load_in_worker(i: int) -> np.ndarray:
    assert _worker_load is not None, "worker not initialised"
    return _worker_load(i)


def resolve_kind(kind: str, device_type: str) -> str:
    """``auto``: processes when training on a GPU (``device_type`` "cuda"), threads elsewhere
    (the module's docstring)."""
    if kind not in KINDS:
        raise ValueError(f"loader must be one of {KINDS}, got {kind!r}")
    if kind == "auto":
        return "processes" if device_type == "cuda" else "threads"
    return kind


class Prefetcher:
    """`get(i)` returns `load(i)`, computed ahead in `workers` threads or processes for indices
    `schedule`d earlier (0 workers: computed on demand in the caller's thread). Forked worker
    processes inherit `load` (a closure will do); what it returns must pickle."""

    def __init__(self, load: Callable[[int], np.ndarray], workers: int, kind: str = "threads"):
        if kind not in ("threads", "processes"):
            raise ValueError(f"Prefetcher kind must be 'threads' or 'processes' (resolve 'auto' first), got {kind!r}")
        self.load = load
        self.kind = kind
        # what a worker runs for index i: forked processes call the `load` they inherited
        self._task = _load_in_worker if kind == "processes" else load
        self.pool: Executor | None = None
        if workers > 0 and self.kind == "processes":
            # fork, as torch's DataLoader on Linux: the workers inherit `load` (nothing pickled,
            # no re-import of the main script as spawn/forkserver do) and run only decoding,
            # never CUDA. Python warns about forking a process with threads (tqdm's, torch's).
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*use of fork\\(\\) may lead to deadlocks",
                                        category=DeprecationWarning)
                self.pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                                                initializer=_init_worker, initargs=(load,))
        elif workers > 0:
            self.pool = ThreadPoolExecutor(workers, thread_name_prefix="w2v-audio")
        self.pending: dict[int, Future] = {}

    def schedule(self, indices: Iterable[int]) -> None:
        if self.pool is None:
            return
        for i in indices:
            if i not in self.pending:
                self.pending[i] = self.pool.submit(self._task, i)

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


__all__ = ["KINDS", "Prefetcher", "resolve_kind"]
