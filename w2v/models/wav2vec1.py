"""wav2vec 1.0 (Schneider et al. 2019): convolutional encoder and context network trained to
tell true future latents from distractors.

- encoder f: X -> Z, five strided convolutions (kernels 10,8,4,4,4; strides 5,4,2,2,2; 10 ms
  frames, 30 ms receptive field), single-group normalisation and ReLU (`ConvFeatureEncoder` in
  mode "wav2vec1"); `large` adds two position-wise linear layers.
- context network g: Z -> C, causal convolutions (9 of kernel 3; `large`: 12 of kernels 2..13
  with scaled skip connections).
- for each step k = 1..K an affine map h_k(c_i) scores z_{i+k} against distractors drawn from
  the same utterance (section 2.2). The loss is `w2v.train.objectives.future_prediction_loss`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from w2v.models.components import (ConvFeatureEncoder, frame_lengths_on, init_conv_feature_encoder,
                                   lengths_to_padding_mask)
from w2v.models.families import FamilyConfig
from w2v.models.masking import Generator, sample_negatives

ConvLayers = tuple[tuple[int, int, int], ...]

WAV2VEC1_CONV_LAYERS: ConvLayers = ((512, 10, 5), (512, 8, 4), (512, 4, 2), (512, 4, 2), (512, 4, 2))
WAV2VEC1_AGGREGATOR: ConvLayers = ((512, 3, 1),) * 9


@dataclass(frozen=True)
class Wav2Vec1Config(FamilyConfig):
    """wav2vec 1.0 hyper-parameters; defaults are the paper's base model (section 3.2)."""

    family: ClassVar[str] = "wav2vec1"
    _tuple_fields: ClassVar[dict[str, int]] = {"conv_feature_layers": 2, "conv_aggregator_layers": 2}

    conv_feature_layers: ConvLayers = WAV2VEC1_CONV_LAYERS  # fairseq conv_feature_layers (dim, kernel, stride)
    encoder_linear_layers: int = 0  # paper: "two additional linear transformations in the encoder" (large: 2)
    log_compression: bool = True  # fairseq log_compression: z <- log(|z| + 1)
    conv_aggregator_layers: ConvLayers = WAV2VEC1_AGGREGATOR  # fairseq conv_aggregator_layers (dim, kernel, stride)
    skip_connections_agg: bool = False  # fairseq skip_connections_agg (large: True)
    residual_scale: float = 0.5  # fairseq residual_scale: skip branch (x + r) * sqrt(scale)
    dropout: float = 0.0  # fairseq dropout (encoder and context network)
    prediction_steps: int = 12  # fairseq prediction_steps: K future steps
    num_negatives: int = 10  # fairseq num_negatives: distractors per step from the same utterance
    # fairseq criterion `infonce`: cross-entropy over the positive and its distractors instead of
    # the paper's binary loss (whose trivial optimum, one constant score, small runs fall into)
    infonce: bool = False
    # --- downstream CTC acoustic model on the frozen context features (fine-tuning) ---
    downstream_layers: int = 2  # BiLSTM layers
    downstream_dim: int = 256  # BiLSTM hidden units per direction
    downstream_dropout: float = 0.1

    def __post_init__(self) -> None:
        self._freeze_tuples()
        if any(len(layer) != 3 for layer in self.conv_feature_layers + self.conv_aggregator_layers):
            raise ValueError("conv layers must be (dim, kernel, stride) triples")
        if any(s != 1 for _, _, s in self.conv_aggregator_layers):
            raise ValueError("the context network's convolutions must have stride 1")
        if self.prediction_steps < 1:
            raise ValueError("prediction_steps must be >= 1")

    @property
    def conv_dim(self) -> int:
        return self.conv_feature_layers[-1][0]

    @property
    def context_dim(self) -> int:
        return self.conv_aggregator_layers[-1][0] if self.conv_aggregator_layers else self.conv_dim


