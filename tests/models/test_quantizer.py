"""Gumbel product quantizer: hard codes, perplexities, temperature schedule."""

import math

import pytest
import torch

from w2v.models import GumbelVectorQuantizer


def make(groups=2, entries=8, dim=16):
    torch.manual_seed(0)
    return GumbelVectorQuantizer(in_dim=12, num_groups=groups, num_vars=entries, codevector_dim=dim)


def test_train_output_is_a_hard_codevector_per_group_with_gradient():
    q = make().train()
    x = torch.randn(2, 7, 12, requires_grad=True)
    out = q(x, generator=torch.Generator().manual_seed(0))
    assert out.quantized.shape == (2, 7, 16)
    # each group's output equals exactly one codebook row (hard one-hot)
    codebook = q.codevectors.view(2, 8, 8)
    per_group = out.quantized.view(14, 2, 8)
    for grp in range(2):
        dist = (per_group[:, grp, None, :] - codebook[grp][None]).abs().sum(-1)
        assert (dist.min(-1).values < 1e-6).all()
    out.quantized.sum().backward()  # straight-through reaches the input projection
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_gumbel_noise_from_generator_and_eval_is_argmax():
    q = make().train()
    x = torch.randn(3, 5, 12)
    a = q(x, generator=torch.Generator().manual_seed(1)).quantized
    b = q(x, generator=torch.Generator().manual_seed(1)).quantized
    torch.testing.assert_close(a, b)
    q.eval()
    e1, e2 = q(x).quantized, q(x).quantized
    torch.testing.assert_close(e1, e2)
    idx = q.weight_proj(x).view(15, 2, 8).argmax(-1)
    expected = torch.cat([q.codevectors.view(2, 8, 8)[g][idx[:, g]] for g in range(2)], -1).view(3, 5, 16)
    torch.testing.assert_close(e1, expected)


def test_perplexities_bounds_and_uniform():
    q = make(groups=2, entries=8)
    out = q(torch.randn(4, 50, 12))
    for p in (out.code_perplexity, out.prob_perplexity):
        assert 2 - 1e-4 <= p.item() <= 16 + 1e-4  # summed over G groups: [G, G*V]
    assert out.num_vars == 16
    # zero projection -> uniform softmax -> prob perplexity = G*V
    with torch.no_grad():
        q.weight_proj.weight.zero_()
        q.weight_proj.bias.zero_()
    out = q(torch.randn(2, 10, 12))
    assert out.prob_perplexity.item() == pytest.approx(16.0, rel=1e-5)
    # a single code used everywhere -> code perplexity = G (1 per group)
    assert out.code_perplexity.item() == pytest.approx(2.0, rel=1e-5)


def test_perplexity_counts_only_masked_frames():
    q = make()
    x = torch.randn(2, 10, 12)
    mask = torch.zeros(2, 10, dtype=torch.bool)
    mask[0, :4] = True
    a = q(x, mask=mask)
    b = q(x[:1, :4])
    torch.testing.assert_close(a.prob_perplexity, b.prob_perplexity)
    torch.testing.assert_close(a.code_perplexity, b.code_perplexity)


def test_temperature_schedule():
    q = GumbelVectorQuantizer(4, 2, 4, 8, temp=(2.0, 0.5, 0.999995))
    assert q.temperature == 2.0
    q.set_num_updates(1000)
    assert q.temperature == pytest.approx(2.0 * 0.999995**1000)
    q.set_num_updates(10**7)
    assert q.temperature == 0.5
    # 2 -> 0.5 reached after log(0.25)/log(0.999995) ~ 277k updates
    n = math.ceil(math.log(0.25) / math.log(0.999995))
    q.set_num_updates(n - 1)
    assert q.temperature > 0.5
    q.set_num_updates(n)
    assert q.temperature == 0.5


def test_codebook_negatives_add_distractors_from_the_codebook():
    import torch

    from w2v.models import Wav2Vec2ForPreTraining, load_model_config

    cfg = load_model_config("tiny", encoder_layers=1, num_negatives=3, codebook_negatives=2)
    model = Wav2Vec2ForPreTraining(cfg)
    out = model(torch.randn(2, 16000), generator=torch.Generator().manual_seed(0))
    assert out.logits.shape[1] == 1 + 3 + 2
    g = torch.Generator().manual_seed(1)
    codes = model.quantizer.sample_codevectors(5, g)
    assert codes.shape == (5, cfg.codevector_dim)
    # every half of a sampled codeword is an entry of its own group's codebook
    per_group = model.quantizer.codevectors[0].view(cfg.latent_groups, cfg.latent_vars, -1)
    half = cfg.codevector_dim // cfg.latent_groups
    for grp in range(cfg.latent_groups):
        part = codes[:, grp * half:(grp + 1) * half]
        assert all((per_group[grp] == row).all(-1).any() for row in part)
