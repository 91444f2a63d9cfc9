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


ON_GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")


@pytest.mark.parametrize("fused", [True, False])  # skipped on the device (found_inf), or after the read
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=ON_GPU)])
def test_training_step_reads_loss_norm_and_stats_in_one_transfer_and_skips_a_non_finite_update(fused, device):
    from w2v.train.distributed import DistInfo
    from w2v.train.optim import update

    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(4, device=device))
    opt = torch.optim.AdamW([p], lr=0.1, fused=fused)
    for gnorm, skipped in ((float("inf"), True), (2.0, False), (float("nan"), True)):
        p.grad = torch.randn(4, device=device) if not skipped else torch.full((4,), float("nan"), device=device)
        before = p.detach().clone(), {k: v.clone() for k, v in opt.state[p].items()}
        stats = {"contrastive": torch.tensor(2.5, device=device), "accuracy": torch.tensor(0.25), "temp": 1.5}
        loss_value, gnorm_value, skip = update(opt, torch.tensor(3.0, requires_grad=True, device=device),
                                               torch.tensor(gnorm, device=device), stats, DistInfo())
        assert (loss_value, skip) == (3.0, skipped) and (gnorm_value == gnorm or math.isnan(gnorm))
        assert stats == {"contrastive": 2.5, "accuracy": 0.25, "temp": 1.5}
        assert all(type(v) is float for v in stats.values())
        if skipped:  # parameters, moments and step count as they were
            assert torch.equal(p.detach(), before[0])
            assert all(torch.equal(v, opt.state[p][k]) for k, v in before[1].items())
        else:
            assert not torch.equal(p.detach(), before[0]) and float(opt.state[p]["step"]) == 1
    assert not hasattr(opt, "found_inf")  # left as GradScaler would find it
    loss_value, _, skip = update(opt, torch.tensor(float("-inf"), device=device), torch.tensor(1.0), {}, DistInfo())
    assert skip and loss_value == float("-inf") and float(opt.state[p]["step"]) == 1

