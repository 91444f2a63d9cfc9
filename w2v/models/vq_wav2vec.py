"""vq-wav2vec (Baevski et al. 2019): wav2vec 1.0 with a quantizer between encoder and context
network, then BERT over the discrete units.

- `VqWav2VecForPreTraining`: encoder f -> quantizer q (Gumbel-softmax or online k-means, G
  groups of V codewords) -> context network g on the quantized z_hat -> future prediction of
  z_hat (section 3). Loss: `w2v.train.objectives.vq_wav2vec_loss`.
- `VqWav2VecBert`: the second stage (section 4): the trained quantizer model, frozen, turns
  audio into unit tokens; a small Transformer learns to predict masked spans of them. A
  token is the tuple of its G codes; it is embedded as the sum of G code embeddings and
  predicted by G softmaxes over V, which keeps the vocabulary at G*V instead of V**G
  (102,400 for G=2, V=320; the paper's BERT uses the codes seen in training as its vocabulary).
  Its hidden states are the features of the fine-tuned acoustic model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from w2v.models.components import TransformerEncoder, init_bert_params, lengths_to_padding_mask
from w2v.models.kmeans import KmeansVectorQuantizer
from w2v.models.masking import Generator, compute_mask_indices
from w2v.models.quantizer import GumbelVectorQuantizer
from w2v.models.wav2vec1 import ContextNetwork, FuturePredictionOutput, FuturePredictor, Wav2Vec1Config, Wav2Vec1Encoder


@dataclass(frozen=True)
class VqWav2VecConfig(Wav2Vec1Config):
    """vq-wav2vec: the wav2vec 1.0 fields plus the quantizer and the BERT stage."""

    family: ClassVar[str] = "vq_wav2vec"
    _tuple_fields: ClassVar[dict[str, int]] = {"conv_feature_layers": 2, "conv_aggregator_layers": 2,
                                               "vq_temp": 1}

    log_compression: bool = False  # the quantizer sees the encoder output itself
    prediction_steps: int = 8  # paper section 5.1: K = 8
    vq_type: str = "gumbel"  # fairseq vq_type: gumbel | kmeans
    vq_groups: int = 2  # fairseq vq_groups
    vq_vars: int = 320  # fairseq vq_vars
    vq_dim: int = 0  # fairseq vq_dim (0 -> conv_dim)
    vq_temp: tuple[float, float, float] = (2.0, 0.5, 0.999995)  # fairseq vq_temp (start, end, decay per update)
    vq_gamma: float = 0.25  # fairseq vq_gamma: commitment weight (k-means)
    # --- second stage: BERT over the unit tokens ---
    with_bert: bool = False  # set by the pre-training driver for the BERT stage
    bert_layers: int = 12  # 0: no BERT stage (fine-tune on the context network's features)
    bert_embed_dim: int = 768
    bert_ffn_dim: int = 3072
    bert_heads: int = 12
    bert_conv_pos: int = 128  # positional convolution (components.ConvPositionalEmbedding)
    bert_conv_pos_groups: int = 16
    bert_dropout: float = 0.1
    bert_mask_prob: float = 0.05  # paper section 4: span starts with p = 0.05 ...
    bert_mask_length: int = 10  # ... of 10 tokens

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.vq_type not in ("gumbel", "kmeans"):
            raise ValueError(f"vq_type must be 'gumbel' or 'kmeans', got {self.vq_type!r}")
        if self.quantized_dim % self.vq_groups:
            raise ValueError("vq_dim (or the conv dim) must be divisible by vq_groups")
        if self.with_bert and self.bert_layers <= 0:
            raise ValueError("the BERT stage needs bert_layers > 0")

    @property
    def quantized_dim(self) -> int:
        return self.vq_dim or self.conv_dim


@dataclass
class VqOutput:
    """`prediction`: the future-prediction scores; `kmeans_loss` (None for Gumbel); code
    statistics of the quantizer; `codes` (batch, frames, groups)."""

    prediction: FuturePredictionOutput
    kmeans_loss: Tensor | None
    code_perplexity: Tensor
    prob_perplexity: Tensor | None
    num_vars: int
    temperature: float
    codes: Tensor


class VqWav2VecForPreTraining(nn.Module):
    def __init__(self, cfg: VqWav2VecConfig):
        super().__init__()
        self.cfg = cfg
        self.feature_extractor = Wav2Vec1Encoder(cfg)
        dim = cfg.quantized_dim
        if cfg.vq_type == "gumbel":
            self.vector_quantizer = GumbelVectorQuantizer(cfg.conv_dim, cfg.vq_groups, cfg.vq_vars, dim, cfg.vq_temp)
        else:
            if dim != cfg.conv_dim:
                raise ValueError("the k-means quantizer keeps the encoder's dimension: set vq_dim 0")
            self.vector_quantizer = KmeansVectorQuantizer(dim, cfg.vq_groups, cfg.vq_vars, cfg.vq_gamma)
        self.feature_aggregator = ContextNetwork(dim, cfg.conv_aggregator_layers, cfg.skip_connections_agg,
                                                 cfg.residual_scale, cfg.dropout)
        self.predictor = FuturePredictor(cfg.context_dim, dim, cfg.prediction_steps, cfg.num_negatives, cfg.infonce)

    def set_num_updates(self, num_updates: int) -> None:
        self.vector_quantizer.set_num_updates(num_updates)

    def quantize(self, waveforms: Tensor, lengths: Tensor | None = None, generator: Generator = None):
        """Encoder + quantizer. Returns (quantized (batch, frames, dim), frame lengths, padding
        mask, codes (batch, frames, groups), the quantizer's output)."""
        z, frame_lengths = self.feature_extractor(waveforms, lengths)
        padding = lengths_to_padding_mask(frame_lengths, z.shape[1])
        vq = self.vector_quantizer
        if isinstance(vq, GumbelVectorQuantizer):
            gen = generator if isinstance(generator, torch.Generator) else None
            q = vq(z, mask=~padding, generator=gen)
            b, t, _ = z.shape
            codes = vq.weight_proj(z).view(b, t, vq.num_groups, vq.num_vars_per_group).argmax(-1)
        else:
            q = vq(z, mask=~padding)
            codes = q.codes
        return q.quantized, frame_lengths, padding, codes, q

    @torch.no_grad()
    def units(self, waveforms: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Discrete units: (batch, frames, groups) codes (argmax / nearest codeword) and lengths."""
        _, frame_lengths, _, codes, _ = self.quantize(waveforms, lengths)
        return codes, frame_lengths

    def forward(self, waveforms: Tensor, lengths: Tensor | None = None, generator: Generator = None,
                negatives_indices: Tensor | None = None) -> VqOutput:
        quantized, frame_lengths, padding, codes, q = self.quantize(waveforms, lengths, generator)
        c = self.feature_aggregator(quantized, padding)
        pred = self.predictor(c, quantized, frame_lengths, generator, negatives_indices)
        gumbel = isinstance(self.vector_quantizer, GumbelVectorQuantizer)
        return VqOutput(prediction=pred, kmeans_loss=None if gumbel else q.kmeans_loss,
                        code_perplexity=q.code_perplexity, prob_perplexity=q.prob_perplexity if gumbel else None,
                        num_vars=q.num_vars, temperature=q.temperature if gumbel else 0.0, codes=codes)

    def extract_features(self, waveforms: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Context vectors over the quantized latents (features without the BERT stage)."""
        quantized, frame_lengths, padding, _, _ = self.quantize(waveforms, lengths)
        return self.feature_aggregator(quantized, padding), frame_lengths

    @property
    def feature_dim(self) -> int:
        return self.cfg.context_dim


@dataclass
class MaskedTokenOutput:
    """`logits` (num_masked, groups, V) at the masked tokens, `targets` (num_masked, groups)."""

    logits: Tensor
    targets: Tensor
    mask_indices: Tensor
    lengths: Tensor


class VqWav2VecBert(nn.Module):
    """BERT over vq-wav2vec units; the quantizer model inside is frozen (section 4)."""

    def __init__(self, cfg: VqWav2VecConfig):
        super().__init__()
        self.cfg = cfg
        self.vq = VqWav2VecForPreTraining(cfg)
        self.vq.requires_grad_(False)
        g, v, d = cfg.vq_groups, cfg.vq_vars, cfg.bert_embed_dim
        self.embed_tokens = nn.Embedding(g * v, d)
        self.mask_emb = nn.Parameter(torch.empty(d).uniform_())
        self.encoder = TransformerEncoder(dim=d, ffn_dim=cfg.bert_ffn_dim, layers=cfg.bert_layers, heads=cfg.bert_heads,
                                          conv_pos=cfg.bert_conv_pos, conv_pos_groups=cfg.bert_conv_pos_groups,
                                          dropout=cfg.bert_dropout, attention_dropout=cfg.bert_dropout)
        self.lm_head = nn.Linear(d, g * v)
        init_bert_params(self.encoder.layers)
        nn.init.normal_(self.embed_tokens.weight, std=d ** -0.5)

    def train(self, mode: bool = True):
        super().train(mode)
        self.vq.eval()  # deterministic units: argmax codes, no dropout
        return self

    def set_num_updates(self, num_updates: int) -> None:
        pass

    def load_quantizer_model(self, state: dict[str, Tensor]) -> None:
        """The first stage's `VqWav2VecForPreTraining` weights (every key must match)."""
        self.vq.load_state_dict(state, strict=True)

    def embed(self, codes: Tensor) -> Tensor:
        """(batch, frames, groups) codes -> (batch, frames, dim): sum of per-group embeddings."""
        offsets = torch.arange(self.cfg.vq_groups, device=codes.device) * self.cfg.vq_vars
        return self.embed_tokens(codes + offsets).sum(-2)

    def forward(self, waveforms: Tensor, lengths: Tensor | None = None, generator: Generator = None,
                mask_indices: Tensor | None = None) -> MaskedTokenOutput:
        codes, frame_lengths = self.vq.units(waveforms, lengths)
        padding = lengths_to_padding_mask(frame_lengths, codes.shape[1])
        if mask_indices is None:
            mask_indices = compute_mask_indices(tuple(padding.shape), padding, self.cfg.bert_mask_prob,
                                                self.cfg.bert_mask_length, 1, generator)
        mask_indices = mask_indices.to(codes.device) & ~padding
        x = self.embed(codes)
        x = torch.where(mask_indices.unsqueeze(-1), self.mask_emb.to(x.dtype), x)
        hidden, _ = self.encoder(x, padding)
        logits = self.lm_head(hidden[mask_indices]).view(-1, self.cfg.vq_groups, self.cfg.vq_vars)
        return MaskedTokenOutput(logits=logits, targets=codes[mask_indices], mask_indices=mask_indices,
                                 lengths=frame_lengths)

    def extract_features(self, waveforms: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """BERT hidden states over the unmasked units: (batch, frames, bert_embed_dim), lengths."""
        codes, frame_lengths = self.vq.units(waveforms, lengths)
        padding = lengths_to_padding_mask(frame_lengths, codes.shape[1])
        hidden, _ = self.encoder(self.embed(codes), padding)
        return hidden, frame_lengths

    @property
    def feature_dim(self) -> int:
        return self.cfg.bert_embed_dim


def unit_tokens(codes: Tensor, num_vars: int) -> Tensor:
    """(..., groups) codes -> (...) one integer per frame, sum_g code_g * V**(G-1-g) (the paper's
    token is the code tuple; this is its index)."""
    g = codes.shape[-1]
    weights = num_vars ** torch.arange(g - 1, -1, -1, device=codes.device)
    return (codes * weights).sum(-1)


__all__ = ["MaskedTokenOutput", "VqOutput", "VqWav2VecBert", "VqWav2VecConfig", "VqWav2VecForPreTraining",
           "unit_tokens"]
