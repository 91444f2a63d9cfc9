"""Background decoding returns what the loader returns, in any order, and surfaces its errors."""

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
