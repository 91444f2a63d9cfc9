"""Our `Wav2Vec2Config` as a Hugging Face `transformers.Wav2Vec2Config`, and the state-dict key table.

Our `Wav2Vec2Model` / `Wav2Vec2ForPreTraining` / `Wav2Vec2ForCTC` state dicts already use
Hugging Face's key names (both use `torch.nn.utils.parametrizations.weight_norm` on the
positional convolution), so a state dict moves across with `load_state_dict(strict=True)`.
Older checkpoints (saved with the deprecated `torch.nn.utils.weight_norm`, e.g. most Hub
checkpoints) spell the positional convolution's weight-norm factors `weight_g`/`weight_v`:
`rename_legacy_keys` maps them.

`transformers` is imported inside `to_hf_config` only, so `w2v` does not need it installed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from w2v.models.config import Wav2Vec2Config

if TYPE_CHECKING:  # pragma: no cover
    import transformers

# Legacy weight-norm key suffix -> parametrization key suffix (ours and current HF's).
LEGACY_WEIGHT_NORM_KEYS: dict[str, str] = {
    ".weight_g": ".parametrizations.weight.original0",
    ".weight_v": ".parametrizations.weight.original1",
}


def rename_legacy_keys(state_dict: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of `state_dict` with legacy `weight_g`/`weight_v` keys renamed (others unchanged)."""
    out = {}
    for key, value in state_dict.items():
        for old, new in LEGACY_WEIGHT_NORM_KEYS.items():
            if key.endswith(old):
                key = key[: -len(old)] + new
                break
        out[key] = value
    return out


def to_hf_config(cfg: Wav2Vec2Config, vocab_size: int | None = None) -> transformers.Wav2Vec2Config:
    """The `transformers.Wav2Vec2Config` describing the same network as `cfg`.

    Args:
        cfg: our config.
        vocab_size: output units of a CTC head (HF `vocab_size`), or None to keep HF's default.

    Returns:
        A Hugging Face config; `Wav2Vec2ForPreTraining(hf)` / `Wav2Vec2ForCTC(hf)` built from it
        has exactly our parameter names and shapes.

    Raises:
        ValueError: for settings HF cannot represent (unquantized targets, cross-sample or
            codebook negatives, adapters in post-LN blocks). Training-only fairseq settings without an HF counterpart
            (feature_grad_mult, latent_temp) are dropped.
    """
    from transformers import Wav2Vec2Config as HFConfig

    if not cfg.quantize_targets:
        raise ValueError("Hugging Face's Wav2Vec2ForPreTraining always quantizes targets (quantize_targets=False)")
    if cfg.cross_sample_negatives or cfg.codebook_negatives:
        raise ValueError("Hugging Face has no cross-sample or codebook negatives")
    if cfg.adapter_dim and not cfg.layer_norm_first:
        raise ValueError("Hugging Face has language adapters only in pre-LN blocks (layer_norm_first); "
                         "this model has adapter_dim > 0 with post-LN blocks")
    dims, kernels, strides = zip(*cfg.conv_feature_layers)
    extra: dict[str, Any] = {} if vocab_size is None else {"vocab_size": vocab_size}
    return HFConfig(
        conv_dim=list(dims),
        conv_kernel=list(kernels),
        conv_stride=list(strides),
        conv_bias=cfg.conv_bias,
        feat_extract_norm="layer" if cfg.extractor_mode == "layer_norm" else "group",
        feat_extract_activation="gelu",
        num_hidden_layers=cfg.encoder_layers,
        hidden_size=cfg.encoder_embed_dim,
        intermediate_size=cfg.encoder_ffn_embed_dim,
        num_attention_heads=cfg.encoder_attention_heads,
        hidden_act=cfg.activation_fn,
        do_stable_layer_norm=cfg.layer_norm_first,
        num_conv_pos_embeddings=cfg.conv_pos,
        num_conv_pos_embedding_groups=cfg.conv_pos_groups,
        layer_norm_eps=1e-5,
        hidden_dropout=cfg.dropout,
        attention_dropout=cfg.attention_dropout,
        activation_dropout=cfg.activation_dropout,
        feat_proj_dropout=cfg.dropout_input,
        feat_quantizer_dropout=cfg.dropout_features,
        layerdrop=cfg.layerdrop,
        num_codevectors_per_group=cfg.latent_vars,
        num_codevector_groups=cfg.latent_groups,
        codevector_dim=cfg.codevector_dim,
        proj_codevector_dim=cfg.final_dim,
        num_negatives=cfg.num_negatives,
        contrastive_logits_temperature=cfg.logit_temp,
        diversity_loss_weight=0.1,
        mask_time_prob=cfg.mask_prob,
        mask_time_length=cfg.mask_length,
        mask_time_min_masks=cfg.mask_min_masks,
        mask_feature_prob=cfg.mask_channel_prob,
        mask_feature_length=cfg.mask_channel_length,
        adapter_attn_dim=cfg.adapter_dim or None,
        **extra,
    )


__all__ = ["LEGACY_WEIGHT_NORM_KEYS", "rename_legacy_keys", "to_hf_config"]
