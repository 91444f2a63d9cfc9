"""MMS language adapters (Pratap et al. 2023, "Scaling Speech Technology to 1,000+ Languages").

A small bottleneck (LayerNorm -> Linear down -> ReLU -> Linear up, added to the block's
output) in every Transformer block plus a per-language CTC output layer; per language only
these are trained, the rest of the model stays frozen and is shared by all languages.

Names follow transformers' `Wav2Vec2AttnAdapterLayer` (`encoder.layers.N.adapter_layer.norm`,
`.linear_1`, `.linear_2`) and its `_get_adapters` (those plus `lm_head.*`), so the weights of
one language are exactly the tensors of an `adapter.<lang>.safetensors` file.
"""

from __future__ import annotations

from torch import Tensor, nn

ADAPTER_FILE = "adapter.{}.safetensors"  # transformers' WAV2VEC2_ADAPTER_SAFE_FILE


class AttnAdapterLayer(nn.Module):
    """(batch, frames, dim) -> (batch, frames, dim) residual term; the caller adds it."""

    def __init__(self, dim: int, bottleneck: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=1e-5)
        self.linear_1 = nn.Linear(dim, bottleneck)
        self.act_fn = nn.ReLU()
        self.linear_2 = nn.Linear(bottleneck, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear_2(self.act_fn(self.linear_1(self.norm(x))))


def is_adapter_key(key: str) -> bool:
    """Whether a `Wav2Vec2ForCTC` state-dict key belongs to a language (adapter or CTC head)."""
    return ".adapter_layer." in key or key.startswith("lm_head.")


def adapter_weights(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """One language's tensors out of a full CTC state dict (cloned, contiguous)."""
    return {k: v.detach().clone().contiguous() for k, v in state_dict.items() if is_adapter_key(k)}


def freeze_base(model: nn.Module) -> list[str]:
    """Train only the adapters and the output layer; returns the names left trainable."""
    if not any(".adapter_layer." in n for n, _ in model.named_parameters()):
        raise ValueError("the model has no adapter layers (adapter_dim is 0)")
    model.freeze_feature_encoder()  # also runs the convolutions without building a graph
    trainable = []
    for name, p in model.named_parameters():
        p.requires_grad_(is_adapter_key(name))
        if p.requires_grad:
            trainable.append(name)
    return trainable


def reset_adapter(model: nn.Module) -> None:
    """Fresh adapters (BERT init: N(0, 0.02) weights, zero biases, unit norms) and CTC head."""
    from w2v.models.components import init_bert_params

    for m in model.modules():
        if isinstance(m, AttnAdapterLayer):
            init_bert_params(m)
    nn.init.xavier_uniform_(model.lm_head.weight)
    nn.init.zeros_(model.lm_head.bias)


def load_adapter(model: nn.Module, weights: dict[str, Tensor], where: str = "adapter") -> None:
    """Swap one language's adapters and output layer into `model` (a `Wav2Vec2ForCTC`).

    The output layer is rebuilt when the language has another number of units (as transformers'
    `load_adapter` does). Missing or unknown keys and wrong shapes raise `ValueError` naming `where`.
    """
    expected = {k: v for k, v in model.state_dict().items() if is_adapter_key(k)}
    missing = sorted(set(expected) - set(weights))
    unknown = sorted(set(weights) - set(expected))
    if missing or unknown:
        raise ValueError(f"{where}: adapter weights do not fit the model: missing {missing}, unknown {unknown}")
    n_out = weights["lm_head.weight"].shape[0]
    if n_out != model.lm_head.out_features:
        ref = model.lm_head.weight
        model.lm_head = nn.Linear(model.lm_head.in_features, n_out, device=ref.device, dtype=ref.dtype)
        expected = {k: v for k, v in model.state_dict().items() if is_adapter_key(k)}
    bad = [f"{k}: {tuple(weights[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
           if tuple(weights[k].shape) != tuple(v.shape)]
    if bad:
        raise ValueError(f"{where}: adapter tensor shape mismatch: " + "; ".join(bad))
    model.load_state_dict(weights, strict=False)


__all__ = ["ADAPTER_FILE", "AttnAdapterLayer", "adapter_weights", "freeze_base", "is_adapter_key",
           "load_adapter", "reset_adapter"]
