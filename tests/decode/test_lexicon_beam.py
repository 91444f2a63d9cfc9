import math
import time

import pytest
import torch

from w2v.decode.lexicon import LexiconBeamSearch, load_lexicon

WORDS = {"A", "CAT", "CAB", "BAD", "BED", "CATS"}


def test_lm_picks_the_in_lm_word(lang_dir, tiny_lm, units, make_emissions, ambiguous):
    x = make_emissions(ambiguous)
    search = LexiconBeamSearch(units, lang_dir / "lexicon.txt", tiny_lm, beam=50,
                               lm_weight=0.0, word_score=0.0)
    assert search.decode(x[None], [len(x)]) == ["A CAB"]  # acoustics alone
    lm, trie = search.lm, search.trie
    search.set_weights(lm_weight=2.0, word_score=0.0)
    assert search.lm is lm and search.trie is trie  # re-weighting reloads nothing
    assert search.decode(x[None], [len(x)]) == ["A CAT"]


def test_zero_lm_weight_equals_lexicon_only_search(lang_dir, tiny_lm, units):
    torch.manual_seed(0)
    with_lm = LexiconBeamSearch(units, lang_dir / "lexicon.txt", tiny_lm, beam=50,
                                lm_weight=0.0, word_score=0.0)
    no_lm = LexiconBeamSearch(units, lang_dir / "lexicon.txt", None, beam=50, word_score=0.0)
    x = torch.randn(3, 40, len(units)).mul(3).log_softmax(-1)
    out = with_lm.decode(x, [40, 25, 10])
    assert out == no_lm.decode(x, [40, 25, 10])
    assert all(set(o.split()) <= WORDS for o in out)


def test_output_is_lexicon_constrained(lang_dir, units, make_emissions):
    # Greedy would read "CAD", which is not a word of the lexicon.
    x = make_emissions(["C", "A", "D", "|"])
    out = LexiconBeamSearch(units, lang_dir / "lexicon.txt", beam=50).decode_one(x)
    assert out and set(out.split()) <= WORDS


def test_batch_equals_per_utterance(lang_dir, tiny_lm, units):
    torch.manual_seed(1)
    search = LexiconBeamSearch(units, lang_dir / "lexicon.txt", tiny_lm, beam=50)
    x = torch.randn(2, 30, len(units)).mul(3).log_softmax(-1)
    assert search.decode(x, [30, 12]) == [search.decode_one(x[0]), search.decode_one(x[1, :12])]


def test_last_word_without_final_boundary(lang_dir, tiny_lm, units, make_emissions):
    x = make_emissions(["A", "|", "C", "A", "T"])
    search = LexiconBeamSearch(units, lang_dir / "lexicon.txt", tiny_lm, beam=50)
    assert search.decode_one(x) == "A CAT"


def test_padding_zero_frames_and_no_path(lang_dir, tiny_lm, units, make_emissions, ambiguous):
    search = LexiconBeamSearch(units, lang_dir / "lexicon.txt", tiny_lm, beam=50)
    x = make_emissions(ambiguous + ["<blank>"] * 4)
    impossible = torch.full((5, len(units)), -math.inf)
    impossible[:, units.index("D")] = 0.0  # "D..." starts no word of the lexicon
    batch = torch.stack([x, x, torch.cat([impossible, x[:5]])])
    assert search.decode(batch, [10, 0, 5]) == ["A CAT", "", ""]
    assert search.decode_one(x[:0]) == ""


def test_bad_lexicon_line_names_file_and_line(tmp_path, units):
    p = tmp_path / "lexicon.txt"
    p.write_text("CAT C A T |\nDOG D O G |\n")
    with pytest.raises(ValueError, match=r"lexicon.txt:2.*not in units"):
        load_lexicon(p, units)
    p.write_text("CAT C A T\n")
    with pytest.raises(ValueError, match=r"lexicon.txt:1"):
        load_lexicon(p, units)


def test_speed_few_hundred_frames(lang_dir, tiny_lm, units):
    # A tripwire, not a benchmark: 300 frames at beam 100 take milliseconds.
    torch.manual_seed(0)
    search = LexiconBeamSearch(units, lang_dir / "lexicon.txt", tiny_lm, beam=100)
    x = torch.randn(300, len(units)).mul(3).log_softmax(-1)
    start = time.perf_counter()
    search.decode_one(x)
    assert time.perf_counter() - start < 2.0


def test_parallel_search_with_progress_equals_serial(lang_dir, tiny_lm, units, capsys):
    from w2v.decode.lexicon import ParallelLexiconBeamSearch

    torch.manual_seed(2)
    em = {f"u{i}": torch.randn(20 + i, len(units)).mul(3).log_softmax(-1) for i in range(5)}
    serial = LexiconBeamSearch(units, lang_dir / "lexicon.txt", tiny_lm, beam=50).decode_utterances(em)
    with ParallelLexiconBeamSearch(2, units, lang_dir / "lexicon.txt", tiny_lm, beam=50) as search:
        assert search.decode_utterances(em, desc="test beam search") == serial
    err = capsys.readouterr().err
    assert "test beam search" in err and "5/5" in err  # a per-utterance progress bar
