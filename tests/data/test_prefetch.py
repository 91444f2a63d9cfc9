"""Background decoding returns what the loader returns, in any order, and surfaces its errors."""

import os
import threading

import numpy as np
import pytest

from w2v.data.prefetch import Prefetcher


def test_prefetched_items_equal_direct_loads_and_run_in_threads():
    seen = set()

    def load(i):
        seen.add(threading.current_thread().name)
        return np.full(3, float(i))

    with Prefetcher(load, workers=3) as p:
        p.schedule([4, 1, 2, 4])
        assert [float(p.get(i)[0]) for i in (1, 2, 4, 7)] == [1.0, 2.0, 4.0, 7.0]  # 7: never scheduled
        assert not p.pending
    assert any(name.startswith("w2v-audio") for name in seen)


def test_errors_surface_in_the_caller_and_zero_workers_load_inline():
    def load(i):
        if i == 2:
            raise RuntimeError("cannot load audio of cut 2")
        return np.zeros(1)

    with Prefetcher(load, workers=2) as p:
        p.schedule([1, 2])
        p.get(1)
        with pytest.raises(RuntimeError, match="cut 2"):
            p.get(2)
    inline = Prefetcher(load, workers=0)
    inline.schedule([1])
    assert not inline.pending and inline.get(1).shape == (1,)


def _square(i):
    if i == 5:
        raise ValueError("cannot load audio of cut 5 (u5.flac): bad header")
    return np.full(2, float(i * i))


def test_process_workers_return_the_same_items_and_their_errors():
    parent = os.getpid()
    with Prefetcher(lambda i: np.array([os.getpid()]) if i == 0 else _square(i), workers=2, kind="processes") as p:
        assert p.kind == "processes"
        p.schedule([0])
        assert int(p.get(0)[0]) != parent  # decoded in another process
        p.schedule([3, 1, 5])
        assert [float(p.get(i)[0]) for i in (1, 3, 4)] == [1.0, 9.0, 16.0]
        with pytest.raises(ValueError, match="cut 5 .*bad header"):
            p.get(5)


def test_loader_kinds_resolve_and_bad_names_are_refused():
    from w2v.data.prefetch import resolve_kind

    assert resolve_kind("auto", "cuda") == "processes" and resolve_kind("auto", "cpu") == "threads"
    assert resolve_kind("processes", "cpu") == "processes" and resolve_kind("threads", "cuda") == "threads"
    with pytest.raises(ValueError, match="loader must be one of"):
        resolve_kind("fork", "cpu")
