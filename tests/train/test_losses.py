"""Pre-training objective and CTC loss on hand-checkable inputs."""

import math

import pytest
import torch
import torch.nn.functional as F

from w2v.models import PreTrainingOutput
from w2v.train.losses import contrastive_accuracy, ctc_loss, pretraining_loss


def output(logits, prob_ppl=16.0, num_vars=16, features_pen=0.0):
    return PreTrainingOutput(
        logits=logits,
        prob_perplexity=torch.tensor(prob_ppl),
        code_perplexity=torch.tensor(prob_ppl),
        num_vars=num_vars,
        temperature=1.5,
        features_pen=torch.tensor(features_pen),
        mask_indices=torch.ones(1, logits.shape[0], dtype=torch.bool),
        lengths=torch.tensor([logits.shape[0]]),
    )


def test_confident_positive_gives_zero_loss_and_full_accuracy():
    logits = torch.full((6, 11), -10.0)
    logits[:, 0] = 10.0
    loss, stats = pretraining_loss(output(logits))
    assert stats["contrastive"] == pytest.approx(0.0, abs=1e-6)
    assert stats["accuracy"] == 1.0 and stats["num_masked"] == 6
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


def test_uniform_logits_give_log_k_plus_one_and_zero_accuracy():
    k = 10
    loss, stats = pretraining_loss(output(torch.zeros(4, 1 + k)), feature_penalty_weight=0.0)
    assert stats["contrastive"] == pytest.approx(math.log(1 + k), rel=1e-6)
    assert stats["accuracy"] == 0.0  # ties count as wrong


def test_minus_inf_negatives_drop_out():
    logits = torch.tensor([[0.0, float("-inf"), 0.0], [1.0, float("-inf"), float("-inf")]])
    _, stats = pretraining_loss(output(logits))
    assert stats["contrastive"] == pytest.approx(math.log(2) / 2, rel=1e-6)
    assert contrastive_accuracy(logits).item() == 0.5


def test_diversity_and_feature_penalty_terms():
    logits = torch.zeros(2, 3)
    base = math.log(3)
    loss, stats = pretraining_loss(output(logits, prob_ppl=16.0, num_vars=16), feature_penalty_weight=0.0)
    assert stats["diversity"] == 0.0 and loss.item() == pytest.approx(base)
    loss, stats = pretraining_loss(output(logits, prob_ppl=4.0, num_vars=16, features_pen=0.5), 0.1, 10.0)
    assert stats["diversity"] == pytest.approx(0.75)
    assert loss.item() == pytest.approx(base + 0.1 * 0.75 + 10.0 * 0.5, rel=1e-6)
    assert set(stats) == {"loss", "contrastive", "diversity", "feature_pen", "accuracy", "code_ppl",
                          "prob_ppl", "temp", "num_masked"}


def test_ctc_hand_computed():
    # 2 frames, vocab {blank, a}, target "a". Paths: (a,a), (a,-), (-,a).
    p = torch.tensor([[0.6, 0.4], [0.3, 0.7]])  # rows: frames; cols: blank, a
    logits = p.log()[None]
    expected = -math.log(0.4 * 0.7 + 0.4 * 0.3 + 0.6 * 0.7)
    loss = ctc_loss(logits, torch.tensor([2]), torch.tensor([[1]]), torch.tensor([1]))
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_ctc_normalised_per_target_token_and_infinite_zeroed():
    torch.manual_seed(0)
    logits = torch.randn(3, 10, 5, dtype=torch.bfloat16)
    frames = torch.tensor([10, 8, 2])
    targets = torch.tensor([[1, 2, 3, 4], [2, 2, 0, 0], [1, 2, 3, 0]])
    target_lengths = torch.tensor([4, 2, 3])  # the last cannot fit in 2 frames -> inf -> 0
    per_utt = ctc_loss(logits, frames, targets, target_lengths, reduction="none")
    assert per_utt.dtype == torch.float32 and per_utt[2] == 0
    ref = F.ctc_loss(F.log_softmax(logits.float(), -1).transpose(0, 1), targets, frames, target_lengths,
                     reduction="none", zero_infinity=True)
    torch.testing.assert_close(per_utt, ref)
    mean = ctc_loss(logits, frames, targets, target_lengths)
    assert mean.item() == pytest.approx(per_utt.sum().item() / 9, rel=1e-6)


def test_unsynced_stats_are_device_tensors_with_the_same_values():
    logits = torch.randn(7, 11, generator=torch.Generator().manual_seed(0))
    loss, floats = pretraining_loss(output(logits, prob_ppl=9.0, features_pen=0.3))
    loss2, tensors = pretraining_loss(output(logits, prob_ppl=9.0, features_pen=0.3), sync=False)
    assert float(loss) == float(loss2)
    for key in ("loss", "contrastive", "diversity", "feature_pen", "accuracy", "code_ppl", "prob_ppl"):
        assert torch.is_tensor(tensors[key]) and not tensors[key].requires_grad, key
        assert float(tensors[key]) == pytest.approx(floats[key]), key
    assert tensors["temp"] == floats["temp"] and tensors["num_masked"] == floats["num_masked"]


def test_training_step_reads_loss_norm_and_stats_in_one_transfer():
    from w2v.train.loop import _read_step

    stats = {"contrastive": torch.tensor(2.5), "accuracy": torch.tensor(0.25), "temp": 1.5}
    loss_value, gnorm_value = _read_step(torch.tensor(3.0, requires_grad=True), torch.tensor(float("inf")), stats)
    assert (loss_value, gnorm_value) == (3.0, float("inf"))
    assert stats == {"contrastive": 2.5, "accuracy": 0.25, "temp": 1.5}
    assert all(type(v) is float for v in stats.values())
