"""A small CTC acoustic model on frozen pre-trained features: how wav2vec 1.0 and vq-wav2vec
are used downstream (Schneider et al. 2019, section 3.3: the features replace log-mel
filterbanks as the input of a separately trained acoustic model; Baevski et al. 2019,
section 5: the same with BERT features).

The pre-trained model stays frozen and in eval mode; only the LayerNorm + BiLSTM + linear
output layer learn. Its weights are part of the state dict, so a fine-tuned `model.pt` is
self-contained (decoding rebuilds it from the config alone).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from w2v.models.masking import Generator


class FrozenFeatureCTC(nn.Module):
    """
    Args:
        upstream: a pre-training model with `extract_features(waveforms, lengths) -> (features
            (batch, frames, feature_dim), lengths)` and `feature_dim`.
        vocab_size: output units including the CTC blank.
        layers, hidden, dropout: the BiLSTM (hidden units per direction).
    """

    def __init__(self, upstream: nn.Module, vocab_size: int, layers: int = 2, hidden: int = 256,
                 dropout: float = 0.1):
        super().__init__()
        self.upstream = upstream
        self.upstream.requires_grad_(False)
        dim = upstream.feature_dim
        self.norm = nn.LayerNorm(dim)
        self.lstm = nn.LSTM(dim, hidden, num_layers=layers, batch_first=True, bidirectional=True,
                            dropout=dropout if layers > 1 else 0.0)
        self.dropout = nn.Dropout(dropout)
        self.lm_head = nn.Linear(2 * hidden, vocab_size)

    @classmethod
    def from_pretraining(cls, cfg, vocab_size: int, pretrained: dict[str, Tensor] | None = None) -> FrozenFeatureCTC:
        """The family's pre-training model (with `pretrained` weights if given) under a new head."""
        from w2v.models.families import build_pretraining_model

        upstream = build_pretraining_model(cfg)
        if pretrained is not None:
            upstream.load_state_dict(pretrained, strict=True)
        return cls(upstream, vocab_size, cfg.downstream_layers, cfg.downstream_dim, cfg.downstream_dropout)

    def train(self, mode: bool = True):
        super().train(mode)
        self.upstream.eval()  # frozen features: no dropout, no Gumbel noise
        return self

    def freeze_feature_encoder(self) -> None:
        """Already frozen: the whole pre-trained model is."""

    def forward(self, waveforms: Tensor, lengths: Tensor | None = None, apply_mask: bool = False,
                generator: Generator = None, train_encoder: bool = True) -> tuple[Tensor, Tensor]:
        """Same call as `Wav2Vec2ForCTC` (masking and `train_encoder` do not apply: the features
        are frozen). Returns logits (batch, frames, vocab_size) and (batch,) frame lengths."""
        with torch.no_grad():
            feats, flens = self.upstream.extract_features(waveforms, lengths)
        x = self.norm(feats.float())
        packed = pack_padded_sequence(x, flens.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
        y, _ = self.lstm(packed)
        y, _ = pad_packed_sequence(y, batch_first=True, total_length=x.shape[1])
        return self.lm_head(self.dropout(y)), flens


__all__ = ["FrozenFeatureCTC"]
