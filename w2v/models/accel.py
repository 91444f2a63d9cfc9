"""Speed options that change how a wav2vec 2.0 model runs, never what it computes.

- `compile_model`: `torch.compile` the feature encoder's convolution stack and each
  Transformer block (one graph per distinct block shape, shared by all blocks). Inductor
  fuses the fp32 group/layer norms, GELUs and dtype casts around the convolutions and the
  norms, dropouts and residuals around the matrix products. Shapes that change (fine-tuning
  buckets) recompile, then switch to dynamic shapes; crops of one length compile once.
- `use_matmul_convolutions`: the conv feature encoder channels-last as matrix products.
- `set_activation_checkpointing`: recompute each Transformer block during backward instead of
  keeping its activations (LARGE and above: larger batches fit; costs one more forward).

Both leave parameter names, state dicts and the CPU path untouched.
"""

from __future__ import annotations

import torch
from torch import nn

from w2v.models.wav2vec2 import Wav2Vec2Model


def _encoder(model: nn.Module) -> Wav2Vec2Model:
    encoder = model if isinstance(model, Wav2Vec2Model) else getattr(model, "wav2vec2", None)
    if not isinstance(encoder, Wav2Vec2Model):
        raise ValueError(f"expected a wav2vec 2.0 model, got {type(model).__name__}")
    return encoder


def compile_model(model: nn.Module, mode: str | None = None) -> nn.Module:
    """Compile the hot blocks of `model` in place (and return it)."""
    enc = _encoder(model)
    fe = enc.feature_extractor
    fe.convolve = torch.compile(fe.convolve, mode=mode)
    for layer in enc.encoder.layers:
        layer.compile(mode=mode)
    return model


def use_matmul_convolutions(model: nn.Module, enabled: bool = True) -> nn.Module:
    """Run the conv feature encoder channels-last as matrix products (same weights, same
    function; `components._matmul_layer`) instead of cuDNN's Conv1d. Any model with a
    `ConvFeatureEncoder` (wav2vec 2.0, HuBERT, wav2vec 1.0) takes it."""
    from w2v.models.components import ConvFeatureEncoder

    for module in model.modules():
        if isinstance(module, ConvFeatureEncoder):
            module.matmul = enabled
    return model


def set_activation_checkpointing(model: nn.Module, enabled: bool = True) -> nn.Module:
    """Recompute Transformer blocks in backward (training only)."""
    if not enabled and not isinstance(getattr(model, "wav2vec2", model), Wav2Vec2Model):
        return model  # other families have no such blocks: nothing to switch off
    _encoder(model).encoder.activation_checkpointing = enabled
    return model


__all__ = ["compile_model", "set_activation_checkpointing", "use_matmul_convolutions"]
