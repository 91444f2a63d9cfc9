"""Span masks and negative sampling."""

import numpy as np
import pytest
import torch

from w2v.models import compute_mask_indices, sample_negatives


def test_masked_fraction_matches_theory():
    # num = 0.065 * L span starts drawn without replacement, each covering 10 frames:
    # P(frame unmasked) ~ (1 - 0.065) ** 10, i.e. about 49% masked.
    g = torch.Generator().manual_seed(0)
    mask = compute_mask_indices((64, 2000), None, 0.65, 10, min_masks=2, generator=g)
    theory = 1 - (1 - 0.65 / 10) ** 10
    assert abs(theory - 0.489) < 1e-3
    assert abs(mask.float().mean().item() - theory) < 0.01


def test_never_masks_padding_and_respects_lengths():
    g = torch.Generator().manual_seed(1)
    lengths = torch.tensor([100, 37, 8, 3, 0])
    pad = torch.arange(100)[None] >= lengths[:, None]
    mask = compute_mask_indices((5, 100), pad, 0.65, 10, min_masks=2, generator=g)
    assert not (mask & pad).any()
    assert mask[0].sum() > 0 and mask[1].sum() > 0
    assert mask[2].sum() == 8  # span shortened to the utterance
    assert mask[4].sum() == 0
    # per-utterance rates: a short utterance gets proportionally many spans
    long = compute_mask_indices((200, 400), None, 0.65, 10, 2, torch.Generator().manual_seed(2)).float().mean()
    short_pad = torch.arange(400)[None].expand(200, 400) >= 200
    short = compute_mask_indices((200, 400), short_pad, 0.65, 10, 2, torch.Generator().manual_seed(3))
    assert abs(short[:, :200].float().mean() - long) < 0.03


@pytest.mark.parametrize("make", [lambda s: torch.Generator().manual_seed(s), np.random.default_rng])
def test_reproducible_from_generator(make):
    a = compute_mask_indices((4, 300), None, 0.65, 10, 2, make(7))
    b = compute_mask_indices((4, 300), None, 0.65, 10, 2, make(7))
    c = compute_mask_indices((4, 300), None, 0.65, 10, 2, make(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_no_global_rng_use():
    targets = torch.randn(2, 30, 3)
    torch.manual_seed(0)
    before = torch.rand(3)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(3)
    mask = compute_mask_indices((2, 30), None, 0.65, 5, 2, g)
    sample_negatives(targets, 4, None, mask, g, cross_sample_negatives=2)
    assert torch.equal(before, torch.rand(3))


def test_negatives_are_same_utterance_masked_frames_never_positive():
    b, t, d = 3, 50, 4
    targets = torch.randn(b, t, d)
    pad = torch.zeros(b, t, dtype=torch.bool)
    pad[2, 30:] = True
    g = torch.Generator().manual_seed(0)
    mask = compute_mask_indices((b, t), pad, 0.65, 5, 2, g)
    negs, idx = sample_negatives(targets, 10, pad, mask, generator=g)
    positives = mask.reshape(-1).nonzero().squeeze(1)
    assert negs.shape == (10, positives.numel(), d)
    assert idx.shape == (10, positives.numel())
    assert not (idx == positives[None]).any()
    assert (idx // t == (positives // t)[None]).all()
    assert mask.reshape(-1)[idx].all()
    torch.testing.assert_close(negs, targets.reshape(-1, d)[idx])
    # roughly uniform over the utterance's other masked frames
    big, big_idx = sample_negatives(targets, 2000, pad, mask, generator=g)
    first = positives[positives // t == 0]
    counts = torch.bincount(big_idx[:, 0], minlength=b * t)[first]
    assert counts[0] == 0 and counts[1:].float().std() / counts[1:].float().mean() < 0.2


def test_negatives_without_mask_use_unpadded_frames_and_cross_sample():
    b, t = 2, 20
    pad = torch.zeros(b, t, dtype=torch.bool)
    pad[1, 12:] = True
    g = torch.Generator().manual_seed(0)
    _, idx = sample_negatives(torch.randn(b, t, 3), 6, pad, None, g, cross_sample_negatives=4)
    positives = (~pad).reshape(-1).nonzero().squeeze(1)
    assert idx.shape == (10, positives.numel())
    assert not pad.reshape(-1)[idx].any()
    assert not (idx == positives[None]).any()
    assert (idx[:6] // t == (positives // t)[None]).all()
