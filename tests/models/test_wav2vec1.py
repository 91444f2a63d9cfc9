"""wav2vec 1.0: encoder/context shapes, causality, the future-prediction scores and loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from w2v.models import load_model_config
from w2v.models.families import build_ctc_model, config_from_dict
from w2v.models.wav2vec1 import FuturePredictionOutput, FuturePredictor, Wav2Vec1Config, Wav2Vec1ForPreTraining
from w2v.train.objectives import future_prediction_loss

TINY = dict(conv_feature_layers=[[16, 10, 5], [16, 8, 4], [16, 4, 2], [16, 4, 2], [16, 4, 2]],
            conv_aggregator_layers=[[16, 3, 1]] * 3, prediction_steps=3, num_negatives=4,
            downstream_layers=1, downstream_dim=8)


def tiny(**kw) -> Wav2Vec1Config:
    return Wav2Vec1Config(**{**TINY, **kw})


def test_presets_are_the_papers():
    base, large = load_model_config("wav2vec1"), load_model_config("wav2vec1_large")
    assert [k for _, k, _ in base.conv_feature_layers] == [10, 8, 4, 4, 4]
    assert [s for _, _, s in base.conv_feature_layers] == [5, 4, 2, 2, 2]
    assert {d for d, _, _ in base.conv_feature_layers} == {512}
    assert [k for _, k, _ in base.conv_aggregator_layers] == [3] * 9
    assert base.prediction_steps == 12 and base.num_negatives == 10
    assert [k for _, k, _ in large.conv_aggregator_layers] == list(range(2, 14))
    assert large.encoder_linear_layers == 2 and large.skip_connections_agg
    assert config_from_dict(large.to_dict()) == large


def test_frames_are_10ms_with_30ms_receptive_field():
    m = Wav2Vec1ForPreTraining(load_model_config("wav2vec1"))
    enc = m.wav2vec.feature_extractor.conv
    assert enc.stride == 160 and enc.receptive_field == 465
    z, c, lens = m.wav2vec(torch.randn(2, 16000), torch.tensor([16000, 8000]))
    assert z.shape == (2, 98, 512) and c.shape == (2, 98, 512)
    assert lens.tolist() == [98, 48]


def test_context_network_is_causal():
    torch.manual_seed(0)
    m = Wav2Vec1ForPreTraining(tiny(skip_connections_agg=True, conv_aggregator_layers=[[16, 2, 1], [16, 3, 1]])).eval()
    z = torch.randn(1, 20, 16)
    c = m.wav2vec.feature_aggregator(z)
    z2 = z.clone()
    z2[:, 12:] = torch.randn(1, 8, 16)  # change the future only
    c2 = m.wav2vec.feature_aggregator(z2)
    # single-group norm sees the whole utterance, so compare without it: the raw conv outputs
    first = m.wav2vec.feature_aggregator.blocks[0][:2]
    a, b = first(z.transpose(1, 2)), first(z2.transpose(1, 2))
    assert torch.equal(a[..., :12], b[..., :12]) and not torch.equal(a[..., 12:], b[..., 12:])
    assert c.shape == c2.shape == (1, 20, 16)


def test_future_prediction_scores_a_known_positive():
    """Identity step maps: h_k(c_i) = c_i. With c = z one-hot, the true future z_{i+k} scores
    exactly c_i . z_{i+k}, each given distractor its own dot product."""
    pred = FuturePredictor(context_dim=4, target_dim=4, steps=2, num_negatives=1)
    with torch.no_grad():
        pred.project_to_steps.weight.copy_(torch.cat([torch.eye(4), 2 * torch.eye(4)]))
        pred.project_to_steps.bias.zero_()
    z = torch.eye(4).unsqueeze(0)  # frame i is e_i
    c = torch.ones(1, 4, 4)
    # every frame's distractor is frame 0 (e_0)
    out = pred(c, z, torch.tensor([4]), negatives_indices=torch.zeros(1, 4, dtype=torch.long))
    # k=1: pairs i=0,1,2; k=2: pairs i=0,1
    assert out.steps.tolist() == [1, 1, 1, 2, 2]
    assert out.logits[:, 0].tolist() == [1.0, 1.0, 1.0, 2.0, 2.0]  # h_k(1) . e_{i+k} = k
    assert out.logits[:, 1].tolist() == [1.0, 1.0, 1.0, 2.0, 2.0]  # . e_0 = k as well


def test_padded_frames_are_never_targets():
    pred = FuturePredictor(4, 4, steps=3, num_negatives=2)
    out = pred(torch.randn(2, 6, 4), torch.randn(2, 6, 4), torch.tensor([6, 3]), torch.Generator().manual_seed(0))
    # utterance 0: 5 + 4 + 3 pairs; utterance 1 (3 frames): 2 + 1 + 0
    assert out.logits.shape == (15, 3)


def test_future_prediction_loss_by_hand():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 0.0, 0.0]])
    loss, stats = future_prediction_loss(FuturePredictionOutput(logits, torch.tensor([1, 1]), torch.tensor([3])))

    def ls(x):
        return math.log(1 / (1 + math.exp(-x)))

    expected = -((ls(2.0) + ls(1.0) + ls(-0.5)) + (ls(0.0) + 2 * ls(0.0))) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert stats["accuracy"] == 0.5  # row 2 is a tie: not counted as right


def test_infonce_loss_by_hand_and_its_chance_level():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 0.0, 0.0]])
    loss, _ = future_prediction_loss(FuturePredictionOutput(logits, torch.tensor([1, 1]), torch.tensor([3]), True))
    first = -(2.0 - math.log(math.exp(2.0) + math.exp(-1.0) + math.exp(0.5)))
    assert loss.item() == pytest.approx((first + math.log(3)) / 2, rel=1e-6)
    # the binary loss's trivial optimum (one constant score) is no optimum here: it sits at chance
    const, _ = future_prediction_loss(FuturePredictionOutput(torch.full((4, 11), -2.3), torch.ones(4), torch.tensor([5]),
                                                             True))
    assert const.item() == pytest.approx(math.log(11), rel=1e-6)


def test_infonce_setting_reaches_the_loss_through_the_model():
    cfg = tiny(infonce=True)
    torch.manual_seed(0)
    out = Wav2Vec1ForPreTraining(cfg)(torch.randn(2, 4000), None, torch.Generator().manual_seed(1))
    assert out.infonce
    loss, _ = future_prediction_loss(out)
    target = torch.zeros(out.logits.shape[0], dtype=torch.long)
    assert loss.item() == pytest.approx(torch.nn.functional.cross_entropy(out.logits, target).item(), rel=1e-6)


def test_gradients_reach_encoder_context_and_step_maps():
    torch.manual_seed(0)
    m = Wav2Vec1ForPreTraining(tiny(encoder_linear_layers=2))
    loss, _ = future_prediction_loss(m(torch.randn(2, 4000), torch.tensor([4000, 3000]), torch.Generator().manual_seed(1)))
    loss.backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_one_step_reduces_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    m = Wav2Vec1ForPreTraining(tiny())
    wav, lens = torch.randn(2, 4000), torch.tensor([4000, 3500])
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)

    def loss_now():
        return future_prediction_loss(m(wav, lens, torch.Generator().manual_seed(7)))[0]

    before = loss_now()
    before.backward()
    opt.step()
    with torch.no_grad():
        assert loss_now().item() < before.item()


def test_frozen_feature_ctc_trains_only_the_downstream_model():
    torch.manual_seed(0)
    cfg = tiny()
    pre = Wav2Vec1ForPreTraining(cfg)
    ctc = build_ctc_model(cfg, 7, pretrained=pre.state_dict()).train()
    assert all(torch.equal(pre.state_dict()[k], v) for k, v in ctc.upstream.state_dict().items())
    assert not ctc.upstream.training
    logits, flens = ctc(torch.randn(2, 4000), torch.tensor([4000, 2000]))
    assert logits.shape == (2, 23, 7) and flens.tolist() == [23, 10]
    F.log_softmax(logits, -1).sum().backward()
    assert all(p.grad is None for p in ctc.upstream.parameters())
    assert ctc.lm_head.weight.grad.abs().sum() > 0 and ctc.lstm.weight_ih_l0.grad.abs().sum() > 0


def test_downstream_output_of_an_utterance_does_not_depend_on_its_batch():
    torch.manual_seed(0)
    ctc = build_ctc_model(tiny(), 5).eval()
    a = torch.randn(3000)
    alone, _ = ctc(a[None], torch.tensor([3000]))
    batch, _ = ctc(torch.stack([a, torch.randn(3000)]), torch.tensor([3000, 3000]))
    assert torch.allclose(alone[0], batch[0], atol=1e-5)


def test_step_maps_learn_a_predictable_future():
    """The context at frame i holds the next latent (c_i = A z_{i+1}, A a fixed random map): the
    step map can learn to invert A, and training on the objective alone takes the accuracy from
    chance to near 1. Latents are non-negative as the model's (log-compressed ReLU outputs), so
    the map's bias can shift every score: zero-mean latents leave BCE no logit offset."""
    torch.manual_seed(0)
    d, t = 16, 24
    z = torch.log1p(torch.randn(2, t, d).abs() * 3)
    c = torch.cat([z[:, 1:], torch.zeros(2, 1, d)], dim=1) @ torch.randn(d, d)
    torch.manual_seed(1)
    pred = FuturePredictor(d, d, steps=1, num_negatives=4)
    opt = torch.optim.Adam(pred.parameters(), lr=0.05)
    lens = torch.tensor([t, t])
    accs = []
    for step in range(130):
        loss, stats = future_prediction_loss(pred(c, z, lens, torch.Generator().manual_seed(step)))
        opt.zero_grad()
        loss.backward()
        opt.step()
        accs.append(stats["accuracy"])
    assert accs[0] < 0.5 and sum(accs[-10:]) / 10 > 0.9
