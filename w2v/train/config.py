"""Training settings shared by pre-training and CTC fine-tuning (one frozen dataclass)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run. Fairseq names are given where they differ.

    Durations are in seconds of 16 kHz audio; counts are optimizer updates.
    """

    task: str = "pretrain"  # pretrain | finetune
    max_updates: int = 1000  # fairseq optimization.max_update
    lr: float = 5e-4  # peak learning rate
    schedule: str = "polynomial"  # polynomial (pre-training) | tri_stage (fine-tuning)
    warmup: float = 0.08  # fraction of max_updates if < 1, else a count
    hold: float = 0.4  # tri_stage only
    final_lr_scale: float = 0.05  # tri_stage only
    end_lr: float = 0.0  # polynomial only
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    weight_decay: float = 0.01
    clip_norm: float = 10.0  # 0 disables clipping
    max_duration: float = 60.0  # padded seconds per batch (fairseq max_tokens / 16000)
    max_batch_size: int | None = None
    crop_seconds: float = 15.625  # pre-training crop (fairseq max_sample_size 250k)
    min_seconds: float = 0.5  # shorter utterances are skipped and counted
    num_buckets: int = 8
    normalize_audio: bool = True  # per-utterance zero mean / unit variance
    cache_audio: bool = False  # keep decoded audio in memory (small corpora)
    loader_workers: int = 4  # threads decoding the next batches' audio (0: decode in the loop)
    prefetch_batches: int = 2  # how many batches ahead they decode
    freeze_feature_encoder: bool = False  # fine-tuning: fairseq feature_grad_mult 0.0
    freeze_transformer_updates: int = 0  # fairseq freeze_finetune_updates
    final_dropout: float = 0.0  # dropout before the CTC head
    diversity_weight: float = 0.1  # fairseq loss_weights[0]
    feature_penalty_weight: float = 10.0  # fairseq loss_weights[1]
    log_every: int = 10
    save_every: int = 200  # checkpoint (and validation, when fine-tuning) interval
    keep_last: int = 2  # numbered checkpoints kept besides the best
    seed: int = 1
    precision: str = "auto"  # auto (bf16 autocast on CUDA, fp32 on CPU) | fp32 | bf16
    compile: bool = False  # torch.compile the conv stack and Transformer blocks (w2v.models.accel)
    activation_checkpointing: bool = False  # recompute Transformer blocks in backward (LARGE and up)
    model_overrides: dict = field(default_factory=dict)  # e.g. mask_prob, layerdrop when fine-tuning

    @classmethod
    def from_dict(cls, d: dict, where: str = "training settings") -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown}; known keys: {sorted(names)}")
        d = dict(d)
        if "betas" in d:
            d["betas"] = tuple(d["betas"])
        return cls(**d)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
