"""Deterministic, resumable batching of lhotse cuts for training.

Why not lhotse's ``DynamicBucketingSampler``: restoring its state replays every batch of the
epoch up to the saved position (reading nothing, but iterating the whole sampler), and its
order depends on worker timing. Here an epoch's batch list is a pure function of
``(seed, epoch)``, so the data position is two integers and resume costs nothing.

Multilingual pre-training (XLSR, Conneau et al. 2020, section 3.1; XLS-R, Babu et al. 2021):
when items carry two or more languages, every batch holds one language, drawn from
p_l ∝ (n_l / N)^α with n_l the hours of language l; α < 1 up-samples low-resource languages
(α = 0.5 in both papers). The draw is still a pure function of ``(seed, epoch)``.
"""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch


def language_probabilities(amounts: Mapping[str, float], alpha: float) -> dict[str, float]:
    """XLSR's language sampling distribution p_l ∝ (n_l / N)^α.

    Args:
        amounts: language -> amount of data n_l (hours, seconds: any unit).
        alpha: 1 samples in proportion to the data, 0 uniformly over languages.

    Returns:
        language -> probability, summing to 1.
    """
    if not amounts:
        raise ValueError("language_probabilities: no languages")
    if alpha < 0:
        raise ValueError(f"language sampling alpha must be >= 0, got {alpha}")
    bad = sorted(lang for lang, n in amounts.items() if n <= 0)
    if bad:
        raise ValueError(f"language(s) {bad} have no data")
    total = sum(amounts.values())
    weights = {lang: (n / total) ** alpha for lang, n in amounts.items()}
    norm = sum(weights.values())
    return {lang: w / norm for lang, w in weights.items()}


@dataclass(frozen=True)
class BatchPlan:
    """Duration-bucketed batches under a total-duration budget.

    Args:
        durations: seconds per item (already capped at the crop length when cropping).
        max_duration: budget per batch in seconds, counting padding (items x longest).
        seed: base seed; epoch ``e`` uses ``seed * 1000003 + e``.
        num_buckets: items are sorted by duration into this many buckets, shuffled within.
        max_batch_size: optional cap on items per batch.
        languages: language per item, or None. With two or more distinct languages every
            batch holds one language, and the language of each batch is drawn from
            :func:`language_probabilities` of the languages' hours (``durations``); an epoch
            has as many batches as the monolingual plan, so up-sampled languages repeat
            (reshuffled) and down-sampled ones are not all seen.
        alpha: the exponent α of the language distribution.
    """

    durations: Sequence[float]
    max_duration: float
    seed: int = 0
    num_buckets: int = 8
    max_batch_size: int | None = None
    languages: Sequence[str] | None = None
    alpha: float = 0.5

    def __post_init__(self) -> None:
        if self.languages is not None:
            if len(self.languages) != len(self.durations):
                raise ValueError(f"{len(self.languages)} languages for {len(self.durations)} items")
            missing = [i for i, lang in enumerate(self.languages) if not lang]
            if missing and self.multilingual:
                raise ValueError(f"{len(missing)} item(s) have no language (e.g. item {missing[0]}) "
                                 "while others do")

    @property
    def multilingual(self) -> bool:
        return self.languages is not None and len({lang for lang in self.languages if lang}) >= 2

    def language_hours(self) -> dict[str, float]:
        """Hours per language (of the durations the plan batches), in sorted language order."""
        hours: dict[str, float] = {}
        for lang, d in zip(self.languages or [], self.durations):
            hours[lang] = hours.get(lang, 0.0) + d / 3600
        return dict(sorted(hours.items()))

    def language_probabilities(self) -> dict[str, float]:
        return language_probabilities(self.language_hours(), self.alpha)

    def epoch(self, epoch: int) -> list[list[int]]:
        """The batches (lists of item indices) of one epoch, in the order they are used."""
        rng = random.Random(self.seed * 1000003 + epoch)
        if not self.multilingual:
            batches = self._bucketed(list(range(len(self.durations))), rng)
            rng.shuffle(batches)
            return batches
        by_lang: dict[str, list[int]] = {}
        for i, lang in enumerate(self.languages):
            by_lang.setdefault(lang, []).append(i)
        langs = sorted(by_lang)

        def pool(lang: str, rnd: int) -> list[list[int]]:
            # A language's batches for its rnd-th pass in this epoch; str seeds hash with
            # sha512, so they do not depend on PYTHONHASHSEED.
            r = random.Random(f"{self.seed}/{epoch}/{lang}/{rnd}")
            batches = self._bucketed(list(by_lang[lang]), r)
            r.shuffle(batches)
            return batches

        pools = {lang: pool(lang, 0) for lang in langs}
        total = sum(len(b) for b in pools.values())
        probs = self.language_probabilities()
        cum, acc = [], 0.0
        for lang in langs:
            acc += probs[lang]
            cum.append(acc)
        rounds, used = dict.fromkeys(langs, 0), dict.fromkeys(langs, 0)
        out: list[list[int]] = []
        for _ in range(total):
            lang = langs[min(bisect.bisect_right(cum, rng.random() * cum[-1]), len(langs) - 1)]
            if used[lang] == len(pools[lang]):
                rounds[lang] += 1
                pools[lang], used[lang] = pool(lang, rounds[lang]), 0
            out.append(pools[lang][used[lang]])
            used[lang] += 1
        return out

    def _bucketed(self, items: list[int], rng: random.Random) -> list[list[int]]:
        """Sort ``items`` by duration into buckets, shuffle within, cut into batches."""
        order = sorted(items, key=lambda i: (self.durations[i], rng.random()))
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
        return batches