class Wav2Vec1Encoder(nn.Module):
    """Waveform -> latents z (batch, frames, conv_dim): the conv stack, optional linear layers,
    optional log compression."""

    def __init__(self, cfg: Wav2Vec1Config):
        super().__init__()
        self.conv = ConvFeatureEncoder(cfg.conv_feature_layers, mode="wav2vec1", bias=False)
        init_conv_feature_encoder(self.conv)
        self.linear = nn.Sequential(*[m for _ in range(cfg.encoder_linear_layers)
                                      for m in (nn.Linear(cfg.conv_dim, cfg.conv_dim), nn.ReLU())])
        self.log_compression = cfg.log_compression
        self.dropout = nn.Dropout(cfg.dropout)

    def output_lengths(self, lengths: Tensor) -> Tensor:
        return self.conv.output_lengths(lengths)

    def forward(self, waveforms: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if lengths is not None:  # padding content must not matter (group norm sees the time axis)
            waveforms = waveforms.masked_fill(lengths_to_padding_mask(lengths.to(waveforms.device),
                                                                      waveforms.shape[1]), 0.0)
        z, frame_lengths = self.conv(waveforms, lengths)
        z = self.linear(z)
        if self.log_compression:
            z = torch.log(z.abs() + 1)
        return self.dropout(z), frame_lengths_on(z, frame_lengths)


class ContextNetwork(nn.Module):
    """Causal convolutions over z: frame i of the output sees frames <= i only (section 2.1)."""

    def __init__(self, in_dim: int, layers: ConvLayers, skip: bool, residual_scale: float, dropout: float):
        super().__init__()
        blocks, residual = [], []
        dim = in_dim
        for out_dim, kernel, _ in layers:
            blocks.append(nn.Sequential(
                nn.ConstantPad1d((kernel - 1, 0), 0.0),
                nn.Conv1d(dim, out_dim, kernel),
                nn.Dropout(dropout),
                nn.GroupNorm(1, out_dim),
                nn.ReLU(),
            ))
            residual.append(nn.Identity() if dim == out_dim else nn.Conv1d(dim, out_dim, 1, bias=False))
            dim = out_dim
        self.blocks = nn.ModuleList(blocks)
        self.residual = nn.ModuleList(residual) if skip else None
        self.scale = math.sqrt(residual_scale)

    def forward(self, z: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        """(batch, frames, dim) -> (batch, frames, context_dim)."""
        x = z if padding_mask is None else z.masked_fill(padding_mask.unsqueeze(-1), 0.0)
        x = x.transpose(1, 2)
        for i, block in enumerate(self.blocks):
            y = block(x)
            x = (y + self.residual[i](x)) * self.scale if self.residual is not None else y
        return x.transpose(1, 2)


@dataclass
class FuturePredictionOutput:
    """What `Wav2Vec1ForPreTraining` (and vq-wav2vec) return.

    Attributes:
        logits: (num_pairs, 1 + num_negatives) dot products h_k(c_i) . z; column 0 is the
            true z_{i+k}, over every step k and every i with i + k inside the utterance.
        steps: (num_pairs,) the step k of each row.
        lengths: (batch,) valid frames.
        infonce: score them with cross-entropy (True) or the paper's binary loss.
    """

    logits: Tensor
    steps: Tensor
    lengths: Tensor
    infonce: bool = False


class FuturePredictor(nn.Module):
    """Per-step affine maps h_k and the scores of true and distractor future latents."""

    def __init__(self, context_dim: int, target_dim: int, steps: int, num_negatives: int, infonce: bool = False):
        super().__init__()
        self.steps = steps
        self.num_negatives = num_negatives
        self.infonce = infonce
        self.project_to_steps = nn.Linear(context_dim, steps * target_dim)  # h_k for k = 1..K, stacked

    def forward(self, c: Tensor, z: Tensor, lengths: Tensor, generator: Generator = None,
                negatives_indices: Tensor | None = None) -> FuturePredictionOutput:
        """
        Args:
            c: (batch, frames, context_dim) context vectors.
            z: (batch, frames, dim) targets (latents, or quantized latents).
            lengths: (batch,) valid frames.
            generator: source of the distractors.
            negatives_indices: (num_negatives, valid frames) indices into the flattened
                (batch * frames) grid to use instead of sampling (tests).
        """
        b, t, d = z.shape
        padding = lengths_to_padding_mask(lengths, t)
        if negatives_indices is None:
            _, negatives_indices = sample_negatives(z, self.num_negatives, padding, None, generator)
        n = negatives_indices.shape[0]
        # Distractors on the (batch, frames) grid: row j of the valid frames -> its frame.
        valid = (~padding).reshape(-1)
        neg_grid = z.new_zeros(n, b * t, d)
        neg_grid[:, valid] = z.reshape(b * t, d)[negatives_indices.to(z.device)]
        neg_grid = neg_grid.view(n, b, t, d)
        pred = self.project_to_steps(c).view(b, t, self.steps, d)
        rows, steps = [], []
        for k in range(1, min(self.steps, t - 1) + 1):
            p = pred[:, : t - k, k - 1]  # h_k(c_i), i = 0 .. t-k-1
            ok = (torch.arange(t - k, device=z.device)[None, :] + k) < lengths[:, None]
            pos = (p * z[:, k:]).sum(-1)  # (b, t-k)
            neg = (p.unsqueeze(0) * neg_grid[:, :, k:]).sum(-1)  # (n, b, t-k)
            rows.append(torch.cat([pos[ok].unsqueeze(1), neg[:, ok].transpose(0, 1)], dim=1))
            steps.append(torch.full((int(ok.sum()),), k, device=z.device))
        if rows:
            logits, step_ids = torch.cat(rows), torch.cat(steps)
        else:
            logits, step_ids = z.new_zeros(0, 1 + n), torch.zeros(0, dtype=torch.long, device=z.device)
        return FuturePredictionOutput(logits=logits, steps=step_ids, lengths=lengths, infonce=self.infonce)


class Wav2Vec1Model(nn.Module):
    """Encoder + context network: (batch, samples) -> z, c, frame lengths."""

    def __init__(self, cfg: Wav2Vec1Config):
        super().__init__()
        self.cfg = cfg
        self.feature_extractor = Wav2Vec1Encoder(cfg)
        self.feature_aggregator = ContextNetwork(cfg.conv_dim, cfg.conv_aggregator_layers, cfg.skip_connections_agg,
                                                 cfg.residual_scale, cfg.dropout)

    def output_lengths(self, lengths: Tensor) -> Tensor:
        return self.feature_extractor.output_lengths(lengths)

    def forward(self, waveforms: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Returns z (batch, frames, conv_dim), c (batch, frames, context_dim), (batch,) lengths."""
        z, frame_lengths = self.feature_extractor(waveforms, lengths)
        c = self.feature_aggregator(z, lengths_to_padding_mask(frame_lengths, z.shape[1]))
        return z, c, frame_lengths

    def extract_features(self, waveforms: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The paper's downstream features: context vectors c (batch, frames, context_dim)."""
        _, c, frame_lengths = self(waveforms, lengths)
        return c, frame_lengths

    @property
    def feature_dim(self) -> int:
        return self.cfg.context_dim


class Wav2Vec1ForPreTraining(nn.Module):
    """wav2vec 1.0 with its future-prediction head; returns scores, the loss is
    `w2v.train.objectives.future_prediction_loss`."""

    def __init__(self, cfg: Wav2Vec1Config):
        super().__init__()
        self.cfg = cfg
        self.wav2vec = Wav2Vec1Model(cfg)
        self.predictor = FuturePredictor(cfg.context_dim, cfg.conv_dim, cfg.prediction_steps, cfg.num_negatives,
                                         cfg.infonce)

    def set_num_updates(self, num_updates: int) -> None:
        pass

    def forward(self, waveforms: Tensor, lengths: Tensor | None = None, generator: Generator = None,
                negatives_indices: Tensor | None = None) -> FuturePredictionOutput:
        z, c, frame_lengths = self.wav2vec(waveforms, lengths)
        return self.predictor(c, z, frame_lengths, generator, negatives_indices)

    def extract_features(self, waveforms: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Context vectors c (batch, frames, context_dim): the downstream features."""
        return self.wav2vec.extract_features(waveforms, lengths)

    @property
    def feature_dim(self) -> int:
        return self.cfg.context_dim


__all__ = ["ContextNetwork", "FuturePredictionOutput", "FuturePredictor", "Wav2Vec1Config", "Wav2Vec1Encoder",
           "Wav2Vec1ForPreTraining", "Wav2Vec1Model"]
