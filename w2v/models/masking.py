"""Span masking and negative sampling (Baevski et al. 2020, sections 3.1 and 3.2).

Masking: per utterance, `mask_prob * length / mask_length` span starts (randomly rounded)
are drawn without replacement and each masks `mask_length` consecutive frames; spans may
overlap, so the masked fraction is below `mask_prob` (about 49% for 0.65 / 10).

Negatives: distractors for a masked frame are other masked frames of the same utterance,
drawn uniformly, never the frame itself (fairseq `sample_negatives`).

All randomness comes from the generator passed in (a `torch.Generator` or a
`numpy.random.Generator`), never from a global RNG, so a resumed run draws the same masks.

Two implementations of the mask: a per-utterance loop on the CPU (what a CPU generator
draws, unchanged since the first release, so CPU runs and their resumes stay bit-identical)
and a vectorised one that runs wherever its generator lives, with no host synchronisation
(`device_generator` turns the training loop's CPU generator into a seeded CUDA one).
Negative sampling is one vectorised algorithm on the generator's device, and a variant with
static shapes (a row for every frame, no `nonzero`) for compiled graphs (`static_negative_picks`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

Generator = torch.Generator | np.random.Generator | None


def device_generator(generator: Generator, device: torch.device | str) -> Generator:
    """A generator that draws on `device`, derived deterministically from `generator`.

    On the CPU, or when `generator` already lives on `device` (or is None), it is returned
    as is. Otherwise one 62-bit seed is drawn from it and seeds a new generator on `device`:
    the same step generator gives the same masks, negatives and Gumbel noise on every run,
    without drawing millions of numbers on the host and copying them over.
    """
    device = torch.device(device)
    if generator is None or device.type == "cpu":
        return generator
    if isinstance(generator, torch.Generator) and generator.device.type == device.type:
        return generator
    if isinstance(generator, np.random.Generator):
        seed = int(generator.integers(0, 2**62))
    else:
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return torch.Generator(device=device).manual_seed(seed)


def _rng_device(generator: Generator) -> torch.device:
    """Where `generator` draws: a torch generator's device, else (numpy, None) the CPU."""
    if isinstance(generator, torch.Generator):
        return generator.device
    return torch.device("cpu")


def _uniform(shape: tuple[int, ...], generator: Generator) -> Tensor:
    """float64 uniforms in [0, 1) on the generator's device."""
    if isinstance(generator, np.random.Generator):
        return torch.from_numpy(generator.random(shape))
    return torch.rand(shape, generator=generator, dtype=torch.float64, device=_rng_device(generator))


def _choice(n: int, k: int, generator: Generator) -> Tensor:
    """k distinct integers from range(n)."""
    if isinstance(generator, np.random.Generator):
        return torch.from_numpy(generator.choice(n, k, replace=False)).long()
    return torch.randperm(n, generator=generator)[:k]


def compute_mask_indices(
    shape: tuple[int, int],
    padding_mask: Tensor | None,
    mask_prob: float,
    mask_length: int,
    min_masks: int = 0,
    generator: Generator = None,
    device: torch.device | str | None = None,
    vectorized: bool | None = None,
) -> Tensor:
    """Random span mask over (batch, frames).

    Per utterance of `n` unpadded frames: `num = int(mask_prob * n / mask_length + u)`,
    `u ~ U[0, 1)`, at least `min_masks`; span starts are drawn without replacement from
    the `n - mask_length + 1` positions where a whole span fits (Hugging Face's range), so a
    span never reaches padding. Unlike fairseq's `require_same_masks`, utterances keep
    their own number of masked frames: negatives are sampled per utterance, so equal
    counts are not needed.

    Args:
        shape: (batch, frames).
        padding_mask: (batch, frames) bool, True at padding, or None.
        mask_prob: probability of a frame being a span start, times `mask_length`.
        mask_length: span length in frames (shortened to the utterance if longer).
        min_masks: minimum number of spans per (non-empty) utterance.
        generator: torch or numpy generator; None uses torch's default generator.
        device: device of the returned mask (default: padding_mask's device, else CPU).
        vectorized: draw all utterances at once on the generator's device (same
            distribution, different stream); default: only when the generator is not on
            the CPU.

    Returns:
        (batch, frames) bool, True at masked frames; never True at padding.
    """
    batch, frames = shape
    if device is None:
        device = padding_mask.device if padding_mask is not None else "cpu"
    if vectorized is None:
        vectorized = _rng_device(generator).type != "cpu"
    if vectorized:
        mask = _mask_vectorized(shape, padding_mask, mask_prob, mask_length, min_masks, generator)
        return mask.to(device)
    mask = torch.zeros(batch, frames, dtype=torch.bool)
    if padding_mask is None:
        sizes = [frames] * batch
    else:
        sizes = (~padding_mask).sum(1).tolist()
    if mask_prob <= 0 or mask_length <= 0:
        return mask.to(device)
    # One uniform per utterance, drawn up front so the stream does not depend on lengths.
    rounding = _uniform((batch,), generator).tolist()
    for i, size in enumerate(sizes):
        if size == 0:
            continue
        num = max(min_masks, int(mask_prob * size / mask_length + rounding[i]))
        span = min(mask_length, size)
        num_starts = size - span + 1
        num = min(num, num_starts)
        if num == 0:
            continue
        starts = _choice(num_starts, num, generator)
        idx = (starts[:, None] + torch.arange(span)[None, :]).reshape(-1)
        if padding_mask is not None:
            # Valid frames need not be a prefix in principle; map onto them in order.
            valid = (~padding_mask[i]).nonzero().squeeze(1).cpu()
            idx = valid[idx]
        mask[i, idx] = True
    return mask.to(device)


