"""Training settings shared by pre-training and CTC fine-tuning (one frozen dataclass)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from w2v.train.collect import check_interval

STRATEGIES = ("ddp", "fsdp")  # several processes (w2v.train.sharding)
ALLREDUCE_DTYPES = ("fp32", "bf16")  # DDP's gradients on the wire (sharding.wrap)
DDP_REDUCERS = ("buckets", "flat")  # torch's DDP, or sharding.Replicated (sharding.wrap)


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
    update_freq: int = 1  # fairseq --update-freq: batches per update, their mean gradient (the paper's batch on fewer GPUs)
    crop_seconds: float = 15.625  # pre-training crop (fairseq max_sample_size 250k)
    min_seconds: float = 0.5  # shorter utterances are skipped and counted
    num_buckets: int = 8
    normalize_audio: bool = True  # per-utterance zero mean / unit variance
    cache_audio: bool = False  # keep decoded audio in memory (small corpora)
    loader_workers: int = 4  # workers decoding the next batches' audio (0: decode in the loop)
    loader: str = "auto"  # threads | processes | auto (processes on a GPU, else threads; w2v.data.prefetch)
    prefetch_batches: int = 2  # how many batches ahead they decode
    freeze_feature_encoder: bool = False  # fine-tuning: fairseq feature_grad_mult 0.0
    freeze_transformer_updates: int = 0  # fairseq freeze_finetune_updates
    final_dropout: float = 0.0  # dropout before the CTC head
    diversity_weight: float = 0.1  # fairseq loss_weights[0]
    diversity_start: float = 0.0  # updates without the diversity loss (fraction of max_updates if < 1)
    diversity_warmup: float = 0.0  # then ramp its weight from 0 over this many updates (fraction if < 1)
    diversity_gate: float = 0.0  # also wait until a log interval's contrastive accuracy reaches this (0: no gate)
    feature_penalty_weight: float | None = None  # fairseq loss_weights[1]; None: the model's (feature_penalty_for)
    log_every: int = 10
    save_every: int = 200  # checkpoint (and validation, when fine-tuning) interval
    keep_last: int = 2  # numbered checkpoints kept besides the best
    seed: int = 1
    max_bad_updates: int = 10  # stop after this many non-finite losses/gradients in a row
    collapse_fraction: float = 0.1  # warn when code perplexity < this x G*V (0: never)
    diversity_ratio: float = 1.0  # warn when weighted diversity loss > this x contrastive loss (0: never)
    dist_timeout: float = 900.0  # seconds a rank waits for the others before giving up (several processes)
    precision: str = "auto"  # auto (bf16 autocast on CUDA, fp32 on CPU) | fp32 | bf16
    strategy: str = "ddp"  # several processes: ddp (full copy per GPU) | fsdp (weights, grads, optimizer sharded)
    allreduce_dtype: str = "fp32"  # ddp: the gradients on the wire: fp32 | bf16 (half the bytes; fairseq's fp16 comm hook)
    ddp_reducer: str = "flat"  # ddp: flat (sharding.Replicated: a few flat all-reduces, no hooks) | buckets (torch's DDP)
    ddp_bucket_mb: float | None = None  # ddp: bucket size in MB; None: the reducer's own (buckets 25, flat 512)
    ddp_bucket_view: bool = True  # ddp_reducer buckets: gradients live in DDP's buckets (no copies in and out; BENCHMARKS.md)
    gc_interval: int = 50  # Python's garbage collection every this many updates, on every rank at once (0: automatic)
    activation_checkpointing: bool = False  # recompute each Transformer block in backward (LARGE and above)
    compile: bool = False  # torch.compile the conv stack and Transformer blocks (w2v.models.accel)
    matmul_conv: bool = False  # conv encoder and positional conv as matrix products (same function; GPU speed)
    cuda_graphs: bool = False  # with compile, one process, pre-training: the Transformer stack replayed as CUDA graphs
    model_overrides: dict = field(default_factory=dict)  # e.g. mask_prob, layerdrop when fine-tuning
    language_alpha: float = 0.5  # XLSR language sampling p_l ∝ (n_l/N)^α, used when the cuts hold 2+ languages
    adapter: dict | None = None  # fine-tuning: {lang: xx, dim: 16} trains only MMS adapters + head of language xx

    @classmethod
    def from_dict(cls, d: dict, where: str = "training settings") -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown}; known keys: {sorted(names)}")
        d = dict(d)
        if "betas" in d:
            d["betas"] = tuple(d["betas"])
        adapter = d.get("adapter")
        if adapter is not None:
            if not isinstance(adapter, dict) or not isinstance(adapter.get("lang"), str) or not adapter["lang"] \
                    or set(adapter) - {"lang", "dim"} or not isinstance(adapter.get("dim", 16), int) \
                    or adapter.get("dim", 16) < 1:
                raise ValueError(f"{where}: adapter must be {{lang: <language>, dim: <int >= 1, default 16>}}, "
                                 f"got {adapter!r}")
            if d.get("task", "pretrain") != "finetune":
                raise ValueError(f"{where}: adapter is a fine-tuning setting")
            d["adapter"] = {"lang": adapter["lang"], "dim": adapter.get("dim", 16)}
        if d.get("strategy", "ddp") not in STRATEGIES:
            raise ValueError(f"{where}: strategy must be ddp or fsdp, got {d['strategy']!r}")
        if d.get("allreduce_dtype", "fp32") not in ALLREDUCE_DTYPES:
            raise ValueError(f"{where}: allreduce_dtype must be fp32 or bf16, got {d['allreduce_dtype']!r}")
        if d.get("allreduce_dtype", "fp32") != "fp32" and d.get("strategy", "ddp") == "fsdp":
            raise ValueError(f"{where}: allreduce_dtype is a ddp setting; fsdp reduces gradients in fp32")
        if d.get("ddp_reducer", "flat") not in DDP_REDUCERS:
            raise ValueError(f"{where}: ddp_reducer must be one of {', '.join(DDP_REDUCERS)}, got {d['ddp_reducer']!r}")
        if "ddp_reducer" in d and d.get("strategy", "ddp") == "fsdp":
            raise ValueError(f"{where}: ddp_reducer is a ddp setting; fsdp reduce-scatters its own way")
        bucket = d.get("ddp_bucket_mb")
        if bucket is not None and (isinstance(bucket, bool) or not isinstance(bucket, (int, float)) or not bucket > 0):
            raise ValueError(f"{where}: ddp_bucket_mb must be a number of MB > 0, got {bucket!r}")
        if not isinstance(d.get("ddp_bucket_view", True), bool):
            raise ValueError(f"{where}: ddp_bucket_view is true or false, got {d['ddp_bucket_view']!r}")
        try:
            check_interval(d.get("gc_interval", cls.gc_interval))
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
        freq = d.get("update_freq", 1)
        if isinstance(freq, bool) or not isinstance(freq, int) or freq < 1:
            raise ValueError(f"{where}: update_freq is a number of batches per update, 1 or more, got {freq!r}")
        if not 0 <= d.get("diversity_gate", 0.0) < 1:
            raise ValueError(f"{where}: diversity_gate is a contrastive accuracy in [0, 1), got {d['diversity_gate']!r}")
        if d.get("cuda_graphs") and not d.get("compile"):
            raise ValueError(f"{where}: cuda_graphs replays the compiled Transformer stack: it needs compile: true")
        if d.get("cuda_graphs") and d.get("task", "pretrain") == "finetune":
            raise ValueError(f"{where}: cuda_graphs is a pre-training setting: fine-tuning's batches come in many "
                             "lengths, and a CUDA graph would be recorded (and its memory kept) for each")
        if d.get("language_alpha", 0.5) < 0:
            raise ValueError(f"{where}: language_alpha must be >= 0")
        return cls(**d)

    def diversity_weight_at(self, num_updates: int, opened_at: int | None = 0) -> float:
        """The diversity loss weight at update ``num_updates``: 0 for ``diversity_start``
        updates, then ``diversity_weight`` reached linearly over ``diversity_warmup`` updates.
        Both default to 0 (fairseq: the full weight from the first update). With a
        ``diversity_gate``, ``opened_at`` is the update at which the contrastive accuracy first
        reached the gate (None: not yet, weight 0); the delay and the ramp then count from
        the later of the two.

        Small-batch runs need the delay. While the contrastive loss sits at chance its gradient
        is near zero, and even a small diversity weight then flattens every frame's code
        distribution until the Gumbel noise picks the codes: the targets become noise and the
        loss stays at ln(1 + K) for good. Without the term the codebook first shrinks to the
        codes the features can predict and the loss leaves chance; the diversity term then
        spreads the codebook out again (egs/demo/RESULTS.md, "Why pre-training sat at chance").
        A fixed delay can end before the loss has left chance (how long that takes varies from
        run to run); the gate waits for it (egs/mms_bible/RESULTS.md).
        """
        from w2v.train.schedules import updates

        start = updates(self.diversity_start, self.max_updates)
        if self.diversity_gate > 0:
            if opened_at is None:
                return 0.0
            start = max(start, opened_at)
        since = num_updates - start
        if since < 0:
            return 0.0
        ramp = updates(self.diversity_warmup, self.max_updates)
        return self.diversity_weight if ramp <= 0 or since >= ramp else self.diversity_weight * since / ramp

    def feature_penalty_for(self, model_cfg) -> float:
        """The conv-feature L2 penalty's weight for ``model_cfg``: the setting, or when unset the
        weight of fairseq's pre-training config for that architecture: 0 for wav2vec 2.0 with the
        layer-norm conv encoder (``wav2vec2_large_librivox.yaml``, ``loss_weights: [0.1, 0]``:
        LARGE-LV60, XLSR-53, XLS-R, MMS), else 10 (BASE and LARGE on LibriSpeech, HuBERT).
        """
        if self.feature_penalty_weight is not None:
            return self.feature_penalty_weight
        from w2v.models.config import Wav2Vec2Config

        lv60 = type(model_cfg) is Wav2Vec2Config and model_cfg.extractor_mode == "layer_norm"
        return 0.0 if lv60 else 10.0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
