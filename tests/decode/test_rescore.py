"""N-best rescoring: features, weight tuning on dev, the KenLM scorer, the decoder-name parser."""

import math

import pytest

from w2v.decode.rescore import NgramScorer, pick, tune_weights
from w2v.decode.run import needs, parse_decoder


def _features():
    # utt 1: the acoustically best hypothesis is wrong; the LM knows better.
    return {
        "u1": [{"text": "A CAB", "am": -1.0, "ngram": -9.0, "words": 2},
               {"text": "A CAT", "am": -1.5, "ngram": -3.0, "words": 2}],
        "u2": [{"text": "BED", "am": -0.5, "ngram": -2.0, "words": 1},
               {"text": "BED A", "am": -0.4, "ngram": -6.0, "words": 2}],
        "u3": [],  # no hypothesis survived: an empty one
    }


def test_pick_and_tune():
    f = _features()
    assert pick(f, {}) == {"u1": "A CAB", "u2": "BED A", "u3": ""}
    assert pick(f, {"ngram": 1.0}) == {"u1": "A CAT", "u2": "BED", "u3": ""}
    refs = {"u1": "A CAT", "u2": "BED", "u3": "A"}
    best, table = tune_weights(f, refs, {"ngram": [0.0, 0.05, 1.0, 2.0], "words": [0.0]})
    assert len(table) == 4 and best["ngram"] == 1.0  # the smallest weight that fixes both
    assert best["errors"] == 1 and best["ref_words"] == 4  # u3's empty hypothesis: one deletion


def test_ngram_scorer(tiny_lm, tmp_path):
    lm = NgramScorer(tiny_lm)
    seen, unseen = lm.score([["A", "CAT"], ["CAB", "A"]])
    assert seen > unseen and seen < 0
    import kenlm

    assert seen == pytest.approx(math.log(10) * kenlm.Model(str(tiny_lm)).score("A CAT"))
    with pytest.raises(FileNotFoundError, match="rescoring LM not found: .*missing.bin"):
        NgramScorer(tmp_path / "missing.bin")


def test_decoder_names():
    assert parse_decoder("beam+4gram", 4) == "beam" and parse_decoder("hlg", 4) == "hlg"
    assert parse_decoder("hlg+nbest-4gram+transformer-lm", 4) == "nbest_nn"
    with pytest.raises(ValueError, match="builds a 4-gram"):
        parse_decoder("hlg+nbest-5gram", 4)
    with pytest.raises(ValueError, match="unknown decoder 'viterbi'"):
        parse_decoder("viterbi", 4)
    assert needs(["greedy"], 4) == set()
    assert needs(["greedy", "hlg+nbest-4gram+transformer-lm"], 4) == {"graph", "lm", "lm_nn"}
