"""vq-wav2vec: the online k-means quantizer, both quantizers in the model, BERT over the units."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from w2v.models import load_model_config
from w2v.models.families import build_ctc_model, build_pretraining_model
from w2v.models.kmeans import KmeansVectorQuantizer
from w2v.models.vq_wav2vec import MaskedTokenOutput, VqWav2VecBert, VqWav2VecConfig, unit_tokens
from w2v.train.objectives import masked_token_loss, vq_wav2vec_loss

TINY = dict(conv_feature_layers=[[16, 10, 5], [16, 8, 4], [16, 4, 2], [16, 4, 2], [16, 4, 2]],
            conv_aggregator_layers=[[16, 3, 1]] * 2, prediction_steps=3, num_negatives=4, vq_vars=8,
            vq_temp=[2.0, 0.5, 0.9], bert_layers=1, bert_embed_dim=16, bert_ffn_dim=32, bert_heads=2,
            bert_conv_pos=4, bert_conv_pos_groups=2, bert_mask_prob=0.2, bert_mask_length=2,
            downstream_layers=1, downstream_dim=8)


def tiny(**kw) -> VqWav2VecConfig:
    return VqWav2VecConfig(**{**TINY, **kw})


def test_presets():
    g, k = load_model_config("vq_wav2vec_gumbel"), load_model_config("vq_wav2vec_kmeans")
    assert (g.vq_type, k.vq_type) == ("gumbel", "kmeans")
    assert g.vq_groups == k.vq_groups == 2 and g.vq_vars == k.vq_vars == 320
    assert k.vq_gamma == 0.25 and g.prediction_steps == 8
    assert [kk for _, kk, _ in g.conv_feature_layers] == [10, 8, 4, 4, 4]
    with pytest.raises(ValueError, match="vq_type"):
        tiny(vq_type="lloyd")


def _kmeans_with_codebook() -> KmeansVectorQuantizer:
    q = KmeansVectorQuantizer(dim=4, groups=2, num_vars=3, gamma=0.25, project=False)
    with torch.no_grad():  # group 0 codewords (0,0), (1,0), (0,1); group 1 (5,5), (-5,-5), (0,0)
        q.embedding.copy_(torch.tensor([[[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]],
                                        [[5.0, 5.0], [-5.0, -5.0], [0.0, 0.0]]]))
        q.initialized.fill_(True)  # keep these codewords (no start from the data)
    return q


def test_kmeans_quantizer_picks_the_nearest_codeword_per_group():
    q = _kmeans_with_codebook()
    x = torch.tensor([[[0.9, 0.1, 4.0, 6.0], [0.1, 0.8, -0.1, 0.2], [0.0, -0.1, -4.0, -6.0]]])
    out = q(x)
    assert out.codes.tolist() == [[[1, 0], [2, 2], [0, 1]]]
    assert torch.allclose(out.quantized, torch.tensor([[[1.0, 0.0, 5.0, 5.0], [0.0, 1.0, 0.0, 0.0],
                                                        [0.0, 0.0, -5.0, -5.0]]]), atol=1e-6)
    # codebook + gamma * commitment: both are the same squared distance, averaged per element
    mse = F.mse_loss(out.quantized, x).item()
    assert out.kmeans_loss.item() == pytest.approx(1.25 * mse, rel=1e-6)


def test_kmeans_codebook_starts_from_the_first_training_batch():
    """Inputs with a large common component all pick one small random codeword per group; the
    first training batch's frames become the codewords instead, so many are used at once."""
    torch.manual_seed(0)
    x = torch.rand(4, 50, 16) + 1.0
    q = KmeansVectorQuantizer(16, 2, 32)
    assert q.eval()(x).code_perplexity.item() < 6  # a few codewords per group
    out = q.train()(x)
    assert bool(q.initialized) and out.code_perplexity.item() > 40
    before = q.embedding.detach().clone()
    q(x + 1.0)  # only the first batch initialises
    assert torch.equal(q.embedding, before)
    assert "initialized" in q.state_dict()


def test_kmeans_straight_through_and_loss_gradients():
    q = _kmeans_with_codebook()
    x = torch.tensor([[[0.9, 0.1, 4.0, 6.0], [0.1, 0.8, -0.1, 0.2]]], requires_grad=True)
    out = q(x)
    out.quantized.sum().backward(retain_graph=True)
    assert torch.equal(x.grad, torch.ones_like(x))  # straight-through: identity gradient
    assert q.embedding.grad is None  # the codewords get no gradient through the output ...
    x.grad = None
    out.kmeans_loss.backward()
    assert q.embedding.grad is not None and q.embedding.grad.abs().sum() > 0  # ... only via the codebook loss
    # commitment pulls x towards its codeword: codeword (1, 0) - x = (0.1, -0.1), gradient has the other sign
    assert x.grad[0, 0, 0] < 0 and x.grad[0, 0, 1] > 0


