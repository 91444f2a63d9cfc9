"""HuBERT: config, cosine-similarity logits, the masked prediction loss, MFCC + k-means targets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from w2v.models import load_model_config
from w2v.models.families import build_ctc_model, config_from_dict
from w2v.models.hubert import HubertConfig, HubertForPreTraining, HubertOutput
from w2v.models.kmeans import kmeans_assign, kmeans_fit
from w2v.train.objectives import hubert_loss
from w2v.train.steps import fit_labels
from w2v.train.targets import kmeans_labels, mfcc, read_units, write_units

SMALL = dict(conv_feature_layers=[[16, 10, 5], [16, 3, 2], [16, 3, 2], [16, 3, 2], [16, 3, 2], [16, 2, 2], [16, 2, 2]],
             encoder_layers=2, encoder_embed_dim=16, encoder_ffn_embed_dim=32, encoder_attention_heads=2,
             conv_pos=4, conv_pos_groups=2, final_dim=8, mask_length=2, mask_prob=0.5, kmeans_clusters=[5, 7],
             label_layer=1, layerdrop=0.0, dropout=0.0, attention_dropout=0.0, dropout_input=0.0,
             dropout_features=0.0)


def small(**kw) -> HubertConfig:
    return HubertConfig(**{**SMALL, **kw})


def test_preset_and_round_trip():
    cfg = load_model_config("hubert_base")
    assert cfg.family == "hubert" and cfg.kmeans_clusters == (100, 500) and cfg.label_layer == 6
    assert cfg.mask_prob == 0.8 and cfg.num_classes == 100 and cfg.replace(iteration=2).num_classes == 500
    assert config_from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="iteration"):
        small(iteration=3)
    with pytest.raises(ValueError, match="stride"):
        small(conv_feature_layers=[[16, 10, 5]])


def test_logits_are_cosine_similarity_over_temperature():
    torch.manual_seed(0)
    m = HubertForPreTraining(small()).eval()
    wav = torch.randn(1, 3200)
    mask = torch.zeros(1, 9, dtype=torch.bool)
    mask[0, 2:4] = True
    out = m(wav, mask_indices=mask)
    h = m.wav2vec2(wav, mask_indices=mask).hidden
    expected = F.cosine_similarity(m.final_proj(h).unsqueeze(2), m.label_embs[None, None], dim=-1) / 0.1
    assert out.logits.shape == (1, 9, 5)
    assert torch.allclose(out.logits, expected, atol=1e-5)


def _out(logits, mask):
    return HubertOutput(logits=logits, mask_indices=mask, padding_mask=torch.zeros_like(mask),
                        features_pen=torch.tensor(0.5), lengths=torch.tensor([mask.shape[1]]))


def test_masked_prediction_loss_counts_masked_frames_and_picks_the_label():
    logits = torch.tensor([[[5.0, 0.0, 0.0], [0.0, 5.0, 0.0], [0.0, 0.0, 5.0]]])
    mask = torch.tensor([[True, True, False]])
    right = torch.tensor([[0, 1, 0]])  # unmasked frame 2 is wrong, but only masked frames count
    wrong = torch.tensor([[2, 0, 2]])
    l_right, s = hubert_loss(_out(logits, mask), right, feature_penalty_weight=0.0)
    l_wrong, _ = hubert_loss(_out(logits, mask), wrong, feature_penalty_weight=0.0)
    assert s["acc_masked"] == 1.0 and s["acc_unmasked"] == 0.0
    assert l_right.item() == pytest.approx(F.cross_entropy(logits[0, :2], right[0, :2]).item())
    assert l_wrong.item() > l_right.item() + 4
    # unmasked weight and feature penalty add their terms; label -1 is ignored
    l_all, _ = hubert_loss(_out(logits, mask), right, nomask_weight=0.5, feature_penalty_weight=10.0)
    assert l_all.item() == pytest.approx(l_right.item() + 0.5 * F.cross_entropy(logits[0, 2:], right[0, 2:]).item() + 5)
    l_ign, s2 = hubert_loss(_out(logits, mask), torch.tensor([[0, -1, 0]]), feature_penalty_weight=0.0)
    assert s2["num_masked"] == 1.0 and l_ign.item() == pytest.approx(F.cross_entropy(logits[0, :1], right[0, :1]).item())


def test_fit_labels_pads_and_cuts():
    lab = torch.tensor([[1, 2, 3]])
    assert fit_labels(lab, 2).tolist() == [[1, 2]] and fit_labels(lab, 5).tolist() == [[1, 2, 3, -1, -1]]


def test_gradients_and_one_step_reduce_the_loss():
    torch.manual_seed(0)
    m = HubertForPreTraining(small())
    wav, lens = torch.randn(2, 6400), torch.tensor([6400, 4800])
    labels = torch.randint(0, 5, (2, 19))
    opt = torch.optim.Adam(m.parameters(), lr=2e-3)

    def loss_now():
        return hubert_loss(m(wav, lens, torch.Generator().manual_seed(3)), labels)[0]

    before = loss_now()
    before.backward()
    for name, p in m.named_parameters():
        if name != "wav2vec2.masked_spec_embed" or p.grad is not None:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    opt.step()
    with torch.no_grad():
        assert loss_now().item() < before.item()


def test_fine_tuning_is_wav2vec2_ctc_from_the_hubert_encoder():
    torch.manual_seed(0)
    cfg = small()
    pre = HubertForPreTraining(cfg)
    ctc = build_ctc_model(cfg, 6, pretrained=pre.state_dict())
    assert all(torch.equal(v, pre.state_dict()["wav2vec2." + k]) for k, v in ctc.wav2vec2.state_dict().items())
    logits, flens = ctc(torch.randn(1, 6400), torch.tensor([6400]))
    assert logits.shape == (1, 19, 6)


def test_mfcc_frames_align_with_the_conv_encoder():
    cfg = load_model_config("hubert_tiny")
    m = HubertForPreTraining(cfg)
    for n in (400, 3199, 16000, 16123):
        feats = mfcc(np.random.default_rng(0).standard_normal(n).astype(np.float32))
        assert feats.shape == (int(m.wav2vec2.output_lengths(torch.tensor([n]))), 39)
    assert mfcc(np.zeros(399, dtype=np.float32)).shape == (0, 39)


def test_mfcc_separates_tones():
    t = np.arange(16000) / 16000
    low, high = np.sin(2 * np.pi * 200 * t), np.sin(2 * np.pi * 3000 * t)
    x = np.concatenate([low, high]).astype(np.float32)
    labels = kmeans_labels([mfcc(x)], 2, seed=0)[0]
    first, second = labels[:45], labels[55:]
    assert len(set(first)) == 1 and len(set(second)) == 1 and first[0] != second[0]


def test_kmeans_recovers_known_clusters_and_is_seeded():
    rng = np.random.default_rng(0)
    centers = np.array([[0, 0], [10, 0], [0, 10], [10, 10]], dtype=np.float32)
    truth = rng.integers(0, 4, 2000)
    x = torch.from_numpy(centers[truth] + 0.5 * rng.standard_normal((2000, 2)).astype(np.float32))
    c = kmeans_fit(x, 4, seed=1, iters=20, batch_size=500)
    assert torch.allclose(torch.sort(c.sum(1)).values, torch.tensor([0.0, 10.0, 10.0, 20.0]), atol=0.3)
    pred = kmeans_assign(x, c)
    # each true cluster maps to exactly one found cluster
    pairs = {(int(a), int(b)) for a, b in zip(truth, pred)}
    assert len(pairs) == 4
    assert torch.equal(c, kmeans_fit(x, 4, seed=1, iters=20, batch_size=500))
    with pytest.raises(ValueError, match="cannot make"):
        kmeans_fit(x[:3], 4)


def test_unit_files_round_trip(tmp_path):
    units = {"a-1": [1, 2, 3], "b": []}
    for name in ("u.jsonl", "u.txt"):
        write_units(tmp_path / name, units)
        assert read_units(tmp_path / name) == units
    (tmp_path / "bad.jsonl").write_text('{"id": "x", "units": [1]}\nnot json\n')
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        read_units(tmp_path / "bad.jsonl")
