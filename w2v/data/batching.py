"""Deterministic, resumable batching of lhotse cuts for training.

Why not lhotse's ``DynamicBucketingSampler``: restoring its state replays every batch of the
epoch up to the saved position (reading nothing, but iterating the whole sampler), and its
order depends on worker timing. Here an epoch's batch list is a pure function of
``(seed, epoch)``, so the data position is two integers and resume costs nothing.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch


@dataclass(frozen=True)
class BatchPlan:
    """Duration-bucketed batches under a total-duration budget.

    Args:
        durations: seconds per item (already capped at the crop length when cropping).
        max_duration: budget per batch in seconds, counting padding (items x longest).
        seed: base seed; epoch ``e`` uses ``seed * 1000003 + e``.
        num_buckets: items are sorted by duration into this many buckets, shuffled within.
        max_batch_size: optional cap on items per batch.
    """

    durations: Sequence[float]
    max_duration: float
    seed: int = 0
    num_buckets: int = 8
    max_batch_size: int | None = None

    def epoch(self, epoch: int) -> list[list[int]]:
        """The batches (lists of item indices) of one epoch, in the order they are used."""
        rng = random.Random(self.seed * 1000003 + epoch)
        order = sorted(range(len(self.durations)), key=lambda i: (self.durations[i], rng.random()))
        n_buckets = max(1, min(self.num_buckets, len(order)))
        buckets = [order[b * len(order) // n_buckets:(b + 1) * len(order) // n_buckets] for b in range(n_buckets)]
        batches: list[list[int]] = []
        for bucket in buckets:
            rng.shuffle(bucket)
            batch: list[int] = []
            longest = 0.0
            for i in bucket:
                d = self.durations[i]
                full = batch and (max(longest, d) * (len(batch) + 1) > self.max_duration
                                  or (self.max_batch_size and len(batch) >= self.max_batch_size))
                if full:
                    batches.append(batch)
                    batch, longest = [], 0.0
                batch.append(i)
                longest = max(longest, d)
            if batch:
                batches.append(batch)
        rng.shuffle(batches)
        return batches


def collate_audio(waves: list[np.ndarray], normalize: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad 1-D float waveforms into ``(batch, samples)`` and return their lengths.

    With ``normalize`` each waveform is scaled to zero mean and unit variance over its own
    samples (what released LV60/XLS-R models expect; padding stays exactly zero).
    """
    lengths = torch.tensor([len(w) for w in waves], dtype=torch.long)
    out = torch.zeros(len(waves), int(lengths.max()))
    for i, w in enumerate(waves):
        x = torch.from_numpy(np.asarray(w, dtype=np.float32))
        if normalize and len(x) > 1:
            x = (x - x.mean()) / torch.sqrt(x.var(unbiased=False) + 1e-7)
        out[i, : len(x)] = x
    return out, lengths


def collate_targets(targets: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad label sequences with 0 into ``(batch, max_len)`` and return their lengths."""
    lengths = torch.tensor([len(t) for t in targets], dtype=torch.long)
    out = torch.zeros(len(targets), max(1, int(lengths.max())), dtype=torch.long)
    for i, t in enumerate(targets):
        out[i, : len(t)] = torch.tensor(t, dtype=torch.long)
    return out, lengths
