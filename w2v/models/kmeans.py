"""k-means, twice in the family.

- `KmeansVectorQuantizer`: vq-wav2vec's online k-means quantizer (Baevski et al. 2019,
  section 3.1.2): nearest codeword per group, straight-through gradient to the encoder,
  codebook loss ||sg(z) - z_hat||^2 plus commitment loss gamma * ||z - sg(z_hat)||^2.
- `kmeans_fit` / `kmeans_assign`: offline, seeded mini-batch k-means (k-means++ start, then
  Sculley's per-centroid learning rates) for HuBERT's frame targets (Hsu et al. 2021, section 3).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class KmeansOutput:
    """`quantized` (batch, frames, dim): the codewords, with the straight-through gradient to the
    input; `codes` (batch, frames, groups); `kmeans_loss` scalar; perplexity of the used codes."""

    quantized: Tensor
    codes: Tensor
    kmeans_loss: Tensor
    code_perplexity: Tensor
    num_vars: int


class KmeansVectorQuantizer(nn.Module):
    """
    Args:
        dim: input (and output) channels, split into `groups` equal parts.
        groups: G codebooks.
        num_vars: V codewords per codebook.
        gamma: weight of the commitment term (0.25 in the paper).
        project: first a grouped 1x1 projection and a per-group norm (fairseq's `projection`).

    The codewords start as fairseq's small random vectors, but the first training batch
    replaces them with its own (projected) frames, evenly spaced over the valid ones: encoder
    outputs share a large common component, so against small random codewords every frame
    picks the same one per group and the others never move (measured on the demo: code
    perplexity 2.0 of 128 after 200 updates). The flag is a buffer, so a resumed run keeps it.
    """

    def __init__(self, dim: int, groups: int, num_vars: int, gamma: float = 0.25, project: bool = True):
        super().__init__()
        if dim % groups:
            raise ValueError(f"dim {dim} must be divisible by groups {groups}")
        self.groups, self.num_vars_per_group, self.gamma = groups, num_vars, gamma
        self.embedding = nn.Parameter(0.01 * torch.randn(groups, num_vars, dim // groups))  # fairseq (V, G, d/G)
        self.projection = nn.Sequential(nn.Conv1d(dim, dim, 1, groups=groups, bias=False),
                                        nn.GroupNorm(groups, dim)) if project else None
        self.register_buffer("initialized", torch.tensor(False))

    @torch.no_grad()
    def _init_from(self, ze: Tensor) -> None:
        """Codewords <- evenly spaced rows of ze (n, G, d/G); repeated if there are fewer than V."""
        idx = torch.linspace(0, ze.shape[0] - 1, self.num_vars_per_group, device=ze.device).round().long()
        self.embedding.copy_(ze[idx].transpose(0, 1).to(self.embedding.dtype))
        self.initialized.fill_(True)

    @property
    def num_vars(self) -> int:
        return self.groups * self.num_vars_per_group

    def set_num_updates(self, num_updates: int) -> None:
        pass

    def project(self, x: Tensor) -> Tensor:
        """(batch, frames, dim) encoder output -> the vectors that are quantized."""
        return x if self.projection is None else self.projection(x.transpose(1, 2)).transpose(1, 2)

    def codes(self, x: Tensor) -> Tensor:
        """(batch, frames, dim) projected vectors -> (batch, frames, groups) nearest codeword per group."""
        b, t, _ = x.shape
        ze = x.float().reshape(b * t, self.groups, -1)
        emb = self.embedding.float()
        # ||x - e||^2 = ||x||^2 - 2 x.e + ||e||^2, without the (n, G, V, d) difference tensor.
        dist = ze.pow(2).sum(-1, keepdim=True) - 2 * torch.einsum("ngd,gvd->ngv", ze, emb) + emb.pow(2).sum(-1)[None]
        return dist.argmin(-1).view(b, t, self.groups)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> KmeansOutput:
        """
        Args:
            x: (batch, frames, dim) encoder output.
            mask: (batch, frames) bool, True at frames that count in the losses (valid frames).
        """
        x = self.project(x)
        b, t, d = x.shape
        sel = torch.ones(b, t, dtype=torch.bool, device=x.device) if mask is None else mask
        if self.training and not bool(self.initialized) and bool(sel.any()):
            self._init_from(x[sel].detach().float().reshape(-1, self.groups, d // self.groups))
        codes = self.codes(x)
        ze = x.reshape(b, t, self.groups, -1)
        zq = self.embedding[torch.arange(self.groups, device=x.device), codes].to(x.dtype)  # (b, t, G, d/G)
        quantized = (zq.detach() + ze - ze.detach()).reshape(b, t, d)  # value zq, gradient to ze
        codebook = F.mse_loss(zq[sel].float(), ze[sel].detach().float())
        commitment = F.mse_loss(ze[sel].float(), zq[sel].detach().float())
        used = codes[sel]  # (n, G)
        counts = F.one_hot(used, self.num_vars_per_group).float().sum(0) / max(used.shape[0], 1)  # (G, V)
        ppl = torch.exp(-(counts * torch.log(counts + 1e-7)).sum(-1)).sum()
        return KmeansOutput(quantized=quantized, codes=codes, kmeans_loss=codebook + self.gamma * commitment,
                            code_perplexity=ppl, num_vars=self.num_vars)


def kmeans_assign(x: Tensor, centroids: Tensor, chunk: int = 65536) -> Tensor:
    """(n, dim) points -> (n,) index of the nearest centroid (squared Euclidean)."""
    out = []
    c = centroids.float()
    c2 = c.pow(2).sum(-1)
    for i in range(0, x.shape[0], chunk):
        xi = x[i:i + chunk].float()
        out.append((c2[None] - 2 * xi @ c.T).argmin(-1))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def _kmeans_pp(x: Tensor, k: int, rng: np.random.Generator) -> Tensor:
    """k-means++ seeding: each next centroid drawn with probability ~ squared distance."""
    n = x.shape[0]
    centroids = [x[int(rng.integers(n))]]
    d2 = (x - centroids[0]).pow(2).sum(-1)
    for _ in range(1, k):
        p = (d2 / d2.sum()).double().numpy() if float(d2.sum()) > 0 else np.full(n, 1.0 / n)
        centroids.append(x[int(rng.choice(n, p=p / p.sum()))])
        d2 = torch.minimum(d2, (x - centroids[-1]).pow(2).sum(-1))
    return torch.stack(centroids)


def _lloyd(x: Tensor, centroids: Tensor, iters: int) -> tuple[Tensor, float]:
    """A few full k-means steps; returns the centroids and their inertia (sum of squared distances)."""
    for _ in range(iters):
        assign = kmeans_assign(x, centroids)
        cnt = torch.bincount(assign, minlength=centroids.shape[0]).float()
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        centroids = torch.where(cnt[:, None] > 0, sums / cnt.clamp(min=1)[:, None], centroids)
    inertia = float((x - centroids[kmeans_assign(x, centroids)]).pow(2).sum())
    return centroids, inertia


def kmeans_fit(x: Tensor, k: int, seed: int = 0, iters: int = 100, batch_size: int = 10000,
               init_size: int = 20000, n_init: int = 3) -> Tensor:
    """Mini-batch k-means (Sculley 2010) as HuBERT's label step uses (sklearn MiniBatchKMeans there).

    Like sklearn, the start is the best (lowest inertia on the init sample) of ``n_init``
    k-means++ seedings, each refined by a few full k-means steps on that sample: one seeding
    alone too often leaves two centroids in one cluster.

    Args:
        x: (n, dim) features (float).
        k: clusters; more than distinct points is an error.
        seed: the only source of randomness.
        iters: mini-batch steps.
        batch_size, init_size: points per step, and for the k-means++ start.
        n_init: seedings tried.

    Returns:
        (k, dim) centroids.
    """
    x = x.float().cpu()
    n = x.shape[0]
    if n < k:
        raise ValueError(f"k-means: {n} feature frames cannot make {k} clusters")
    rng = np.random.default_rng(seed)
    init = x[torch.from_numpy(rng.choice(n, min(n, max(init_size, k)), replace=False))]
    starts = [_lloyd(init, _kmeans_pp(init, k, rng), 10) for _ in range(n_init)]
    centroids = min(starts, key=lambda s: s[1])[0].clone()
    counts = torch.zeros(k)
    for _ in range(iters):
        batch = x[torch.from_numpy(rng.choice(n, min(n, batch_size), replace=False))]
        assign = kmeans_assign(batch, centroids)
        sums = torch.zeros_like(centroids).index_add_(0, assign, batch)
        cnt = torch.bincount(assign, minlength=k).float()
        counts += cnt
        # per-centroid rate 1/count: each centroid is the running mean of the points it was given
        centroids += (sums - cnt[:, None] * centroids) / counts.clamp(min=1)[:, None]
    return centroids


__all__ = ["KmeansOutput", "KmeansVectorQuantizer", "kmeans_assign", "kmeans_fit"]
