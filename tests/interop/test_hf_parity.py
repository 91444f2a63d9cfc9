"""Numerical parity with Hugging Face transformers' wav2vec 2.0 at toy sizes (fp32, random weights).

Our state dict is loaded into HF's model with `strict=True`, both run in eval mode on the same
input, and every hidden state, the CTC logits and the pre-training logits/losses are compared.
Both variants: BASE-style (group-norm conv encoder, post-LN) and LV60/XLS-R-style (layer-norm
conv encoder with bias, pre-LN "stable layer norm"), each unpadded and padded. For the padded
batch, padding samples are zeroed in the input (we zero them ourselves; HF leaves that to its
feature extractor) and HF gets the matching sample-level `attention_mask`.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from w2v.models import Wav2Vec2ForCTC, Wav2Vec2ForPreTraining, Wav2Vec2Model
from w2v.models.config import Wav2Vec2Config

transformers = pytest.importorskip("transformers")
from transformers.models.wav2vec2.modeling_wav2vec2 import (
    _compute_mask_indices,
    _sample_negative_indices,
)

from w2v.interop.hf_config import (
    LEGACY_WEIGHT_NORM_KEYS,
    rename_legacy_keys,
    to_hf_config,
)

ATOL = 1e-4
NO_DROPOUT = {"dropout": 0.0, "attention_dropout": 0.0, "activation_dropout": 0.0, "dropout_input": 0.0,
              "dropout_features": 0.0, "layerdrop": 0.0}
VARIANTS = {
    "base_style": {"extractor_mode": "default", "layer_norm_first": False, "conv_bias": False},
    "lv60_style": {"extractor_mode": "layer_norm", "layer_norm_first": True, "conv_bias": True},
}
SAMPLES = 1600  # -> 79 frames with the conv stack below


def small_cfg(variant: str) -> Wav2Vec2Config:
    return Wav2Vec2Config(
        conv_feature_layers=((32, 10, 5), (32, 3, 2), (32, 2, 2)),
        encoder_layers=2, encoder_embed_dim=48, encoder_ffn_embed_dim=96, encoder_attention_heads=4,
        conv_pos=16, conv_pos_groups=4, final_dim=16, latent_vars=8, latent_groups=2,
        num_negatives=5, mask_prob=0.3, mask_length=4, **NO_DROPOUT, **VARIANTS[variant],
    )


def randomize_(model: torch.nn.Module, seed: int = 1) -> None:
    """Perturb every parameter (layer norms included), so swapped or unused weights show."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))


def batch(padded: bool):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, SAMPLES, generator=g)
    lengths = torch.tensor([SAMPLES, 1100 if padded else SAMPLES])
    keep = torch.arange(SAMPLES)[None, :] < lengths[:, None]
    x = x * keep  # zero padding, as our model does internally
    attention_mask = keep.long() if padded else None
    return x, (lengths if padded else None), attention_mask


def hf_from(ours: torch.nn.Module, hf_cls, cfg, **kw):
    hc = to_hf_config(cfg, **kw)
    hc._attn_implementation = "eager"
    theirs = hf_cls(hc)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    return theirs.eval()


def valid_frames(model: Wav2Vec2Model, lengths, frames: int) -> torch.Tensor:
    if lengths is None:
        return torch.ones(2, frames, dtype=torch.bool)
    return torch.arange(frames)[None, :] < model.output_lengths(lengths)[:, None]


CASES = [(v, p) for v in VARIANTS for p in (False, True)]
IDS = [f"{v}-{'padded' if p else 'unpadded'}" for v, p in CASES]


@pytest.mark.parametrize("variant,padded", CASES, ids=IDS)
def test_hidden_states_match_hf(variant, padded):
    cfg = small_cfg(variant)
    ours = Wav2Vec2Model(cfg)
    randomize_(ours)
    ours.eval()
    theirs = hf_from(ours, transformers.Wav2Vec2Model, cfg)
    x, lengths, attention_mask = batch(padded)
    with torch.no_grad():
        out = ours(x, lengths, output_hidden_states=True)
        ref = theirs(x, attention_mask=attention_mask, output_hidden_states=True)
    assert len(out.layer_results) == len(ref.hidden_states) == cfg.encoder_layers + 1
    ref_hidden = list(ref.hidden_states)
    if cfg.layer_norm_first:
        # transformers 5.x collects hidden states with hooks on the blocks, so for pre-LN its
        # last entry is the last block's output *before* the encoder's final layer norm (v4
        # appended it after, as we do). Apply that norm to compare like for like.
        ref_hidden[-1] = theirs.encoder.layer_norm(ref_hidden[-1])
    for ours_h, ref_h in zip(out.layer_results, ref_hidden):
        torch.testing.assert_close(ours_h, ref_h, atol=ATOL, rtol=0)
    torch.testing.assert_close(out.hidden, ref.last_hidden_state, atol=ATOL, rtol=0)
    torch.testing.assert_close(out.features, ref.extract_features, atol=ATOL, rtol=0)


