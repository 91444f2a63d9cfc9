"""HuBERT (Hsu et al. 2021): the wav2vec 2.0 encoder trained to predict k-means cluster labels
of masked frames.

Same components as wav2vec 2.0 (`Wav2Vec2Model`: conv encoder, projection, span masking,
Transformer); no quantizer. The head projects each frame to `final_dim` and scores it against
one learned embedding per cluster by cosine similarity / `label_logit_temp` (section 3,
eq. 2). Targets come from k-means on MFCCs (iteration 1), then on a layer of the previous
iteration's model (`w2v.train.targets`). Loss: `w2v.train.objectives.hubert_loss`.
Fine-tuning is wav2vec 2.0's (`Wav2Vec2ForCTC` loads the `wav2vec2.*` weights).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from w2v.models.config import Wav2Vec2Config
from w2v.models.families import FamilyConfig
from w2v.models.masking import Generator
from w2v.models.wav2vec2 import Wav2Vec2Model


@dataclass(frozen=True)
class HubertConfig(FamilyConfig, Wav2Vec2Config):
    """wav2vec 2.0's encoder fields plus HuBERT's targets and head (quantizer fields unused)."""

    family: ClassVar[str] = "hubert"
    _tuple_fields: ClassVar[dict[str, int]] = {"conv_feature_layers": 2, "latent_temp": 1, "kmeans_clusters": 1}

    kmeans_clusters: tuple[int, ...] = (100, 500)  # clusters of each iteration's targets (paper: 100 MFCC, 500 layer 6)
    iteration: int = 1  # which of them this model predicts (set by the pre-training driver)
    label_layer: int = 6  # fairseq: features of the iteration-1 model's 6th Transformer layer
    mfcc_coefficients: int = 13  # iteration 1: MFCC + deltas + delta-deltas (39 dims)
    label_logit_temp: float = 0.1  # fairseq logit_temp
    pred_masked_weight: float = 1.0  # fairseq pred_masked_weight
    pred_nomask_weight: float = 0.0  # fairseq pred_nomask_weight (alpha = 1 in the paper: masked frames only)

    def __post_init__(self) -> None:
        super().__post_init__()
        self._freeze_tuples()
        if not self.kmeans_clusters or not 1 <= self.iteration <= len(self.kmeans_clusters):
            raise ValueError(f"iteration {self.iteration} needs kmeans_clusters for it, got {self.kmeans_clusters}")
        if not 0 <= self.label_layer <= self.encoder_layers:
            raise ValueError(f"label_layer must be in [0, {self.encoder_layers}]")
        total_stride = 1
        for _, _, s in self.conv_feature_layers:
            total_stride *= s
        if total_stride != 320:
            raise ValueError("HuBERT targets are computed at a 20 ms frame rate: the conv encoder's stride must be 320")

    @property
    def num_classes(self) -> int:
        return self.kmeans_clusters[self.iteration - 1]


@dataclass
class HubertOutput:
    """`logits` (batch, frames, num_classes) cosine similarity / temperature for every frame;
    `mask_indices`, `padding_mask` (batch, frames) bool; `features_pen` scalar."""

    logits: Tensor
    mask_indices: Tensor
    padding_mask: Tensor
    features_pen: Tensor
    lengths: Tensor


class HubertForPreTraining(nn.Module):
    def __init__(self, cfg: HubertConfig):
        super().__init__()
        self.cfg = cfg
        self.wav2vec2 = Wav2Vec2Model(cfg)
        self.final_proj = nn.Linear(cfg.encoder_embed_dim, cfg.final_dim)
        self.label_embs = nn.Parameter(torch.empty(cfg.num_classes, cfg.final_dim).uniform_())  # fairseq label_embs_concat

    def set_num_updates(self, num_updates: int) -> None:
        pass

    def forward(self, waveforms: Tensor, lengths: Tensor | None = None, generator: Generator = None,
                mask_indices: Tensor | None = None) -> HubertOutput:
        out = self.wav2vec2(waveforms, lengths, mask=True, mask_indices=mask_indices, generator=generator)
        if out.mask_indices is None:
            raise ValueError("HuBERT pre-training needs masks: set mask_prob > 0 or pass mask_indices")
        proj = self.final_proj(out.hidden)
        # cosine similarity to every label embedding, as one matmul of unit vectors
        logits = F.normalize(proj.float(), dim=-1, eps=1e-8) @ F.normalize(self.label_embs.float(), dim=-1, eps=1e-8).T
        return HubertOutput(logits=logits / self.cfg.label_logit_temp, mask_indices=out.mask_indices,
                            padding_mask=out.padding_mask, features_pen=out.features_pen, lengths=out.lengths)

    @torch.no_grad()
    def layer_features(self, waveforms: Tensor, lengths: Tensor | None, layer: int) -> tuple[Tensor, Tensor]:
        """Hidden states of Transformer layer `layer` (0 = its input) without masking: the
        features clustered into the next iteration's targets."""
        out = self.wav2vec2(waveforms, lengths, output_hidden_states=True)
        return out.layer_results[layer], out.lengths


__all__ = ["HubertConfig", "HubertForPreTraining", "HubertOutput"]
