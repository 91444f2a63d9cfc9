"""Learning-rate schedules of the wav2vec 2.0 recipes, as pure functions of the update number.

Being stateless (the rate is recomputed from ``num_updates``) makes resume exact: nothing
about the schedule needs to be stored beyond the update counter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def updates(x: float, total_updates: int) -> int:
    """A length given as a fraction of the run (``x < 1``) or as a count of updates."""
    return int(round(x * total_updates)) if x < 1 else int(x)


@dataclass(frozen=True)
class Schedule:
    """Args:
    kind: ``polynomial`` (pre-training: linear warm-up, then polynomial decay to ``end_lr``)
        or ``tri_stage`` (fine-tuning: warm-up, hold, exponential decay to
        ``final_lr_scale * lr``), as fairseq's ``polynomial_decay`` and ``tri_stage``.
    lr: peak learning rate.
    total_updates: length of the run.
    warmup: warm-up length, a fraction of ``total_updates`` if < 1 else a count.
    hold: tri-stage hold length (fraction or count).
    end_lr: polynomial: the rate reached at ``total_updates``.
    power: polynomial: the decay power (1 = linear).
    init_lr_scale / final_lr_scale: tri-stage start and end rates relative to ``lr``.
    """

    kind: str
    lr: float
    total_updates: int
    warmup: float = 0.08
    hold: float = 0.4
    end_lr: float = 0.0
    power: float = 1.0
    init_lr_scale: float = 0.01
    final_lr_scale: float = 0.05

    def __post_init__(self):
        if self.kind not in ("polynomial", "tri_stage"):
            raise ValueError(f"unknown schedule kind {self.kind!r}; expected polynomial or tri_stage")

    @property
    def warmup_updates(self) -> int:
        return self._count(self.warmup)

    def _count(self, x: float) -> int:
        return updates(x, self.total_updates)

    def __call__(self, num_updates: int) -> float:
        warmup = self._count(self.warmup)
        if self.kind == "polynomial":
            if warmup > 0 and num_updates < warmup:
                return self.lr * (num_updates + 1) / warmup
            if num_updates >= self.total_updates:
                return self.end_lr
            remaining = 1 - (num_updates - warmup) / max(1, self.total_updates - warmup)
            return (self.lr - self.end_lr) * remaining**self.power + self.end_lr
        hold = self._count(self.hold)
        decay = max(1, self.total_updates - warmup - hold)
        if num_updates < warmup:
            start = self.init_lr_scale * self.lr
            return start + (self.lr - start) * num_updates / max(1, warmup)
        if num_updates < warmup + hold:
            return self.lr
        t = min(num_updates - warmup - hold, decay)
        return self.lr * math.exp(math.log(self.final_lr_scale) * t / decay)
