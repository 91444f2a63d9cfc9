"""Tune the LM weight and word score on a dev set (wav2vec 2.0 paper, section 4.4).

The paper tunes both by search on the dev sets (Bayesian optimisation for the LARGE models);
a grid is cheaper to reason about and resumes trivially. The emissions are computed once and
only the search is re-run, with :meth:`LexiconBeamSearch.configure` swapping the weights
without reloading the LM.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch
from tqdm import tqdm

from w2v.io import write_text
from w2v.score.wer import score

__all__ = ["beam_search_decode_fn", "grid_search", "write_tuning_tsv"]

DecodeFn = Callable[[Mapping[str, torch.Tensor], float, float], Mapping[str, str]]


def beam_search_decode_fn(searcher) -> DecodeFn:
    """Adapt a :class:`~w2v.decode.lexicon.LexiconBeamSearch` to :func:`grid_search`."""

    def decode(emissions: Mapping[str, torch.Tensor], lm_weight: float, word_score: float):
        searcher.configure(lm_weight=lm_weight, word_score=word_score)
        return searcher.decode_utterances(emissions)

    return decode


def grid_search(
    decode_fn: DecodeFn,
    emissions_dev: Mapping[str, torch.Tensor],
    refs_dev: Mapping[str, str],
    lm_weights: Sequence[float],
    word_scores: Sequence[float],
) -> tuple[dict, list[dict]]:
    """Decode the dev set at every (lm_weight, word_score) and keep the lowest WER.

    Args:
        decode_fn: ``decode_fn(emissions, lm_weight, word_score) -> {utt_id: text}``.
        emissions_dev: ``{utt_id: (frames, vocab) log-probs}``.
        refs_dev: ``{utt_id: reference}``; ids without a hypothesis count as deletions.
        lm_weights, word_scores: the grid axes.

    Returns:
        ``(best, table)``: ``best`` is ``{"lm_weight", "word_score", "wer", "errors",
        "ref_words"}`` of the winner; ``table`` has one such dict per grid point, in grid
        order (``lm_weights`` outer). Ties in the error count go to the smaller LM weight,
        then the word score nearer 0, so an LM is only trusted as much as the dev set
        demands.
    """
    if not lm_weights or not word_scores:
        raise ValueError("lm_weights and word_scores must both be non-empty")
    table = []
    grid = [(w, s) for w in lm_weights for s in word_scores]
    with tqdm(grid, desc="tuning LM weight/word score on dev", unit="point", mininterval=2,
              disable=len(grid) < 2) as bar:
        for lm_weight, word_score in bar:
            result = score(refs_dev, decode_fn(emissions_dev, lm_weight, word_score))
            table.append({
                "lm_weight": float(lm_weight), "word_score": float(word_score),
                "wer": result.wer, "errors": result.words.errors,
                "ref_words": result.words.ref,
            })
            bar.set_postfix(best_wer=f"{min(r['wer'] for r in table):.3f}")
    best = min(table, key=lambda r: (r["errors"], r["lm_weight"], abs(r["word_score"])))
    return dict(best), table


def write_tuning_tsv(table: Sequence[Mapping], path) -> None:
    """Write the grid as ``tuning.tsv`` (lm_weight, word_score, wer %, errors, ref words)."""
    rows = ["lm_weight\tword_score\twer_pct\terrors\tref_words"]
    rows += [
        f"{r['lm_weight']:g}\t{r['word_score']:g}\t{100 * r['wer']:.2f}\t{r['errors']}\t"
        f"{r['ref_words']}"
        for r in table
    ]
    write_text(path, "\n".join(rows) + "\n")
