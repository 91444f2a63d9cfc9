"""Gumbel-softmax product quantization (Baevski et al. 2020, section 2, "quantization module").

G codebooks of V entries; a conv-feature frame picks one entry per codebook and the
picked entries are concatenated. Training picks with hard Gumbel-softmax (straight-through
gradient), evaluation with argmax. The two perplexities feed the diversity loss
(section 3.2) and the training logs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass
class QuantizerOutput:
    """`quantized` (batch, frames, codevector_dim); perplexities are summed over groups, so
    they lie in [G, G*V] (fairseq/HF convention, matching `num_vars` = G*V)."""

    quantized: Tensor
    code_perplexity: Tensor
    prob_perplexity: Tensor
    num_vars: int
    temperature: float | Tensor  # a 0-dim tensor when passed as one


def _one_hot(index: Tensor, classes: int, dtype: torch.dtype) -> Tensor:
    """`F.one_hot` without its range check, which reads the indices back to the host."""
    return torch.zeros(*index.shape, classes, dtype=dtype, device=index.device).scatter_(-1, index.unsqueeze(-1), 1)


def _perplexity(probs: Tensor) -> Tensor:
    """probs (groups, V) -> exp(entropy) per group, summed over groups. The 1e-7 is fairseq's."""
    return torch.exp(-(probs * torch.log(probs + 1e-7)).sum(-1)).sum()


def gumbel_uniforms(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device,
                    dtype: torch.dtype = torch.float32) -> Tensor:
    """The uniforms behind the Gumbel noise, drawn on the generator's device (the training
    loop's generators live on the CPU, so that runs are reproducible across devices) and moved
    to `device`."""
    where = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=where, dtype=dtype).to(device)


def gumbel_softmax_hard(logits: Tensor, tau: float | Tensor, generator: torch.Generator | None = None,
                        uniforms: Tensor | None = None) -> Tensor:
    """Hard one-hot sample with straight-through gradient of the soft sample.

    Same distribution as `F.gumbel_softmax(hard=True)`, but the noise comes from `generator`
    so that a resumed run draws the same codes (`gumbel_uniforms`), or from `uniforms` drawn
    beforehand (a compiled graph takes its randomness as inputs; `tau` may then be a tensor,
    so that the decaying temperature does not recompile it).
    """
    u = gumbel_uniforms(logits.shape, generator, logits.device, logits.dtype) if uniforms is None else uniforms
    tiny = torch.finfo(logits.dtype).tiny
    gumbels = -torch.log((-torch.log(u.clamp_min(tiny))).clamp_min(tiny))
    soft = ((logits + gumbels) / tau).softmax(-1)
    hard = _one_hot(soft.argmax(-1), logits.shape[-1], soft.dtype)
    return hard - soft.detach() + soft


