"""Pre-training and CTC assemblies: logits, masks, gradients, weight transfer."""

import pytest
import torch

from w2v.models import Wav2Vec2ForCTC, Wav2Vec2ForPreTraining, load_model_config

SMALL_CONV = ((16, 10, 5),) + ((16, 3, 2),) * 4 + ((16, 2, 2),) * 2


def small_cfg(**overrides):
    base = dict(
        conv_feature_layers=SMALL_CONV, encoder_layers=2, encoder_embed_dim=32, encoder_ffn_embed_dim=64,
        encoder_attention_heads=4, conv_pos=8, conv_pos_groups=4, final_dim=16, latent_vars=8,
        num_negatives=5, mask_length=3, layerdrop=0.0,
    )
    return load_model_config("base", **{**base, **overrides})


def batch():
    g = torch.Generator().manual_seed(0)
    return torch.randn(3, 8000, generator=g), torch.tensor([8000, 6400, 5000])


def test_pretraining_output_shapes_and_positive_column():
    torch.manual_seed(0)
    model = Wav2Vec2ForPreTraining(small_cfg()).train()
    wav, lengths = batch()
    out = model(wav, lengths, generator=torch.Generator().manual_seed(0))
    n = int(out.mask_indices.sum())
    assert out.logits.shape == (n, 1 + 5)
    assert not (out.mask_indices & (torch.arange(out.mask_indices.shape[1])[None] >= out.lengths[:, None])).any()
    assert torch.isfinite(out.logits[:, 0]).all()
    assert (out.logits[torch.isfinite(out.logits)].abs() <= 1 / 0.1 + 1e-4).all()
    assert out.num_vars == 16 and out.temperature == 2.0
    assert 2 <= out.prob_perplexity.item() <= 16


def test_pretraining_reproducible_from_generator():
    torch.manual_seed(0)
    model = Wav2Vec2ForPreTraining(small_cfg(dropout=0.0, attention_dropout=0.0, dropout_input=0.0,
                                             dropout_features=0.0)).train()
    wav, lengths = batch()
    a = model(wav, lengths, generator=torch.Generator().manual_seed(5))
    b = model(wav, lengths, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a.mask_indices, b.mask_indices)
    torch.testing.assert_close(a.logits, b.logits)


def test_duplicate_negatives_get_minus_inf():
    torch.manual_seed(0)
    model = Wav2Vec2ForPreTraining(small_cfg()).eval()
    wav, _ = batch()
    t = model.wav2vec2.output_lengths(torch.tensor([8000]))[0].item()
    mask = torch.zeros(3, t, dtype=torch.bool)
    mask[:, 2:6] = True
    pos = mask.reshape(-1).nonzero().squeeze(1)
    negatives = pos[None].repeat(5, 1).roll(1, dims=1)
    negatives[0] = pos  # negative 0 is the positive itself
    out = model(wav, mask_indices=mask, negatives_indices=negatives)
    assert torch.isneginf(out.logits[:, 1]).all()
    assert torch.isfinite(out.logits[:, 2:]).all()


@pytest.mark.parametrize("mult", [0.0, 0.1, 1.0])
def test_feature_grad_mult(mult):
    torch.manual_seed(0)
    model = Wav2Vec2ForPreTraining(small_cfg(feature_grad_mult=mult))
    wav, lengths = batch()
    out = model(wav, lengths, generator=torch.Generator().manual_seed(0))
    (out.logits[:, 0].sum() + out.features_pen).backward()
    conv_grads = [p.grad for p in model.wav2vec2.feature_extractor.parameters()]
    if mult == 0.0:
        assert all(g is None for g in conv_grads)
    else:
        assert all(g is not None and g.abs().sum() > 0 for g in conv_grads)
    assert model.wav2vec2.encoder.layers[0].attention.q_proj.weight.grad.abs().sum() > 0
    assert model.quantizer.weight_proj.weight.grad.abs().sum() > 0


def test_grad_mult_scales_conv_gradient():
    wav, lengths = batch()
    grads = []
    for mult in (1.0, 0.1):
        torch.manual_seed(0)
        model = Wav2Vec2ForPreTraining(small_cfg(feature_grad_mult=mult, dropout=0.0, attention_dropout=0.0,
                                                 dropout_input=0.0, dropout_features=0.0)).eval()
        mask = torch.zeros(3, 24, dtype=torch.bool)
        mask[:, 3:9] = True
        out = model(wav, lengths, mask_indices=mask, generator=torch.Generator().manual_seed(0))
        out.logits[:, 0].sum().backward()
        grads.append(model.wav2vec2.feature_extractor.conv_layers[0].conv.weight.grad.clone())
    torch.testing.assert_close(grads[1], 0.1 * grads[0], rtol=1e-4, atol=1e-7)


def test_freeze_feature_encoder_stops_grads():
    torch.manual_seed(0)
    model = Wav2Vec2ForCTC(small_cfg(feature_grad_mult=1.0), vocab_size=7)
    model.freeze_feature_encoder()
    wav, lengths = batch()
    logits, _ = model(wav, lengths)
    logits.sum().backward()
    assert all(p.grad is None for p in model.wav2vec2.feature_extractor.parameters())
    assert model.wav2vec2.feature_projection.projection.weight.grad is not None
    assert model.lm_head.weight.grad is not None


def test_ctc_model_loads_pretraining_weights():
    torch.manual_seed(0)
    cfg = small_cfg()
    pre = Wav2Vec2ForPreTraining(cfg)
    torch.manual_seed(1)
    ctc = Wav2Vec2ForCTC(cfg, vocab_size=7, final_dropout=0.1)
    dropped = ctc.load_pretrained(pre.state_dict())
    assert any(k.startswith("quantizer.") for k in dropped) and "project_hid.weight" in dropped
    for k, v in pre.wav2vec2.state_dict().items():
        torch.testing.assert_close(ctc.wav2vec2.state_dict()[k], v)
    wav, lengths = batch()
    pre.eval(), ctc.eval()
    torch.testing.assert_close(ctc.wav2vec2(wav, lengths).hidden, pre.wav2vec2(wav, lengths).hidden)
    logits, frames = ctc(wav, lengths)
    assert logits.shape == (3, 24, 7) and frames.tolist() == [24, 19, 15]
    incomplete = {k: v for k, v in pre.state_dict().items() if "encoder.layers.1." not in k}
    with pytest.raises(KeyError, match="encoder.layers.1"):
        ctc.load_pretrained(incomplete)


def test_ctc_apply_mask_only_when_asked():
    torch.manual_seed(0)
    model = Wav2Vec2ForCTC(small_cfg(mask_prob=0.5, mask_channel_prob=0.3, mask_channel_length=4), 7).eval()
    wav, lengths = batch()
    a, _ = model(wav, lengths)
    b, _ = model(wav, lengths)
    c, _ = model(wav, lengths, apply_mask=True, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


def test_quantize_targets_off():
    torch.manual_seed(0)
    model = Wav2Vec2ForPreTraining(small_cfg(quantize_targets=False))
    wav, lengths = batch()
    out = model(wav, lengths, generator=torch.Generator().manual_seed(0))
    assert model.quantizer is None and out.prob_perplexity is None and out.num_vars == 0
    assert out.logits.shape[1] == 6
