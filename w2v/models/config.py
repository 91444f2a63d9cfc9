"""The wav2vec 2.0 model configuration and its YAML presets.

One frozen dataclass describes every wav2vec 2.0 variant (BASE, LARGE, LARGE-LV60/XLS-R,
and our CPU-sized `tiny`). Field names follow fairseq's `Wav2Vec2Config`; each field's
comment names the fairseq and Hugging Face (`transformers.Wav2Vec2Config`) spelling, so
that checkpoint conversion (`w2v/interop/`) is a table. Defaults are the released BASE
model (Baevski et al. 2020, section 4.2; 12 heads as in the released checkpoints).

Presets live in `conf/model/<name>.yaml` and only list what differs from the defaults.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ConvLayers = tuple[tuple[int, int, int], ...]

# BASE feature encoder: 7 blocks, total stride 320 samples (20 ms at 16 kHz), receptive
# field 400 samples (25 ms).
BASE_CONV_LAYERS: ConvLayers = ((512, 10, 5),) + ((512, 3, 2),) * 4 + ((512, 2, 2),) * 2

REPO_ROOT = Path(__file__).resolve().parents[2]
PRESET_DIR = REPO_ROOT / "conf" / "model"


@dataclass(frozen=True)
class Wav2Vec2Config:
    """Hyper-parameters of wav2vec 2.0 (feature encoder, Transformer, quantizer, masking)."""

    # --- convolutional feature encoder (paper section 2, "feature encoder") ---
    conv_feature_layers: ConvLayers = BASE_CONV_LAYERS  # fairseq conv_feature_layers (a string there) / HF conv_dim, conv_kernel, conv_stride
    conv_bias: bool = False  # fairseq conv_bias / HF conv_bias
    extractor_mode: str = "default"  # fairseq extractor_mode ("default" | "layer_norm") / HF feat_extract_norm ("group" | "layer")

    # --- Transformer context network ---
    encoder_layers: int = 12  # fairseq encoder_layers / HF num_hidden_layers
    encoder_embed_dim: int = 768  # fairseq encoder_embed_dim / HF hidden_size
    encoder_ffn_embed_dim: int = 3072  # fairseq encoder_ffn_embed_dim / HF intermediate_size
    encoder_attention_heads: int = 12  # fairseq encoder_attention_heads / HF num_attention_heads
    activation_fn: str = "gelu"  # fairseq activation_fn / HF hidden_act
    layer_norm_first: bool = False  # fairseq layer_norm_first / HF do_stable_layer_norm
    conv_pos: int = 128  # fairseq conv_pos / HF num_conv_pos_embeddings
    conv_pos_groups: int = 16  # fairseq conv_pos_groups / HF num_conv_pos_embedding_groups
    adapter_dim: int = 0  # MMS per-language bottleneck adapters (0: none); fairseq adp_dim / HF adapter_attn_dim (None for 0)

    # --- regularisation ---
    dropout: float = 0.1  # fairseq dropout / HF hidden_dropout
    attention_dropout: float = 0.1  # fairseq attention_dropout / HF attention_dropout
    activation_dropout: float = 0.0  # fairseq activation_dropout / HF activation_dropout
    dropout_input: float = 0.1  # fairseq dropout_input / HF feat_proj_dropout
    dropout_features: float = 0.1  # fairseq dropout_features / HF feat_quantizer_dropout
    layerdrop: float = 0.05  # fairseq encoder_layerdrop / HF layerdrop
    feature_grad_mult: float = 0.1  # fairseq feature_grad_mult / HF: none (HF only freezes the feature encoder)

    # --- quantization module and contrastive task (paper sections 2.2, 3.2) ---
    final_dim: int = 256  # fairseq final_dim / HF proj_codevector_dim
    latent_vars: int = 320  # fairseq latent_vars / HF num_codevectors_per_group
    latent_groups: int = 2  # fairseq latent_groups / HF num_codevector_groups
    latent_dim: int = 0  # fairseq latent_dim (0 -> final_dim) / HF codevector_dim
    latent_temp: tuple[float, float, float] = (2.0, 0.5, 0.999995)  # fairseq latent_temp (start, end, decay) / HF: none (trainer sets gumbel temperature)
    quantize_targets: bool = True  # fairseq quantize_targets / HF: none (always quantizes)
    num_negatives: int = 100  # fairseq num_negatives / HF num_negatives
    cross_sample_negatives: int = 0  # fairseq cross_sample_negatives / HF: none
    codebook_negatives: int = 0  # fairseq codebook_negatives / HF: none
    logit_temp: float = 0.1  # fairseq logit_temp / HF contrastive_logits_temperature

    # --- masking (paper section 3.1) ---
    mask_prob: float = 0.65  # fairseq mask_prob / HF mask_time_prob
    mask_length: int = 10  # fairseq mask_length / HF mask_time_length
    mask_min_masks: int = 2  # fairseq: hard-coded min_masks=2 in Wav2Vec2Model.apply_mask / HF mask_time_min_masks
    mask_channel_prob: float = 0.0  # fairseq mask_channel_prob / HF mask_feature_prob
    mask_channel_length: int = 10  # fairseq mask_channel_length / HF mask_feature_length

    def __post_init__(self) -> None:
        # YAML and JSON give lists; the dataclass is frozen and hashable with tuples.
        object.__setattr__(
            self, "conv_feature_layers", tuple(tuple(int(v) for v in layer) for layer in self.conv_feature_layers)
        )
        object.__setattr__(self, "latent_temp", tuple(float(v) for v in self.latent_temp))
        if self.extractor_mode not in ("default", "layer_norm"):
            raise ValueError(f"extractor_mode must be 'default' or 'layer_norm', got {self.extractor_mode!r}")
        if any(len(layer) != 3 for layer in self.conv_feature_layers):
            raise ValueError("conv_feature_layers must be (dim, kernel, stride) triples")
        if len(self.latent_temp) != 3:
            raise ValueError("latent_temp must be (start, end, decay)")
        if self.encoder_embed_dim % self.encoder_attention_heads:
            raise ValueError("encoder_embed_dim must be divisible by encoder_attention_heads")
        if self.encoder_embed_dim % self.conv_pos_groups:
            raise ValueError("encoder_embed_dim must be divisible by conv_pos_groups")
        if self.adapter_dim < 0:
            raise ValueError(f"adapter_dim must be >= 0, got {self.adapter_dim}")
        if self.codevector_dim % self.latent_groups:
            raise ValueError("latent_dim (or final_dim) must be divisible by latent_groups")

    @property
    def conv_dim(self) -> int:
        """Channels C of the last feature-encoder layer (the quantizer's input)."""
        return self.conv_feature_layers[-1][0]

    @property
    def codevector_dim(self) -> int:
        """Dimension of a concatenated quantized vector (fairseq `vq_dim`)."""
        return self.latent_dim if self.latent_dim > 0 else self.final_dim

    def to_dict(self) -> dict[str, Any]:
        """Plain lists/scalars, safe for YAML, JSON and `torch.save`."""
        out = dataclasses.asdict(self)
        out["conv_feature_layers"] = [list(layer) for layer in self.conv_feature_layers]
        out["latent_temp"] = list(self.latent_temp)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "<dict>") -> Wav2Vec2Config:
        """Inverse of `to_dict`; an unknown key raises `ValueError` naming it and `source`."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown Wav2Vec2Config key(s) {unknown} in {source}")
        return cls(**d)

    def replace(self, **overrides: Any) -> Wav2Vec2Config:
        return self.from_dict({**self.to_dict(), **overrides}, source="overrides")


def load_model_config(name_or_path: str | Path, **overrides: Any):
    """Read a preset by name (`conf/model/<name>.yaml`) or a YAML file by path.

    Args:
        name_or_path: "tiny", "base", "large", "hubert_base", ... or a path to a YAML file.
        **overrides: fields replacing the file's values (e.g. fine-tuning `mask_prob=0.5`).

    Returns:
        The frozen config: `Wav2Vec2Config`, or the config of the preset's `family:` (see
        `w2v.models.families`). Unknown keys (in the file or the overrides) raise `ValueError`.
    """
    path = Path(name_or_path)
    if not path.suffix and not path.is_file():
        path = PRESET_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"no model config {name_or_path!r} (looked for {path})")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a mapping of Wav2Vec2Config fields")
    family = data.pop("family", "wav2vec2")
    if family != "wav2vec2":
        from w2v.models.families import config_class

        cls = config_class(family, str(path))
        cfg = cls.from_dict(data, source=str(path))
        return cfg.replace(**overrides) if overrides else cfg
    cfg = Wav2Vec2Config.from_dict(data, source=str(path))
    if overrides:
        cfg = Wav2Vec2Config.from_dict({**cfg.to_dict(), **overrides}, source=f"overrides for {path}")
    return cfg


__all__ = ["BASE_CONV_LAYERS", "Wav2Vec2Config", "load_model_config"]