def collate_audio(waves: list[np.ndarray], normalize: bool,
                  device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad 1-D float waveforms into ``(batch, samples)`` on ``device`` (default: the CPU) and
    return them with their lengths (always on the CPU).

    With ``normalize`` each waveform is scaled to zero mean and unit variance over its own
    samples (what released LV60/XLS-R models expect; padding stays exactly zero). Padding and
    copying happen on the CPU, normalisation where the batch ends up: on a GPU box the
    per-utterance statistics of a 125 s batch cost the training loop's main thread ~25 ms a
    step on the CPU (the device took 23 ms for the whole BASE step), against microseconds there.
    """
    lengths = torch.tensor([len(w) for w in waves], dtype=torch.long)
    longest = int(lengths.max())
    if bool((lengths == longest).all()):  # crops of one length: no padding to zero first
        out = torch.from_numpy(np.stack([np.asarray(w, dtype=np.float32) for w in waves]))
    else:
        out = torch.zeros(len(waves), longest)
        for i, w in enumerate(waves):
            out[i, : len(w)] = torch.from_numpy(np.asarray(w, dtype=np.float32))
    if device is not None:
        out = to_device(out, device)
    return (normalize_waveforms(out, lengths) if normalize else out), lengths


def pad_to_multiple(wav: torch.Tensor, multiple: int) -> torch.Tensor:
    """``(batch, samples)`` zero-padded at the end to a whole number of ``multiple`` samples
    (`components.padding_hop`)."""
    extra = -wav.shape[1] % multiple
    return torch.nn.functional.pad(wav, (0, extra)) if extra else wav


def to_device(t: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """``t`` (on the CPU) on ``device``. To a GPU through pinned memory, queued on the stream:
    a copy from pageable memory makes the host wait until the GPU has finished all its queued
    work (PyTorch synchronises the stream after it), so a training loop's next batch could not
    be sent while the last step still ran."""
    device = torch.device(device)
    if device.type != "cuda" or t.device.type != "cpu":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


def normalize_waveforms(wav: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit variance per row over its first ``lengths[i]`` samples; the padding
    after them stays zero, and rows of fewer than 2 samples are left as they are."""
    n = to_device(lengths, wav.device)
    valid = torch.arange(wav.shape[1], device=wav.device) < n[:, None]
    count = n.clamp(min=1).unsqueeze(1).to(wav.dtype)
    mean = wav.masked_fill(~valid, 0).sum(1, keepdim=True) / count
    centred = (wav - mean).masked_fill(~valid, 0)
    var = centred.square().sum(1, keepdim=True) / count
    out = centred / torch.sqrt(var + 1e-7)
    return torch.where((n > 1)[:, None], out, wav)


def collate_targets(targets: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad label sequences with 0 into ``(batch, max_len)`` and return their lengths."""
    lengths = torch.tensor([len(t) for t in targets], dtype=torch.long)
    out = torch.zeros(len(targets), max(1, int(lengths.max())), dtype=torch.long)
    for i, t in enumerate(targets):
        out[i, : len(t)] = torch.tensor(t, dtype=torch.long)
    return out, lengths
