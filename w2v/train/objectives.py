"""Pre-training objectives of the other family members, kept outside the models as `losses`.

- `future_prediction_loss`: wav2vec 1.0's binary contrastive loss (Schneider et al. 2019, eq. 1),
  or fairseq's `infonce` cross-entropy.
- `vq_wav2vec_loss`: the same on quantized latents plus the k-means terms (Baevski et al. 2019, eq. 2).
- `masked_token_loss`: vq-wav2vec's BERT stage, cross-entropy at masked unit tokens.
- `hubert_loss`: HuBERT's masked prediction (Hsu et al. 2021, eqs. 1-3).
Each returns ``(loss, stats)`` with float stats for the training log.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from w2v.models.hubert import HubertOutput
from w2v.models.vq_wav2vec import MaskedTokenOutput, VqOutput
from w2v.models.wav2vec1 import FuturePredictionOutput
from w2v.train.losses import contrastive_accuracy


def _f(x: Tensor | None) -> float:
    return math.nan if x is None else float(x.detach())


def future_prediction_loss(out: FuturePredictionOutput) -> tuple[Tensor, dict[str, float]]:
    """L = -sum_k sum_i [log sigma(z_{i+k} . h_k(c_i)) + sum_{negatives} log sigma(-z~ . h_k(c_i))].

    The paper's lambda * E[...] with lambda = the number of negatives is the sum over the drawn
    negatives. Averaged over the (i, k) pairs, so the scale does not depend on batch size.
    With `out.infonce` (fairseq's `infonce`): -log softmax of the positive among the positive and
    its distractors, averaged over the pairs (chance: ln(1 + negatives)).
    """
    logits = out.logits.float()
    n = logits.shape[0]
    if n == 0:
        loss = logits.sum() * 0.0
    elif out.infonce:
        loss = F.cross_entropy(logits, torch.zeros(n, dtype=torch.long, device=logits.device))
    else:
        labels = torch.zeros_like(logits)
        labels[:, 0] = 1.0
        loss = F.binary_cross_entropy_with_logits(logits, labels, reduction="sum") / n
    return loss, {"loss": _f(loss), "accuracy": _f(contrastive_accuracy(logits.detach())), "num_pairs": float(n)}


def vq_wav2vec_loss(out: VqOutput) -> tuple[Tensor, dict[str, float]]:
    """Future prediction of the quantized latents, plus (k-means) codebook + gamma * commitment."""
    loss, stats = future_prediction_loss(out.prediction)
    stats["prediction"] = stats["loss"]
    if out.kmeans_loss is not None:
        loss = loss + out.kmeans_loss.float()
        stats["kmeans"] = _f(out.kmeans_loss)
    stats.update(loss=_f(loss), code_ppl=_f(out.code_perplexity), prob_ppl=_f(out.prob_perplexity),
                 temp=float(out.temperature))
    return loss, stats


def masked_token_loss(out: MaskedTokenOutput) -> tuple[Tensor, dict[str, float]]:
    """Cross-entropy of each masked token's G codes, averaged over tokens and groups."""
    n = out.logits.shape[0]
    if n == 0:
        loss = out.logits.sum() * 0.0
        acc = out.logits.new_zeros(())
    else:
        logits = out.logits.float().reshape(-1, out.logits.shape[-1])
        loss = F.cross_entropy(logits, out.targets.reshape(-1))
        acc = (out.logits.argmax(-1) == out.targets).all(-1).float().mean()
    return loss, {"loss": _f(loss), "accuracy": _f(acc), "num_masked": float(n)}


def hubert_loss(out: HubertOutput, labels: Tensor, masked_weight: float = 1.0, nomask_weight: float = 0.0,
                feature_penalty_weight: float = 10.0) -> tuple[Tensor, dict[str, float]]:
    """L = masked_weight * CE(masked frames) + nomask_weight * CE(unmasked frames) + beta * penalty.

    Args:
        out: the model's output; `logits` (batch, frames, classes).
        labels: (batch, frames) cluster ids; negative ids (no label) are ignored.
        masked_weight, nomask_weight: the paper's alpha and 1 - alpha (fairseq pred_*_weight).
        feature_penalty_weight: the conv-feature L2 penalty (10, as wav2vec 2.0).

    Returns:
        The loss and stats (loss, masked/unmasked cross-entropy and accuracy, feature_pen).
    """
    labels = labels.to(out.logits.device)
    valid = ~out.padding_mask & (labels >= 0)
    logits = out.logits.float()
    loss = logits.sum() * 0.0
    stats: dict[str, float] = {}
    for name, sel, w in (("masked", valid & out.mask_indices, masked_weight),
                         ("unmasked", valid & ~out.mask_indices, nomask_weight)):
        if sel.any():
            ce = F.cross_entropy(logits[sel], labels[sel])
            stats[f"ce_{name}"] = _f(ce)
            stats[f"acc_{name}"] = float((logits[sel].argmax(-1) == labels[sel]).float().mean())
            if w:
                loss = loss + w * ce
    pen = out.features_pen.float()
    if feature_penalty_weight:
        loss = loss + feature_penalty_weight * pen
    stats.update(loss=_f(loss), feature_pen=_f(pen), accuracy=stats.get("acc_masked", math.nan),
                 num_masked=float((valid & out.mask_indices).sum()))
    return loss, stats


__all__ = ["future_prediction_loss", "hubert_loss", "masked_token_loss", "vq_wav2vec_loss"]
