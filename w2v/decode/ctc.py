"""Greedy (best-path) CTC decoding: the "no LM" rows of the wav2vec 2.0 paper's tables.

Also reads ``units.txt``, the CTC output vocabulary shared by every decoder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

__all__ = ["greedy_decode", "load_units", "units_to_text"]

BLANK = "<blank>"
WORD_SEP = "|"


def load_units(path: str | Path) -> list[str]:
    """Read ``units.txt`` (``<unit> <id>`` per line) into a list indexed by id.

    Raises:
        ValueError: naming file and line, on malformed lines, duplicate or missing ids, or
            when id 0 is not ``<blank>``.
    """
    path = Path(path)
    by_id: dict[int, str] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
                raise ValueError(f"{path}:{lineno}: expected '<unit> <id>', got {line.rstrip()!r}")
            unit, idx = parts[0], int(parts[1])
            if idx in by_id:
                raise ValueError(f"{path}:{lineno}: id {idx} already used by {by_id[idx]!r}")
            by_id[idx] = unit
    if sorted(by_id) != list(range(len(by_id))):
        raise ValueError(f"{path}: ids must be 0..{len(by_id) - 1} without gaps")
    units = [by_id[i] for i in range(len(by_id))]
    if not units or units[0] != BLANK:
        raise ValueError(f"{path}: id 0 must be {BLANK}")
    if len(set(units)) != len(units):
        raise ValueError(f"{path}: a unit is listed twice")
    return units


def units_to_text(units: Sequence[str], word_sep: str = WORD_SEP) -> str:
    """Join unit strings into words: ``word_sep`` becomes a space, spaces are squeezed."""
    return " ".join("".join(units).replace(word_sep, " ").split())


def greedy_decode(
    logits: torch.Tensor,
    lengths: torch.Tensor | Sequence[int] | None,
    units: Sequence[str],
    blank: int = 0,
    word_sep: str = WORD_SEP,
) -> list[str]:
    """Best-path CTC decoding: argmax per frame, collapse repeats, drop blanks.

    Args:
        logits: ``(batch, frames, vocab)`` scores (logits or log-probs; only argmax matters).
        lengths: ``(batch,)`` valid frames per utterance; frames past it are padding and
            ignored. ``None`` means every frame is valid.
        units: the vocabulary, ``units[i]`` is the string of output ``i``.
        blank: index of the CTC blank.
        word_sep: the unit that marks word boundaries; it becomes a space.

    Returns:
        One string per utterance, words separated by single spaces, no leading/trailing
        space; ``""`` for zero-length input. BPE pieces are joined at ``▁``; phone units give
        phones separated by spaces (see :mod:`w2v.data.units`).
    """
    if logits.dim() != 3:
        raise ValueError(f"logits must be (batch, frames, vocab), got shape {tuple(logits.shape)}")
    batch, frames, vocab = logits.shape
    if vocab != len(units):
        raise ValueError(f"logits have {vocab} outputs but there are {len(units)} units")
    if lengths is None:
        lengths = [frames] * batch
    lengths = torch.as_tensor(lengths).tolist()
    if len(lengths) != batch:
        raise ValueError(f"{len(lengths)} lengths for a batch of {batch}")
    from w2v.data.units import join_units, unit_kind

    kind = unit_kind(units)
    best = logits.argmax(dim=-1).cpu()
    texts = []
    for b, n in enumerate(lengths):
        if not 0 <= n <= frames:
            raise ValueError(f"length {n} of utterance {b} is outside 0..{frames}")
        path = best[b, :n]
        if n > 0:
            # A frame starts a new token when it differs from the previous one (CTC collapse).
            keep = torch.ones(n, dtype=torch.bool)
            keep[1:] = path[1:] != path[:-1]
            path = path[keep]
            path = path[path != blank]
        tokens = [units[i] for i in path.tolist()]
        texts.append(units_to_text(tokens, word_sep) if kind == "char" else join_units(tokens, kind))
    return texts