def _mask_vectorized(
    shape: tuple[int, int], padding_mask: Tensor | None, mask_prob: float, mask_length: int, min_masks: int,
    generator: Generator,
) -> Tensor:
    """`compute_mask_indices` for all utterances at once, on the generator's device, with
    no host synchronisation: the `num` span starts of an utterance are its `num` smallest
    of iid uniform keys over the valid start positions (a uniform subset without
    replacement); a frame is masked when a start lies within `span` frames before it."""
    batch, frames = shape
    where = _rng_device(generator)
    valid = (
        torch.ones(batch, frames, dtype=torch.bool, device=where) if padding_mask is None else ~padding_mask.to(where)
    )
    if mask_prob <= 0 or mask_length <= 0 or frames == 0:
        return torch.zeros(batch, frames, dtype=torch.bool, device=where)
    sizes = valid.sum(1)
    rounding = _uniform((batch,), generator)
    num = (mask_prob * sizes / mask_length + rounding).long().clamp(min=min_masks)
    span = sizes.clamp(max=mask_length)
    num_starts = sizes - span + 1
    num = torch.where(sizes > 0, torch.minimum(num, num_starts), 0)
    pos = torch.arange(frames, device=where)
    keys = _uniform((batch, frames), generator).to(where)
    keys = keys.masked_fill(pos[None] >= num_starts[:, None], 2.0)  # never a start
    order = keys.argsort(1)
    starts = torch.zeros(batch, frames, dtype=torch.long, device=where)
    starts.scatter_(1, order, (pos[None] < num[:, None]).long())
    # Masked in the compacted (valid-frames-only) index space, then mapped onto the frames.
    covered = starts.cumsum(1)
    before = pos[None] - span[:, None]
    covered = covered - torch.where(before >= 0, covered.gather(1, before.clamp(min=0)), 0)
    compact_index = (valid.long().cumsum(1) - 1).clamp(min=0)
    return valid & (covered.gather(1, compact_index) > 0)


def negative_positions(
    selected: Tensor, num_negatives: int, generator: Generator = None, cross_sample_negatives: int = 0
) -> tuple[Tensor, Tensor]:
    """Indices of the distractors of every selected frame, drawn on the generator's device.

    Args:
        selected: (batch, frames) bool, the positives (masked, or all unpadded frames).
        num_negatives, cross_sample_negatives, generator: as in `sample_negatives`.

    Returns:
        The positives' indices (N,) into the flattened (batch * frames) grid, utterance-major,
        and the negatives (K + cross, N) as positions in that list of positives. Finding the
        positives (`nonzero`) is this function's only host synchronisation.
    """
    b, t = selected.shape
    where = _rng_device(generator)
    selected = selected.to(where)
    flat = selected.reshape(-1).nonzero().squeeze(1)  # (N,) positives, utterance-major
    n_total = flat.numel()
    counts = selected.sum(1)
    offsets = counts.cumsum(0) - counts
    utt = torch.div(flat, t, rounding_mode="floor")
    own_offset = offsets[utt]
    own_count = counts[utt]
    position = torch.arange(n_total, device=where) - own_offset

    picks = []
    if num_negatives > 0:
        r = (_uniform((num_negatives, n_total), generator).to(where) * (own_count - 1).clamp(min=0)).long()
        r = r + (r >= position).long()  # skip the positive itself
        r = torch.where(own_count > 1, r, position)  # nothing else to draw from
        picks.append(own_offset + r)
    if cross_sample_negatives > 0:
        r = (_uniform((cross_sample_negatives, n_total), generator).to(where) * max(n_total - 1, 0)).long()
        r = r + (r >= torch.arange(n_total, device=where)).long()
        r = r if n_total > 1 else torch.zeros_like(r)
        picks.append(r)
    if not picks:
        return flat, torch.empty(0, n_total, dtype=torch.long, device=where)
    return flat, torch.cat(picks)


