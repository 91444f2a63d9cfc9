"""What one pre-training update computes, per model family, and the multi-stage drivers.

The loop (`w2v.train.loop`) owns data, optimizer, schedule, checkpoints and randomness; it
calls `pretrain_step` with the update's generator and gets ``(loss, stats)`` back. Families
that train in stages (vq-wav2vec: quantizer then BERT; HuBERT: one run per target
iteration) go through `run_pretraining`, which calls the loop once per stage; each stage
resumes on its own, so a rerun continues where it stopped.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import Tensor, nn

from w2v.models.families import family_of
from w2v.models.hubert import HubertForPreTraining
from w2v.models.vq_wav2vec import VqWav2VecBert, VqWav2VecForPreTraining
from w2v.models.wav2vec1 import Wav2Vec1ForPreTraining
from w2v.models.wav2vec2 import Wav2Vec2ForPreTraining
from w2v.train.config import TrainConfig
from w2v.train.losses import pretraining_loss
from w2v.train.objectives import future_prediction_loss, hubert_loss, masked_token_loss, vq_wav2vec_loss

log = logging.getLogger(__name__)


def fit_labels(labels: Tensor, frames: int) -> Tensor:
    """(batch, n) labels -> (batch, frames): cut or padded with -1 (no label), since the label
    and conv frame counts may differ by a frame at an utterance's end."""
    if labels.shape[1] >= frames:
        return labels[:, :frames]
    return torch.cat([labels, labels.new_full((labels.shape[0], frames - labels.shape[1]), -1)], dim=1)


def pretrain_step(model: nn.Module, wav: Tensor, lens: Tensor, generator: torch.Generator, num_updates: int,
                  tcfg: TrainConfig, labels: Tensor | None = None,
                  forward: nn.Module | None = None, diversity_weight: float | None = None
                  ) -> tuple[Tensor, dict[str, float | Tensor]]:
    """Forward one batch and its objective. Statistics may be floats or 0-dim tensors still on
    the device (wav2vec 2.0: read by the loop in one transfer with the loss and gradient norm).

    Args:
        model: a pre-training model of any family.
        wav, lens: (batch, samples) audio and (batch,) lengths.
        generator: the update's generator (masks, negatives, Gumbel noise).
        num_updates: updates done so far (temperature schedules).
        tcfg: loss weights.
        labels: (batch, label frames) HuBERT targets, -1 where none.
        forward: what to call for the forward pass when it is not ``model`` itself (the DDP
            wrapper around it, which syncs gradients); ``model`` picks the objective.
        diversity_weight: wav2vec 2.0's diversity loss weight this update (None:
            ``tcfg.diversity_weight_at(num_updates)``; the loop passes it when a gate decides).
    """
    model.set_num_updates(num_updates)
    fwd = forward if forward is not None else model
    if isinstance(model, Wav2Vec2ForPreTraining):
        out = fwd(wav, lens, generator=generator)
        weight = tcfg.diversity_weight_at(num_updates) if diversity_weight is None else diversity_weight
        loss, stats = pretraining_loss(out, weight, tcfg.feature_penalty_for(model.cfg), sync=False)
        stats["weighted_diversity"] = weight * stats["diversity"]
        return loss, stats
    if isinstance(model, Wav2Vec1ForPreTraining):
        return future_prediction_loss(fwd(wav, lens, generator=generator))
    if isinstance(model, VqWav2VecForPreTraining):
        return vq_wav2vec_loss(fwd(wav, lens, generator=generator))
    if isinstance(model, VqWav2VecBert):
        return masked_token_loss(fwd(wav, lens, generator=generator))
    if isinstance(model, HubertForPreTraining):
        if labels is None:
            raise ValueError("HuBERT pre-training needs frame labels (labels_path)")
        out = fwd(wav, lens, generator=generator)
        cfg = model.cfg
        return hubert_loss(out, fit_labels(labels, out.logits.shape[1]), cfg.pred_masked_weight,
                           cfg.pred_nomask_weight, tcfg.feature_penalty_for(cfg))
    raise TypeError(f"no pre-training step for {type(model).__name__}")


def run_pretraining(tcfg: TrainConfig, cuts_path: str | Path, out_dir: str | Path, model_cfg, *,
                    device: str | None = None) -> Path:
    """Pre-train ``model_cfg``'s family into ``out_dir/model.pt``, in as many stages as it takes.

    - wav2vec 2.0, wav2vec 1.0: one run.
    - vq-wav2vec with ``bert_layers > 0``: the quantizer model in ``out_dir/quantizer``, then
      BERT over its units (same training settings) in ``out_dir``.
    - HuBERT: per iteration i, k-means targets (``labels_iter{i}.jsonl``: MFCCs for i = 1, the
      previous model's ``label_layer`` after), then a run; all but the last in ``iter{i}/``.
    """
    from w2v.train.loop import resolve_device, train
    from w2v.train.targets import make_hubert_labels

    out_dir = Path(out_dir)
    family = family_of(model_cfg)
    if family == "vq_wav2vec" and model_cfg.bert_layers > 0 and not model_cfg.with_bert:
        first = train(tcfg, cuts_path, out_dir / "quantizer", model_cfg, device=device)
        log.info("vq-wav2vec stage 2: BERT over the units of %s", first)
        return train(tcfg, cuts_path, out_dir, model_cfg.replace(with_bert=True), init=first, device=device)
    if family == "hubert":
        previous = None
        iterations = len(model_cfg.kmeans_clusters)
        for it in range(1, iterations + 1):
            cfg = model_cfg.replace(iteration=it)
            run_dir = out_dir if it == iterations else out_dir / f"iter{it}"
            if (run_dir / "model.pt").exists() and run_dir != out_dir:
                previous = run_dir / "model.pt"
                continue
            labels = out_dir / f"labels_iter{it}.jsonl"
            if not labels.exists():
                make_hubert_labels(cuts_path, labels, cfg, previous, seed=tcfg.seed,
                                   normalize_audio=tcfg.normalize_audio, device=resolve_device(device))
            previous = train(tcfg, cuts_path, run_dir, cfg, labels_path=labels, device=device)
        return previous
    return train(tcfg, cuts_path, out_dir, model_cfg, device=device)


__all__ = ["fit_labels", "pretrain_step", "run_pretraining"]