class GumbelVectorQuantizer(nn.Module):
    """
    Args:
        in_dim: conv feature channels C.
        num_groups: G codebooks.
        num_vars: V entries per codebook.
        codevector_dim: concatenated output size (G * per-group size).
        temp: (start, end, decay) of the Gumbel temperature, decayed per update.
    """

    def __init__(
        self,
        in_dim: int,
        num_groups: int,
        num_vars: int,
        codevector_dim: int,
        temp: tuple[float, float, float] = (2.0, 0.5, 0.999995),
    ):
        super().__init__()
        if codevector_dim % num_groups:
            raise ValueError("codevector_dim must be divisible by num_groups")
        self.num_groups = num_groups
        self.num_vars_per_group = num_vars
        self.max_temp, self.min_temp, self.temp_decay = temp
        self.temperature = float(self.max_temp)
        # (1, G*V, d/G) as HF `codevectors` (fairseq `vars`).
        self.codevectors = nn.Parameter(torch.empty(1, num_groups * num_vars, codevector_dim // num_groups))
        self.weight_proj = nn.Linear(in_dim, num_groups * num_vars)
        nn.init.uniform_(self.codevectors)
        nn.init.normal_(self.weight_proj.weight, mean=0.0, std=1.0)
        nn.init.zeros_(self.weight_proj.bias)

    @property
    def num_vars(self) -> int:
        """Total entries G*V (the diversity loss's normaliser)."""
        return self.num_groups * self.num_vars_per_group

    def set_num_updates(self, num_updates: int) -> None:
        self.temperature = max(self.max_temp * self.temp_decay**num_updates, self.min_temp)

    def sample_codevectors(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` random codewords (one uniformly drawn entry per group, concatenated): fairseq's
        ``sample_from_codebook``, the source of "codebook negatives".

        Returns:
            (n, codevector_dim).
        """
        where = generator.device if generator is not None else self.codevectors.device
        idx = torch.randint(self.num_vars_per_group, (n, self.num_groups), generator=generator, device=where)
        idx = idx.to(self.codevectors.device) + torch.arange(self.num_groups, device=self.codevectors.device) * (
            self.num_vars_per_group)
        return self.codevectors[0][idx].reshape(n, -1)

    @torch.no_grad()
    def code_indices(self, x: Tensor) -> Tensor:
        """(batch, frames, in_dim) conv features -> (batch, frames, G): the entry each codebook
        picks at evaluation (argmax), for codebook-usage statistics."""
        b, t, _ = x.shape
        return self.weight_proj(x).view(b, t, self.num_groups, self.num_vars_per_group).argmax(-1)

    def forward(
        self, x: Tensor, mask: Tensor | None = None, generator: torch.Generator | None = None,
        uniforms: Tensor | None = None, temperature: Tensor | None = None,
    ) -> QuantizerOutput:
        """
        Args:
            x: (batch, frames, in_dim) conv features.
            mask: (batch, frames) bool, True at frames that count in the perplexities
                (unpadded frames, or the masked frames during pre-training as HF). None = all.
            generator: source of the Gumbel noise (training only).
            uniforms: (batch * frames, G, V) fp32 uniforms of the Gumbel noise instead
                (`gumbel_uniforms`; for compiled callers).
            temperature: the current temperature as a tensor (compiled callers), else
                `self.temperature`.

        Returns:
            QuantizerOutput with `quantized` (batch, frames, codevector_dim).
        """
        b, t, _ = x.shape
        g, v = self.num_groups, self.num_vars_per_group
        logits = self.weight_proj(x).view(b * t, g, v)
        flat_mask = None if mask is None else mask.reshape(b * t)

        # Perplexities in fp32; statistics over the counted frames only.
        # Weighted by the mask rather than indexed with it: no host sync, no copy.
        flat = logits.float()
        weight = flat.new_ones(b * t) if flat_mask is None else flat_mask.to(flat.dtype)
        n = weight.sum().clamp(min=1)
        weight = weight[:, None, None]
        hard_probs = (_one_hot(flat.argmax(-1), v, flat.dtype) * weight).sum(0) / n
        code_perplexity = _perplexity(hard_probs)
        avg_probs = (flat.softmax(-1) * weight).sum(0) / n
        prob_perplexity = _perplexity(avg_probs)

        if self.training:
            tau = self.temperature if temperature is None else temperature
            onehot = gumbel_softmax_hard(logits.float(), tau, generator, uniforms).type_as(logits)
        else:
            onehot = _one_hot(logits.argmax(-1), v, logits.dtype)
        # (b*t, g, v, 1) * (g, v, d/g) summed over v -> (b*t, g, d/g)
        codebook = self.codevectors.view(g, v, -1)
        quantized = torch.einsum("ngv,gvd->ngd", onehot, codebook.to(onehot.dtype))
        return QuantizerOutput(
            quantized=quantized.reshape(b, t, -1),
            code_perplexity=code_perplexity,
            prob_perplexity=prob_perplexity,
            num_vars=self.num_vars,
            # compiled callers pass the temperature as a tensor: reading the float attribute there
            # would guard the graph on its value and recompile it once it decays
            temperature=self.temperature if temperature is None else temperature,
        )


__all__ = ["GumbelVectorQuantizer", "QuantizerOutput", "gumbel_softmax_hard", "gumbel_uniforms"]
