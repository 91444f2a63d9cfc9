import pytest

from w2v.decode.tune import beam_search_decode_fn, grid_search, write_tuning_tsv
from w2v.decode.lexicon import LexiconBeamSearch



def test_grid_search_picks_lowest_wer_and_smallest_weight_on_ties():
    refs = {"u1": "A B", "u2": "C"}

    def decode(em, lm_weight, word_score):
        # Correct only when lm_weight >= 1 and word_score == 0.
        good = lm_weight >= 1 and word_score == 0
        return {"u1": "A B" if good else "A X", "u2": "C"}

    best, table = grid_search(decode, {}, refs, [0.0, 2.0, 1.0], [-1.0, 0.0])
    assert len(table) == 6
    assert (best["lm_weight"], best["word_score"], best["errors"]) == (1.0, 0.0, 0)
    assert [r["errors"] for r in table] == [1, 1, 1, 0, 1, 0]


def test_grid_search_with_beam_search(lang_dir, tiny_lm, tmp_path, units, make_emissions,
                                      ambiguous):
    search = LexiconBeamSearch(units, lang_dir / "lexicon.txt", tiny_lm, beam=50)
    em = {"u1": make_emissions(ambiguous)}
    best, table = grid_search(beam_search_decode_fn(search), em, {"u1": "A CAT"},
                              [0.0, 1.0, 3.0], [0.0])
    assert best["lm_weight"] == 1.0 and best["wer"] == 0.0
    assert table[0]["wer"] == pytest.approx(0.5)
    write_tuning_tsv(table, tmp_path / "tuning.tsv")
    lines = (tmp_path / "tuning.tsv").read_text().splitlines()
    assert lines[0].split("\t") == ["lm_weight", "word_score", "wer_pct", "errors", "ref_words"]
    assert lines[1].split("\t") == ["0", "0", "50.00", "1", "2"]
