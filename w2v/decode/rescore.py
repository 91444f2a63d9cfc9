"""N-best rescoring: a larger n-gram than the first pass, and a Transformer LM.

Each hypothesis of the HLG n-best list gets features computed once: the acoustic log-prob
``am``, the n-gram log-prob (KenLM, natural log), the Transformer LM log-prob and the word
count. The new score is ``am + lm_weight * ngram + nn_weight * nnlm + word_score * words``;
the weights are tuned on dev by grid search over these stored features, so tuning never
decodes again.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Mapping, Sequence

from w2v.decode.wfst import Hypothesis
from w2v.score.wer import score

__all__ = ["NgramScorer", "nbest_features", "pick", "tune_weights"]

LN10 = math.log(10.0)


class NgramScorer:
    """Sentence log-probabilities (natural log, ``<s>``/``</s>`` included) from a KenLM model."""

    def __init__(self, path: str | Path):
        import kenlm

        if not Path(path).is_file():
            raise FileNotFoundError(f"rescoring LM not found: {path}; run the lm stage (w2v lm)")
        self.path = Path(path)
        self.model = kenlm.Model(str(path))

    def score(self, sentences: Sequence[Sequence[str]]) -> list[float]:
        return [LN10 * self.model.score(" ".join(s), bos=True, eos=True) for s in sentences]


def nbest_features(nbest: Mapping[str, Sequence[Hypothesis]], scorers: Mapping[str, object]
                   ) -> dict[str, list[dict]]:
    """``{utt: [{"text", "am", "words", <scorer name>: logprob, ...}, ...]}``."""
    out = {}
    for utt, hyps in nbest.items():
        rows = [{"text": h.text, "am": h.am, "first_pass": h.first_pass, "words": len(h.words)} for h in hyps]
        for name, scorer in scorers.items():
            for row, s in zip(rows, scorer.score([h.words for h in hyps])):
                row[name] = s
        out[utt] = rows
    return out


def pick(features: Mapping[str, Sequence[Mapping]], weights: Mapping[str, float]) -> dict[str, str]:
    """The best hypothesis per utterance under ``am + sum(weight * feature)``; ``""`` for none."""
    out = {}
    for utt, rows in features.items():
        if not rows:
            out[utt] = ""
            continue
        best = max(rows, key=lambda r: r["am"] + sum(w * r[k] for k, w in weights.items()))
        out[utt] = best["text"]
    return out


def tune_weights(features_dev: Mapping[str, Sequence[Mapping]], refs_dev: Mapping[str, str],
                 grid: Mapping[str, Sequence[float]]) -> tuple[dict, list[dict]]:
    """Grid search of the feature weights on dev; the lowest word error count wins.

    Ties go to the smallest weights (summed magnitudes), so an LM is only trusted as much as dev
    demands.

    Returns:
        ``(best, table)``: dicts of the weights plus ``wer``, ``errors``, ``ref_words``.
    """
    names = list(grid)
    table = []
    for values in itertools.product(*(grid[n] for n in names)):
        weights = dict(zip(names, map(float, values)))
        res = score(refs_dev, pick(features_dev, weights))
        table.append({**weights, "wer": res.wer, "errors": res.words.errors, "ref_words": res.words.ref})
    best = min(table, key=lambda r: (r["errors"], sum(abs(r[n]) for n in names)))
    return dict(best), table