@pytest.mark.parametrize("vq_type", ["gumbel", "kmeans"])
def test_quantized_model_shapes_gradients_and_one_step(vq_type):
    torch.manual_seed(0)
    m = build_pretraining_model(tiny(vq_type=vq_type))
    wav, lens = torch.randn(2, 4000), torch.tensor([4000, 3000])
    out = m(wav, lens, torch.Generator().manual_seed(0))
    assert out.codes.shape == (2, 23, 2) and int(out.codes.max()) < 8
    loss, stats = vq_wav2vec_loss(out)
    assert ("kmeans" in stats) == (vq_type == "kmeans")
    loss.backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    opt.step()
    with torch.no_grad():
        after, _ = vq_wav2vec_loss(m(wav, lens, torch.Generator().manual_seed(0)))
    assert after.item() < loss.item()


def test_unit_tokens_index_the_code_tuples():
    codes = torch.tensor([[0, 0], [0, 7], [1, 0], [7, 7]])
    assert unit_tokens(codes, 8).tolist() == [0, 7, 8, 63]


def test_masked_token_loss_picks_the_right_codes():
    logits = torch.full((2, 2, 4), -10.0)
    logits[0, 0, 1] = logits[0, 1, 3] = logits[1, 0, 2] = 10.0
    logits[1, 1, 0] = 10.0
    targets = torch.tensor([[1, 3], [2, 1]])  # the last code is wrong
    loss, stats = masked_token_loss(MaskedTokenOutput(logits, targets, torch.ones(1, 2, dtype=torch.bool),
                                                      torch.tensor([2])))
    assert stats["accuracy"] == 0.5
    expected = F.cross_entropy(logits.reshape(-1, 4), targets.reshape(-1)).item()
    assert loss.item() == pytest.approx(expected) and expected > 4.0


def test_bert_stage_keeps_the_quantizer_frozen_and_learns():
    torch.manual_seed(0)
    cfg = tiny(with_bert=True)
    first = build_pretraining_model(tiny())
    bert = build_pretraining_model(cfg, first.state_dict()).train()
    assert not bert.vq.training
    wav, lens = torch.randn(2, 4000), torch.tensor([4000, 3000])
    codes, _ = bert.vq.units(wav, lens)
    mask = torch.zeros(2, 23, dtype=torch.bool)
    mask[:, 5:9] = True
    out = bert(wav, lens, mask_indices=mask)
    assert torch.equal(out.targets, codes[mask])  # the targets are the quantizer's own codes
    loss, _ = masked_token_loss(out)
    loss.backward()
    assert all(p.grad is None for p in bert.vq.parameters())
    assert bert.embed_tokens.weight.grad.abs().sum() > 0
    opt = torch.optim.Adam([p for p in bert.parameters() if p.requires_grad], lr=3e-3)
    opt.step()
    with torch.no_grad():
        after, _ = masked_token_loss(bert(wav, lens, mask_indices=mask))
    assert after.item() < loss.item()
    feats, flens = bert.extract_features(wav, lens)
    assert feats.shape == (2, 23, 16) and flens.tolist() == [23, 16]


def test_masked_tokens_do_not_leak_their_identity():
    """A masked token's input is the mask embedding: changing its code leaves the input unchanged."""
    torch.manual_seed(0)
    bert = VqWav2VecBert(tiny(with_bert=True))
    codes = torch.randint(0, 8, (1, 6, 2))
    mask = torch.tensor([[False, False, True, True, False, False]])
    x1 = torch.where(mask.unsqueeze(-1), bert.mask_emb, bert.embed(codes))
    codes2 = codes.clone()
    codes2[0, 2:4] = (codes2[0, 2:4] + 1) % 8
    x2 = torch.where(mask.unsqueeze(-1), bert.mask_emb, bert.embed(codes2))
    assert torch.equal(x1, x2) and not torch.equal(bert.embed(codes), bert.embed(codes2))


def test_fine_tuning_uses_bert_features():
    torch.manual_seed(0)
    cfg = tiny(with_bert=True)
    bert = build_pretraining_model(cfg, build_pretraining_model(tiny()).state_dict())
    ctc = build_ctc_model(cfg, 6, pretrained=bert.state_dict())
    logits, flens = ctc(torch.randn(1, 4000), torch.tensor([4000]))
    assert logits.shape == (1, 23, 6) and ctc.norm.normalized_shape == (16,)
