"""ScheduledCollection: Python's garbage collection at fixed updates, the same on every rank."""

from __future__ import annotations

import gc
import weakref

import pytest

from w2v.train.collect import ScheduledCollection


class Node:
    def __init__(self):
        self.me = self  # a reference cycle: only the collector frees it


def cyclic_garbage() -> weakref.ref:
    return weakref.ref(Node())


def test_collects_only_at_its_updates_and_freezes_what_the_first_updates_left():
    assert gc.isenabled()
    with ScheduledCollection(3) as collector:
        assert not gc.isenabled()  # no automatic collection at a moment of its own
        garbage = cyclic_garbage()
        for _ in range(ScheduledCollection.FREEZE_AFTER - 1):
            collector.after_update()
        assert garbage() is not None and gc.get_freeze_count() == 0
        collector.after_update()  # update 2: a full collection, then the survivors frozen
        assert garbage() is None and gc.get_freeze_count() > 0 and collector.collections == 1
        garbage = cyclic_garbage()
        collector.after_update()  # update 3: the young generations
        assert garbage() is None and collector.collections == 2
        garbage = cyclic_garbage()
        for _ in range(2):  # updates 4, 5: nothing
            collector.after_update()
        assert garbage() is not None and collector.collections == 2
        collector.after_update()  # update 6
        assert garbage() is None and collector.collections == 3
        garbage = cyclic_garbage()
        collector.full()  # e.g. after a checkpoint
        assert garbage() is None and collector.collections == 4
    assert gc.isenabled() and gc.get_freeze_count() == 0  # as it was


def test_interval_zero_leaves_python_collecting_by_itself():
    with ScheduledCollection(0) as collector:
        assert gc.isenabled()
        for _ in range(10):
            collector.after_update()
        collector.full()
        assert collector.collections == 0 and gc.get_freeze_count() == 0
    assert gc.isenabled()


def test_a_disabled_collector_stays_disabled_after_the_schedule():
    gc.disable()
    try:
        with ScheduledCollection(5):
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


@pytest.mark.parametrize("bad", [-1, 2.5, True, "50"])
def test_refuses_an_interval_that_is_not_a_count(bad):
    with pytest.raises(ValueError, match="gc_interval is a number of updates"):
        ScheduledCollection(bad)
