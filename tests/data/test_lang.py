"""w2v.data.lang: character units, words, lexicon, LM text, encode/decode."""

from __future__ import annotations

from corpus_fixtures import write_manifests
from w2v.data.cuts import make_cuts
from w2v.data.lang import build_lang, decode_ids, encode, read_units


def test_build_lang(tmp_path):
    utts = [("a-1", "a", 2.0, "Hello world", "train"), ("a-2", "a", 2.0, "don't go", "train"),
            ("b-1", "b", 2.0, "unseen test words", "test")]
    cuts = make_cuts(write_manifests(tmp_path / "m", utts), tmp_path / "c")
    lm = tmp_path / "lm.txt"
    lm.write_text("Hello, old world!\n\nA quiz: lower.\n", encoding="utf-8")
    extra = tmp_path / "extra.txt"
    extra.write_text("dell\n")
    p = build_lang(cuts["train"], tmp_path / "lang", lm_text_path=lm, extra_words_text=extra)
    units = read_units(p["units"])
    assert list(units) == ["<blank>", "|", "'", "D", "E", "G", "H", "L", "N", "O", "R", "T", "W"]
    assert list(units.values()) == list(range(len(units)))
    words = [line.split()[0] for line in p["words"].read_text().splitlines()]
    # QUIZ and A use characters the training transcripts never had: left out
    assert words == ["<eps>", "DELL", "DON'T", "GO", "HELLO", "LOWER", "OLD", "WORLD"]
    lex = p["lexicon"].read_text().splitlines()
    assert "DON'T D O N ' T |" in lex and len(lex) == len(words) - 1
    assert p["lm_text"].read_text().splitlines() == ["HELLO OLD WORLD", "A QUIZ LOWER"]


def test_lm_text_defaults_to_train(tmp_path):
    utts = [("a-1", "a", 2.0, "one two", "train")]
    cuts = make_cuts(write_manifests(tmp_path / "m", utts), tmp_path / "c")
    p = build_lang(cuts["train"], tmp_path / "lang")
    assert p["lm_text"].read_text() == "ONE TWO\n"


def test_encode_decode():
    units = {u: i for i, u in enumerate(["<blank>", "|", "'", "A", "B", "C"])}
    ids = encode("AB C'A", units)
    assert ids == [3, 4, 1, 5, 2, 3]
    assert decode_ids(ids, list(units)) == "AB C'A"
    assert decode_ids([0, 1, 3, 0, 1, 1, 4, 1], {i: u for u, i in units.items()}) == "A B"
    assert encode("", units) == []
    try:
        encode("AZ", units)
    except KeyError as e:
        assert "'Z'" in str(e)
    else:
        raise AssertionError("expected KeyError")
