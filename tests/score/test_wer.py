import json

import pytest

from w2v.score.wer import (
    read_text_file,
    score,
    write_alignments,
    write_per_utt,
    write_score_json,
    write_text_file,
)


def test_hand_checked_counts():
    refs = {"a": "THE CAT SAT ON THE MAT", "b": "HELLO WORLD"}
    hyps = {"a": "THE CAT SAT IN THE MAT TOO", "b": "HELLO"}
    r = score(refs, hyps)
    # a: ON->IN (S), +TOO (I); b: -WORLD (D). N = 6 + 2.
    assert (r.words.sub, r.words.dels, r.words.ins, r.words.ref) == (1, 1, 1, 8)
    assert r.wer == pytest.approx(3 / 8) and r.wer_pct == pytest.approx(37.5)
    assert r.sentence_errors == 2 and r.ser == 1.0
    by_id = {u.utt_id: u for u in r.utts}
    assert by_id["a"].words.rate == pytest.approx(2 / 6)
    assert by_id["a"].alignment[3] == ("ON", "IN") and by_id["a"].alignment[-1] == ("*", "TOO")


def test_cer_counts_characters_and_spaces():
    r = score({"a": "AB CD"}, {"a": "AB  CE"})  # extra spaces are squeezed before scoring
    assert (r.chars.sub, r.chars.dels, r.chars.ins, r.chars.ref) == (1, 0, 0, 5)
    r = score({"a": "AB CD"}, {"a": "ABCD"})  # a lost word boundary is one deletion
    assert r.chars.errors == 1 and r.words.errors == 2


def test_matches_jiwer():
    jiwer = pytest.importorskip("jiwer")
    refs = {"1": "A B C D E", "2": "F G H", "3": "I J"}
    hyps = {"1": "A X C E", "2": "F G H K L", "3": "J"}
    r = score(refs, hyps)
    keys = sorted(refs)
    assert r.wer == pytest.approx(jiwer.wer([refs[k] for k in keys], [hyps[k] for k in keys]))
    assert r.cer == pytest.approx(jiwer.cer([refs[k] for k in keys], [hyps[k] for k in keys]))


def test_missing_hypotheses_are_deletions_and_listed():
    r = score({"a": "A B", "b": "C D E"}, {"a": "A B"})
    assert r.missing == ["b"] and r.words.dels == 3 and r.wer == pytest.approx(3 / 5)


def test_extra_hypotheses_raise():
    with pytest.raises(ValueError, match="no reference.*'z'"):
        score({"a": "A"}, {"a": "A", "z": "B"})


def test_empty_reference_convention():
    r = score({"a": "", "b": "X Y"}, {"a": "UH UM", "b": "X Y"})
    ua = r.utts[0]
    assert (ua.words.ins, ua.words.ref, ua.words.rate) == (2, 0, 2.0)  # errors / max(N, 1)
    assert r.words.ref == 2 and r.wer == pytest.approx(1.0)  # N only counts "b"
    assert score({"a": ""}, {"a": ""}).wer == 0.0


def test_literal_star_is_not_a_gap():
    r = score({"a": "A * B"}, {"a": "A * B"})
    assert r.words.errors == 0


def test_read_text_file_errors(tmp_path):
    p = tmp_path / "hyp.txt"
    p.write_text("u1\tA B\nu2\t\nu3\n\nu4\t  C   D \n")
    assert read_text_file(p) == {"u1": "A B", "u2": "", "u3": "", "u4": "C D"}
    p.write_text("u1\tA\nu1\tB\n")
    with pytest.raises(ValueError, match=r"hyp.txt:2: duplicate id 'u1'"):
        read_text_file(p)
    p.write_text("u1\tA\nu2 B C\n")
    with pytest.raises(ValueError, match=r"hyp.txt:2: no tab"):
        read_text_file(p)


def test_text_file_round_trip(tmp_path):
    texts = {"b": "X Y", "a": ""}
    write_text_file(texts, tmp_path / "t.txt")
    assert (tmp_path / "t.txt").read_text() == "a\t\nb\tX Y\n"
    assert read_text_file(tmp_path / "t.txt") == texts


def test_alignment_file_format(tmp_path):
    r = score({"u1": "HE HOPED THERE WOULD BE STEW", "u2": "A B"},
              {"u1": "HE HOPED AH THERE WOULD BE STU"})
    write_alignments(r, tmp_path / "errs-test.txt", title="test_clean greedy")
    text = (tmp_path / "errs-test.txt").read_text()
    lines = text.splitlines()
    assert lines[0] == "# test_clean greedy"
    assert lines[1] == "%WER 50.00 [ 4 / 8, 1 ins, 2 del, 1 sub ]"
    i = lines.index("id: u1")
    assert lines[i + 1] == "Scores: (#C #S #D #I) 5 1 0 1"
    assert lines[i + 2] == "ref:  HE HOPED ** THERE WOULD BE STEW"
    assert lines[i + 3] == "hyp:  HE HOPED AH THERE WOULD BE STU"
    assert lines[i + 4] == "eval:          I                 S"
    # columns line up
    assert lines[i + 2].index("STEW") == lines[i + 3].index("STU") == lines[i + 4].index("S")
    assert "id: u2  (hypothesis missing)" in lines
    assert "1 STEW -> STU" in lines and "1 AH" in lines

    write_per_utt(r, tmp_path / "per_utt.tsv")
    rows = [l.split("\t") for l in (tmp_path / "per_utt.tsv").read_text().splitlines()]
    assert rows[0][:6] == ["id", "ref_words", "sub", "del", "ins", "wer"]
    assert rows[1][:6] == ["u1", "6", "1", "0", "1", "0.3333"]
    assert rows[2][:6] == ["u2", "2", "0", "2", "0", "1.0000"]


def test_score_json(tmp_path):
    r = score({"a": "A B"}, {"a": "A"})
    meta = {"model": "base", "pretrain_data": "LS-960", "labeled": "10m", "init": "pretrained",
            "decoder": "greedy", "lm": None, "test_set": "test_clean", "lm_weight": None,
            "word_score": None}
    write_score_json(r, tmp_path / "score.json", meta)
    data = json.loads((tmp_path / "score.json").read_text())
    assert data["meta"] == meta and data["wer"] == 0.5 and data["words"]["del"] == 1
    with pytest.raises(KeyError, match="test_set"):
        write_score_json(r, tmp_path / "x.json", {k: v for k, v in meta.items() if k != "test_set"})
