"""Python's garbage collector on a schedule, the same update on every rank.

Left to itself, Python collects whenever enough objects have been allocated since the last
collection. A compiled model keeps a large heap of long-lived objects (graphs, guards, generated
code), so an automatic full collection pauses a step for tens of milliseconds, at a moment of
its own choosing on each rank. One GPU loses the pause; several processes in lockstep lose
every rank's pauses, since each all-reduce waits for the rank that paused. Measured on 2 H100s
(BENCHMARKS.md, twentieth session), 24 BASE pre-training steps back to back under DDP took
42.8 ms a step with automatic collection, 41.0 ms collecting every 50 steps and 40.7 ms with no
collection at all, in one job.

:class:`ScheduledCollection` switches the automatic collector off, moves what exists after the
first updates (the compiled graphs) out of the collector's sight (`gc.freeze`), and collects the
young generations every ``interval`` updates: at the same update on every rank, so their pauses
coincide, and short, since only objects made since the last one are scanned. Training also asks
for a full collection where all ranks wait anyway (after writing a checkpoint), so cyclic garbage
that outlives the young generations does not pile up. ``interval`` 0 leaves Python's own
collection in place (torchtitan's ``gc_freq`` is the same idea).
"""

from __future__ import annotations

import gc


def check_interval(interval) -> None:
    """ValueError unless ``interval`` is a number of updates, 0 or more."""
    if isinstance(interval, bool) or not isinstance(interval, int) or interval < 0:
        raise ValueError(f"gc_interval is a number of updates, 0 (Python's automatic garbage collection) or more, "
                         f"got {interval!r}")


class ScheduledCollection:
    """Between :meth:`start` and :meth:`stop` (or as a context manager), Python's garbage
    collection runs at :meth:`after_update` every ``interval`` updates (0: Python's automatic
    collection, nothing changed)."""

    FREEZE_AFTER = 2  # updates: the first ones compile; what they leave lives as long as the run

    def __init__(self, interval: int):
        check_interval(interval)
        self.interval = interval
        self.updates = 0
        self.collections = 0
        self._was_enabled = True

    def start(self) -> "ScheduledCollection":
        if self.interval:
            self._was_enabled = gc.isenabled()
            gc.disable()
        return self

    def stop(self) -> None:
        """Python's collection as it was before :meth:`start`."""
        if self.interval:
            gc.unfreeze()
            if self._was_enabled:
                gc.enable()

    def __enter__(self) -> "ScheduledCollection":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def after_update(self) -> None:
        """Call once per update on every rank (the same number of times on each)."""
        if not self.interval:
            return
        self.updates += 1
        if self.updates == self.FREEZE_AFTER:
            gc.collect()
            gc.freeze()
            self.collections += 1
        elif self.updates % self.interval == 0:
            gc.collect(1)
            self.collections += 1

    def full(self) -> None:
        """A full collection, where every rank waits anyway (e.g. after a checkpoint)."""
        if self.interval:
            gc.collect()
            self.collections += 1
