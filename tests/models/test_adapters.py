"""MMS adapters at tiny size: shapes, a zeroed adapter is the identity, only adapters and
head get gradients once the base is frozen, one step lowers the loss, swapping languages."""

from __future__ import annotations

import pytest
import torch

from w2v.models import Wav2Vec2ForCTC
from w2v.models.adapters import adapter_weights, freeze_base, is_adapter_key, load_adapter
from w2v.models.config import Wav2Vec2Config
from w2v.train.losses import ctc_loss

NO_DROPOUT = {"dropout": 0.0, "attention_dropout": 0.0, "activation_dropout": 0.0, "dropout_input": 0.0,
              "dropout_features": 0.0, "layerdrop": 0.0}


def cfg(adapter_dim=4, layer_norm_first=True, **kw):
    return Wav2Vec2Config(conv_feature_layers=((32, 10, 5), (32, 3, 2), (32, 2, 2)), encoder_layers=2,
                          encoder_embed_dim=24, encoder_ffn_embed_dim=48, encoder_attention_heads=2, conv_pos=8,
                          conv_pos_groups=4, final_dim=8, latent_vars=8, mask_prob=0.0, adapter_dim=adapter_dim,
                          layer_norm_first=layer_norm_first, extractor_mode="layer_norm" if layer_norm_first
                          else "default", **NO_DROPOUT, **kw)


def model(vocab=7, seed=0, **kw):
    torch.manual_seed(seed)
    return Wav2Vec2ForCTC(cfg(**kw), vocab).eval()


def test_shapes_and_parameter_count():
    m = model()
    x = torch.randn(3, 1600)
    logits, lengths = m(x, torch.tensor([1600, 1200, 900]))
    assert logits.shape == (3, 79, 7) and lengths.tolist() == [79, 59, 44]
    ad = {k: v for k, v in m.state_dict().items() if is_adapter_key(k)}
    d, b = 24, 4
    per_block = 2 * d + d * b + b + b * d + d  # norm, linear_1, linear_2
    assert sum(v.numel() for v in ad.values()) == 2 * per_block + (d * 7 + 7)
    assert {k.split(".adapter_layer.")[1] for k in ad if ".adapter_layer." in k} == {
        "norm.weight", "norm.bias", "linear_1.weight", "linear_1.bias", "linear_2.weight", "linear_2.bias"}


@pytest.mark.parametrize("pre_ln", [True, False])
def test_zeroed_adapter_is_the_identity(pre_ln):
    with_ad, without = model(layer_norm_first=pre_ln), model(adapter_dim=0, layer_norm_first=pre_ln)
    without.load_state_dict({k: v for k, v in with_ad.state_dict().items() if ".adapter_layer." not in k})
    x = torch.randn(2, 1600)
    with torch.no_grad():
        assert not torch.allclose(with_ad(x)[0], without(x)[0], atol=1e-4)
        for layer in with_ad.wav2vec2.encoder.layers:
            layer.adapter_layer.linear_2.weight.zero_()
            layer.adapter_layer.linear_2.bias.zero_()
        assert torch.equal(with_ad(x)[0], without(x)[0])


def _batch():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 1600, generator=g)
    tgt = torch.tensor([[1, 2, 3, 4], [5, 6, 1, 0]])
    return x, tgt, torch.tensor([4, 3])


def test_only_adapters_and_head_get_gradients_and_a_step_lowers_the_loss():
    m = model().train()
    trainable = freeze_base(m)
    assert trainable and all(is_adapter_key(n) for n in trainable)
    assert "lm_head.weight" in trainable and any(".adapter_layer.linear_1" in n for n in trainable)
    base_before = {k: v.clone() for k, v in m.state_dict().items() if not is_adapter_key(k)}
    x, tgt, tlens = _batch()
    logits, flens = m(x)
    loss = ctc_loss(logits, flens, tgt, tlens)
    loss.backward()
    for name, p in m.named_parameters():
        if is_adapter_key(name):
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=1e-2)
    opt.step()
    with torch.no_grad():
        after = ctc_loss(*m(x), tgt, tlens)
    assert after < loss.detach()
    for k, v in m.state_dict().items():
        if not is_adapter_key(k):
            assert torch.equal(v, base_before[k]), k


def test_load_adapter_swaps_language_and_vocabulary():
    a, b = model(vocab=7, seed=0), model(vocab=11, seed=1)
    b.load_state_dict({**b.state_dict(), **{k: v for k, v in a.state_dict().items() if not is_adapter_key(k)}})
    x = torch.randn(1, 1600)
    with torch.no_grad():
        ref_b = b(x)[0]
        load_adapter(a, adapter_weights(b.state_dict()))
        assert a.lm_head.out_features == 11
        assert torch.equal(a(x)[0], ref_b)
    with pytest.raises(ValueError, match="missing"):
        load_adapter(a, {"lm_head.weight": torch.zeros(3, 24), "lm_head.bias": torch.zeros(3)})


def test_freeze_base_needs_adapters():
    with pytest.raises(ValueError, match="no adapter layers"):
        freeze_base(model(adapter_dim=0))
