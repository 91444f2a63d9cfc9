"""The ``lm_nn`` stage: a small word-level Transformer LM on the recipe's LM text, for n-best rescoring.

The wav2vec 2.0 paper's best rows rescore with a Transformer LM; at demo size a 2-layer causal
Transformer over the most frequent words (others map to ``<unk>``) trains on one CPU core in
about a minute. Training stops after ``max_updates`` or ``max_seconds``, whichever comes
first; ``model.pt`` is written atomically and holds the optimizer state, so a rerun resumes
(and a finished model is not retrained).
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import nn
from tqdm import tqdm

from w2v.io import atomic_path

__all__ = ["LMConfig", "TransformerLM", "load_lm", "train_lm"]

log = logging.getLogger(__name__)

BOS, EOS, UNK, PAD = "<s>", "</s>", "<unk>", "<pad>"


@dataclass
class LMConfig:
    vocab_size: int = 8000  # most frequent words kept; the rest are <unk>
    dim: int = 128
    layers: int = 2
    heads: int = 4
    max_len: int = 64  # words per sentence kept (longer ones are cut)
    dropout: float = 0.1
    lr: float = 2e-3
    batch_size: int = 64
    max_updates: int = 600
    max_seconds: float = 60.0
    seed: int = 0


class TransformerLM(nn.Module):
    """Causal Transformer over word ids; ``forward`` gives next-word logits."""

    def __init__(self, vocab: int, cfg: LMConfig):
        super().__init__()
        self.emb = nn.Embedding(vocab, cfg.dim)
        self.pos = nn.Embedding(cfg.max_len + 2, cfg.dim)
        layer = nn.TransformerEncoderLayer(cfg.dim, cfg.heads, 4 * cfg.dim, cfg.dropout, batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.dim)
        self.out = nn.Linear(cfg.dim, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        t = ids.shape[1]
        x = self.emb(ids) + self.pos(torch.arange(t, device=ids.device))
        mask = torch.triu(torch.full((t, t), float("-inf"), device=ids.device), diagonal=1)
        return self.out(self.norm(self.encoder(x, mask=mask, is_causal=True)))


class WordLM:
    """A trained :class:`TransformerLM` with its vocabulary: scores word sequences."""

    def __init__(self, model: TransformerLM, vocab: Sequence[str], cfg: LMConfig):
        self.model, self.vocab, self.cfg = model.eval(), list(vocab), cfg
        self.index = {w: i for i, w in enumerate(self.vocab)}

    def ids(self, words: Sequence[str]) -> list[int]:
        unk = self.index[UNK]
        return [self.index[BOS]] + [self.index.get(w, unk) for w in words[: self.cfg.max_len]] + [self.index[EOS]]

    @torch.no_grad()
    def score(self, sentences: Sequence[Sequence[str]]) -> list[float]:
        """Natural-log probability of each word sequence (``</s>`` included)."""
        if not sentences:
            return []
        seqs = [self.ids(s) for s in sentences]
        width = max(map(len, seqs))
        pad = self.index[PAD]
        x = torch.full((len(seqs), width), pad, dtype=torch.long)
        for i, s in enumerate(seqs):
            x[i, : len(s)] = torch.tensor(s)
        logp = torch.log_softmax(self.model(x[:, :-1]).float(), dim=-1)
        tgt = x[:, 1:]
        tok = logp.gather(-1, tgt.unsqueeze(-1)).squeeze(-1).masked_fill(tgt == pad, 0.0)
        return tok.sum(dim=1).tolist()


def _read_sentences(path: Path) -> list[list[str]]:
    if not path.is_file():
        raise FileNotFoundError(f"LM text not found: {path}")
    with open(path, encoding="utf-8") as f:
        sents = [line.split() for line in f if line.strip()]
    if not sents:
        raise ValueError(f"LM text {path} has no words")
    return sents


def _save(path: Path, **state) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def train_lm(text_path: str | Path, out_dir: str | Path, cfg: LMConfig | None = None,
             dev_text: str | Path | None = None) -> Path:
    """Train (or resume) the LM; returns ``out_dir/model.pt``.

    Raises:
        FileNotFoundError / ValueError: missing or empty LM text.
    """
    cfg = cfg or LMConfig()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "model.pt"
    sents = _read_sentences(Path(text_path))
    counts = Counter(w for s in sents for w in s)
    vocab = [PAD, BOS, EOS, UNK] + [w for w, _ in counts.most_common(cfg.vocab_size)]
    torch.manual_seed(cfg.seed)
    model = TransformerLM(len(vocab), cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    step, spent = 0, 0.0
    if path.is_file():
        ck = torch.load(path, map_location="cpu", weights_only=False)
        if ck.get("done"):
            log.info("lm_nn: %s is already trained (%d updates)", path, ck["step"])
            return path
        if ck["vocab"] == vocab:
            model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["optimizer"])
            step, spent = ck["step"], ck["seconds"]
            log.info("lm_nn: resuming from update %d", step)
    lm = WordLM(model, vocab, cfg)
    data = [lm.ids(s) for s in sents]
    rng = random.Random(cfg.seed + step)
    pad = lm.index[PAD]
    model.train()
    t0 = time.time() - spent
    bar = tqdm(total=cfg.max_updates, initial=step, desc="lm_nn", unit="upd", mininterval=2)
    loss_avg = math.nan
    while step < cfg.max_updates and time.time() - t0 < cfg.max_seconds:
        batch = rng.sample(data, min(cfg.batch_size, len(data)))
        width = max(map(len, batch))
        x = torch.full((len(batch), width), pad, dtype=torch.long)
        for i, s in enumerate(batch):
            x[i, : len(s)] = torch.tensor(s)
        logits = model(x[:, :-1])
        loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1),
                                           ignore_index=pad)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        for g in opt.param_groups:  # linear decay to 10% over max_updates
            g["lr"] = cfg.lr * (1 - 0.9 * step / cfg.max_updates)
        opt.step()
        step += 1
        loss_avg = loss.item() if math.isnan(loss_avg) else 0.95 * loss_avg + 0.05 * loss.item()
        bar.update(1)
        bar.set_postfix(loss=f"{loss_avg:.2f}")
        if step % 100 == 0:
            _save(path, model=model.state_dict(), optimizer=opt.state_dict(), vocab=vocab, config=asdict(cfg),
                  step=step, seconds=time.time() - t0, done=False)
    bar.close()
    info = {"train_loss": loss_avg}
    if dev_text:
        dev = _read_sentences(Path(dev_text))
        lm.model.eval()
        words = sum(len(s) + 1 for s in dev)
        info["dev_ppl"] = math.exp(-sum(lm.score(dev)) / words)
    _save(path, model=model.state_dict(), optimizer=opt.state_dict(), vocab=vocab, config=asdict(cfg), step=step,
          seconds=time.time() - t0, done=True, **info)
    log.info("lm_nn: %d updates in %.0fs, train loss %.2f%s", step, time.time() - t0, loss_avg,
             f", dev perplexity {info['dev_ppl']:.1f}" if "dev_ppl" in info else "")
    return path


def load_lm(path: str | Path) -> WordLM:
    """A trained LM from ``model.pt`` (``w2v lm-nn``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Transformer LM not found: {path}; run the lm_nn stage (w2v lm-nn)")
    ck = torch.load(path, map_location="cpu", weights_only=False)
    cfg = LMConfig(**ck["config"])
    model = TransformerLM(len(ck["vocab"]), cfg)
    model.load_state_dict(ck["model"])
    return WordLM(model, ck["vocab"], cfg)
