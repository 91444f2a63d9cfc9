"""Training objectives, kept outside the models (Baevski et al. 2020, sections 3.2 and 4.2).

- `pretraining_loss`: contrastive task + codebook diversity + feature penalty.
- `ctc_loss`: CTC for fine-tuning, normalised per target token.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from w2v.models.wav2vec2 import PreTrainingOutput


def contrastive_accuracy(logits: Tensor, reduce: bool = True) -> Tensor:
    """Fraction of rows whose positive (column 0) beats every negative strictly (with
    `reduce=False`: per row, 1.0 or 0.0).

    A tie with the best negative counts as wrong, so a collapsed model (all logits equal)
    scores 0 rather than 1 (fairseq's argmax/argmin rule has the same intent).
    """
    if logits.shape[1] == 1:
        right = logits.new_ones(logits.shape[0])
    else:
        right = (logits[:, 0] > logits[:, 1:].max(dim=1).values).float()
    if not reduce:
        return right
    return right.mean() if logits.shape[0] else logits.new_zeros(())


def pretraining_loss(
    out: PreTrainingOutput, diversity_weight: float = 0.1, feature_penalty_weight: float = 10.0, sync: bool = True
) -> tuple[Tensor, dict[str, float | Tensor]]:
    """L = L_m + alpha * L_d + beta * feature_pen (section 3.2).

    The contrastive term is the cross-entropy of picking column 0 among the 1 + K
    candidates, averaged over masked frames. fairseq sums it and divides gradients by the
    number of masked frames, and scales the extra terms by that number before doing so:
    the per-frame mean used here gives identical gradients. The diversity term is
    (G*V - prob_perplexity) / (G*V), 0 for perfectly used codebooks.

    Args:
        out: the output of `Wav2Vec2ForPreTraining`.
        diversity_weight: alpha (0.1 in the paper).
        feature_penalty_weight: weight of the conv-feature L2 penalty (10 in fairseq).
        sync: return the statistics as floats (one host synchronisation each); False leaves
            loss, contrastive, diversity, feature_pen, accuracy and the perplexities as
            detached 0-dim tensors, so a training step can read them all in one transfer.

    Returns:
        The scalar loss and the stats: loss, contrastive, diversity, feature_pen, accuracy,
        code_ppl, prob_ppl, temp, num_masked.
    """
    logits = out.logits.float()
    # The static head gives a row per frame and marks the masked ones; the general head's rows
    # are the masked frames alone.
    rows = out.frame_mask if out.frame_mask is not None else torch.ones(
        logits.shape[0], dtype=torch.bool, device=logits.device)
    num_masked = rows.sum()
    masked = num_masked.clamp(min=1)  # nothing masked: both terms 0, the graph kept
    per_row = torch.logsumexp(logits, dim=-1) - logits[:, 0]  # cross-entropy of column 0
    contrastive = torch.where(rows, per_row, 0.0).sum() / masked
    accuracy = torch.where(rows, contrastive_accuracy(logits.detach(), reduce=False), 0.0).sum() / masked
    loss = contrastive
    diversity = logits.new_zeros(())
    if out.prob_perplexity is not None and out.num_vars > 0:
        diversity = (out.num_vars - out.prob_perplexity.float()) / out.num_vars  # logged even at weight 0
        if diversity_weight != 0:
            loss = loss + diversity_weight * diversity
    feature_pen = out.features_pen.float()
    if feature_penalty_weight != 0:
        loss = loss + feature_penalty_weight * feature_pen

    def scalar(x: Tensor | None) -> float | Tensor:
        if x is None:
            return math.nan
        return float(x.detach()) if sync else x.detach()

    stats = {
        "loss": scalar(loss),
        "contrastive": scalar(contrastive),
        "diversity": scalar(diversity),
        "feature_pen": scalar(feature_pen),
        "accuracy": scalar(accuracy),
        "code_ppl": scalar(out.code_perplexity),
        "prob_ppl": scalar(out.prob_perplexity),
        "temp": float(out.temperature),
        "num_masked": scalar(num_masked),
    }
    return loss, stats


def ctc_loss(
    logits: Tensor,
    frame_lengths: Tensor,
    targets: Tensor,
    target_lengths: Tensor,
    blank: int = 0,
    reduction: str = "mean",
) -> Tensor:
    """CTC loss on (batch, frames, vocab) logits.

    Normalisation ("mean"): summed over the batch and divided by the total number of target
    tokens, as fairseq's ctc criterion with sentence_avg=False. This weights every token
    equally whatever the batch's length mix, unlike `F.ctc_loss(reduction="mean")`, which
    divides each utterance by its own length and then averages utterances. Infinite losses
    (target longer than the frames allow) are zeroed, and log-softmax runs in fp32 so the
    loss is stable under bf16/fp16 autocast.

    Args:
        logits: (batch, frames, vocab) unnormalised scores.
        frame_lengths: (batch,) valid frames.
        targets: (batch, max_target_len) token ids, padded (padding value ignored).
        target_lengths: (batch,) valid target tokens.
        blank: id of the CTC blank.
        reduction: "mean" (per target token), "sum", or "none" (per utterance, (batch,)).

    Returns:
        The loss (scalar, or (batch,) for "none").
    """
    log_probs = F.log_softmax(logits.float(), dim=-1).transpose(0, 1)  # (frames, batch, vocab)
    per_utt = F.ctc_loss(
        log_probs,
        targets.long(),
        frame_lengths.long(),
        target_lengths.long(),
        blank=blank,
        reduction="none",
        zero_infinity=True,
    )
    if reduction == "none":
        return per_utt
    total = per_utt.sum()
    if reduction == "sum":
        return total
    if reduction == "mean":
        return total / target_lengths.sum().clamp(min=1)
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


__all__ = ["contrastive_accuracy", "ctc_loss", "pretraining_loss"]