@pytest.mark.parametrize("variant,padded", CASES, ids=IDS)
def test_ctc_logits_match_hf(variant, padded):
    cfg = small_cfg(variant)
    ours = Wav2Vec2ForCTC(cfg, vocab_size=11)
    randomize_(ours)
    ours.eval()
    theirs = hf_from(ours, transformers.Wav2Vec2ForCTC, cfg, vocab_size=11)
    x, lengths, attention_mask = batch(padded)
    with torch.no_grad():
        logits, frame_lengths = ours(x, lengths)
        ref = theirs(x, attention_mask=attention_mask).logits
    torch.testing.assert_close(logits, ref, atol=ATOL, rtol=0)
    if lengths is not None:
        hf_lengths = theirs._get_feat_extract_output_lengths(attention_mask.sum(-1))
        assert torch.equal(frame_lengths, hf_lengths)


@pytest.mark.parametrize("variant,padded", CASES, ids=IDS)
def test_pretraining_matches_hf(variant, padded):
    cfg = small_cfg(variant)
    torch.manual_seed(0)
    ours = Wav2Vec2ForPreTraining(cfg)
    randomize_(ours)
    ours.eval()
    theirs = hf_from(ours, transformers.Wav2Vec2ForPreTraining, cfg)
    x, lengths, attention_mask = batch(padded)
    frames = int(theirs._get_feat_extract_output_lengths(torch.tensor(SAMPLES)))
    valid = valid_frames(ours.wav2vec2, lengths, frames)
    np.random.seed(3)  # HF's samplers use numpy's global state
    mask = _compute_mask_indices((2, frames), cfg.mask_prob, cfg.mask_length, min_masks=2,
                                 attention_mask=valid.long())
    mask = torch.from_numpy(mask) & valid
    neg = torch.from_numpy(_sample_negative_indices((2, frames), cfg.num_negatives, mask_time_indices=mask.numpy()))
    # HF: (B, F, K) indices into the flattened B*F grid; ours: (K, num_masked) for masked frames, row-major.
    neg_ours = neg[mask].T.contiguous()
    n = int(mask.sum())
    assert neg_ours.shape == (cfg.num_negatives, n)

    with torch.no_grad():
        out = ours(x, lengths, mask_indices=mask, negatives_indices=neg_ours)
        ref = theirs(x, attention_mask=attention_mask, mask_time_indices=mask, sampled_negative_indices=neg)
    assert torch.equal(out.mask_indices, mask)

    # Logits: rebuild HF's from its projected states exactly as its forward does.
    q = ref.projected_quantized_states  # (B, F, D)
    negs = q.reshape(-1, q.shape[-1])[neg.reshape(-1)].view(2, frames, cfg.num_negatives, -1).permute(2, 0, 1, 3)
    hf_logits = theirs.compute_contrastive_logits(q[None], negs, ref.projected_states, cfg.logit_temp)
    neg_is_pos = (q == negs).all(-1)
    hf_logits[1:][neg_is_pos] = float("-inf")
    hf_logits = hf_logits.permute(1, 2, 0)[mask]  # (num_masked, 1 + K), row-major like ours
    torch.testing.assert_close(out.logits, hf_logits, atol=ATOL, rtol=0)

    # HF's contrastive_loss is the cross-entropy *summed* over masked frames.
    ce_sum = F.cross_entropy(out.logits, torch.zeros(n, dtype=torch.long), reduction="sum")
    torch.testing.assert_close(ce_sum, ref.contrastive_loss, atol=ATOL * n, rtol=1e-5)
    # In eval HF's perplexity is the hard (argmax) one over masked frames: our code_perplexity.
    torch.testing.assert_close(out.code_perplexity, ref.codevector_perplexity, atol=ATOL, rtol=0)
    # HF's diversity_loss is (GV - ppl) / GV times the number of masked frames.
    gv = out.num_vars
    diversity = (gv - out.code_perplexity) / gv
    torch.testing.assert_close(diversity * n, ref.diversity_loss, atol=ATOL, rtol=1e-5)
    # HF loss = contrastive + 0.1 * diversity (both sums); per masked frame it is our mean CE + 0.1 * diversity.
    torch.testing.assert_close((ce_sum / n + 0.1 * diversity), ref.loss / n, atol=ATOL, rtol=1e-5)

    # In train mode (dropouts 0, fixed masks) HF's perplexity is the soft one, independent of the
    # Gumbel noise: our prob_perplexity.
    ours.train()
    theirs.train()
    with torch.no_grad():
        out_t = ours(x, lengths, mask_indices=mask, negatives_indices=neg_ours, generator=torch.Generator().manual_seed(0))
        ref_t = theirs(x, attention_mask=attention_mask, mask_time_indices=mask)
    torch.testing.assert_close(out_t.prob_perplexity, ref_t.codevector_perplexity, atol=ATOL, rtol=0)


def test_legacy_weight_norm_keys_load_strict():
    cfg = small_cfg("lv60_style")
    ours = Wav2Vec2ForPreTraining(cfg)
    sd = ours.state_dict()
    legacy = {}
    for key, value in sd.items():
        for old, new in LEGACY_WEIGHT_NORM_KEYS.items():
            if key.endswith(new):
                key = key[: -len(new)] + old
        legacy[key] = value
    assert "wav2vec2.encoder.pos_conv_embed.conv.weight_g" in legacy
    assert "wav2vec2.encoder.pos_conv_embed.conv.weight_v" in legacy
    renamed = rename_legacy_keys(legacy)
    assert list(renamed) == list(sd)
    hc = to_hf_config(cfg)
    transformers.Wav2Vec2ForPreTraining(hc).load_state_dict(renamed, strict=True)
    Wav2Vec2ForPreTraining(cfg).load_state_dict(renamed, strict=True)
