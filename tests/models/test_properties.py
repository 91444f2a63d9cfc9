"""Model properties the reference implementations have: which parameters train under each
freezing setting, and evaluation is deterministic (dropout and layerdrop off)."""

from __future__ import annotations

import torch

from w2v.models import Wav2Vec2ForCTC, load_model_config

SMALL = dict(conv_feature_layers=[[16, 10, 5], [16, 3, 2], [16, 2, 2]], encoder_layers=3, encoder_embed_dim=32,
             encoder_ffn_embed_dim=64, encoder_attention_heads=2, conv_pos=8, conv_pos_groups=4, final_dim=16,
             latent_vars=8, mask_length=3)


def _grads(model, **kw):
    model.zero_grad(set_to_none=True)
    logits, _ = model(torch.randn(2, 4000), torch.tensor([4000, 3000]), **kw)
    logits.float().pow(2).mean().backward()
    return {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


def test_gradients_reach_exactly_the_parameters_that_train():
    torch.manual_seed(0)
    model = Wav2Vec2ForCTC(load_model_config("tiny", **SMALL), vocab_size=7)
    names = {n for n, _ in model.named_parameters()}
    conv = {n for n in names if n.startswith("wav2vec2.feature_extractor.")}
    head = {n for n in names if n.startswith("lm_head.")}
    # masked_spec_embed only receives gradient where frames are masked
    trainable = names - {"wav2vec2.masked_spec_embed"}

    assert _grads(model) == trainable  # everything trains (feature_grad_mult 0.1 scales, not stops)
    assert _grads(model, train_encoder=False) == head  # first updates of fine-tuning: head only
    model.freeze_feature_encoder()
    assert _grads(model) == trainable - conv
    assert all(not p.requires_grad for n, p in model.named_parameters() if n in conv)


def test_eval_is_deterministic_with_dropout_and_layerdrop_configured():
    torch.manual_seed(0)
    cfg = load_model_config("tiny", **SMALL, dropout=0.5, attention_dropout=0.5, activation_dropout=0.5,
                            dropout_input=0.5, layerdrop=0.5)
    model = Wav2Vec2ForCTC(cfg, vocab_size=7, final_dropout=0.5)
    x = torch.randn(2, 4000)
    model.train()
    with torch.no_grad():
        a, _ = model(x)
        b, _ = model(x)
    assert not torch.equal(a, b)  # dropout/layerdrop are active in training
    model.eval()
    with torch.no_grad():
        c, _ = model(x)
        d, _ = model(x)
    assert torch.equal(c, d)