def negative_uniforms(num_negatives: int, shape: tuple[int, int], generator: Generator = None,
                      device: torch.device | str | None = None) -> Tensor:
    """(K, batch, frames) float64 uniforms on `device`: the randomness of `static_negative_picks`,
    drawn outside the (compiled) graph that uses it."""
    u = _uniform((num_negatives, *shape), generator)
    return u if device is None else u.to(device)


def static_negative_picks(selected: Tensor, uniforms: Tensor) -> Tensor:
    """`negative_positions` with static shapes: a row of negatives for every frame, none of
    them found by `nonzero`, so a compiled graph needs no host synchronisation.

    The distribution of a selected frame's row is that of `negative_positions` (uniform with
    replacement over the other selected frames of its utterance, the frame itself when it is the
    only one); rows of unselected frames are drawn the same way and mean nothing.

    Args:
        selected: (batch, frames) bool, the positives.
        uniforms: (K, batch, frames) in [0, 1) (`negative_uniforms`).

    Returns:
        (K, batch, frames) long: the frame (time index within the same utterance) of each
        negative.
    """
    b, t = selected.shape
    sel = selected.long()
    counts = sel.sum(1, keepdim=True)  # (B, 1)
    rank = sel.cumsum(1) - 1  # a selected frame's place among its utterance's selected frames
    # The selected frames' times in order, then the others: a permutation, built by scatter.
    place = torch.where(selected, rank, counts + (1 - sel).cumsum(1) - 1)
    order = torch.empty_like(place).scatter_(1, place, torch.arange(t, device=selected.device).expand(b, t))
    r = (uniforms * (counts - 1).clamp(min=0)).long()  # (K, B, T) among the others
    r = r + (r >= rank).long()  # skip the frame itself
    r = torch.where(counts > 1, r, rank.clamp(min=0))  # nothing else to draw from
    return order.gather(1, r.permute(1, 0, 2).reshape(b, -1)).view(b, -1, t).permute(1, 0, 2)


def sample_negatives(
    targets: Tensor,
    num_negatives: int,
    padding_mask: Tensor | None = None,
    mask_indices: Tensor | None = None,
    generator: Generator = None,
    cross_sample_negatives: int = 0,
) -> tuple[Tensor, Tensor]:
    """Distractors for every masked (positive) frame.

    For the positive at frame t of utterance b, `num_negatives` frames are drawn uniformly
    with replacement from the other masked frames of utterance b (or its unpadded frames
    when `mask_indices` is None), never t itself; `cross_sample_negatives` more are drawn
    from the masked frames of the whole batch, again never t. An utterance with a single
    masked frame can only offer the positive itself; the model then sets those logits to
    -inf, as fairseq does for any negative equal to the positive.

    Args:
        targets: (batch, frames, dim) candidate vectors (quantized, projected).
        num_negatives: K, distractors from the same utterance.
        padding_mask: (batch, frames) bool, True at padding.
        mask_indices: (batch, frames) bool, True at positives; None = all unpadded frames.
        generator: torch or numpy generator; None uses torch's default generator.
        cross_sample_negatives: distractors from anywhere in the batch.

    Returns:
        negatives (K + cross, N, dim) with N = number of positives, in the order of
        `targets[mask_indices]`, and their indices (K + cross, N) into
        `targets.reshape(batch * frames, dim)`.
    """
    b, t, d = targets.shape
    device = targets.device
    if mask_indices is not None:
        selected = mask_indices
    elif padding_mask is not None:
        selected = ~padding_mask
    else:
        selected = torch.ones(b, t, dtype=torch.bool, device=device)
    flat, picks = negative_positions(selected, num_negatives, generator, cross_sample_negatives)
    neg_idx = flat[picks].to(device)
    negatives = targets.reshape(b * t, d)[neg_idx]
    return negatives, neg_idx


__all__ = [
    "compute_mask_indices", "device_generator", "negative_positions", "negative_uniforms", "sample_negatives",
    "static_negative_picks",
]
