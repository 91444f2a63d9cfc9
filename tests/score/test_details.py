"""sclite-style details: random strings against kaldialign/jiwer, breakdowns, top errors, folding."""

import json
import random

import pytest

from w2v.score.details import breakdown, fold, read_fold_map, score_details, top_errors, write_details
from w2v.score.wer import score


def _random_corpus(rng, n=30, vocab="ABCDE"):
    def sent():
        return " ".join("".join(rng.choice(vocab) for _ in range(rng.randint(1, 3))) for _ in range(rng.randint(0, 6)))
    refs = {f"u{i}": sent() for i in range(n)}
    refs["u0"] = refs["u0"] or "A"
    return refs, {k: sent() for k in refs}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_strings_match_kaldialign_and_jiwer(seed):
    import kaldialign

    jiwer = pytest.importorskip("jiwer")
    refs, hyps = _random_corpus(random.Random(seed))
    r = score(refs, hyps)
    errors = sum(kaldialign.edit_distance(refs[k].split(), hyps[k].split())["total"] for k in refs)
    assert r.words.errors == errors
    keys = sorted(refs)
    out = jiwer.process_words([refs[k] for k in keys if refs[k]], [hyps[k] for k in keys if refs[k]])
    r_nonempty = score({k: refs[k] for k in keys if refs[k]}, hyps={k: hyps[k] for k in keys if refs[k]})
    assert (r_nonempty.words.sub, r_nonempty.words.dels, r_nonempty.words.ins) == (
        out.substitutions, out.deletions, out.insertions)
    assert r_nonempty.cer == pytest.approx(jiwer.cer([refs[k] for k in keys if refs[k]],
                                                     [hyps[k] for k in keys if refs[k]]))


def test_breakdowns_and_top_errors(tmp_path):
    refs = {"a1": "THE CAT SAT", "a2": "THE DOG", "b1": "A CAT", "b2": "NO WORDS HERE"}
    hyps = {"a1": "THE BAT SAT", "a2": "THE DOG RAN", "b1": "A BAT", "b2": ""}  # b2: an empty hypothesis
    r = score(refs, hyps)
    spk = {"a1": "alice", "a2": "alice", "b1": "bob", "b2": "bob"}
    by = breakdown(r, spk)
    assert by["alice"]["sub"] == 1 and by["alice"]["ins"] == 1 and by["alice"]["ref"] == 5
    assert by["bob"]["del"] == 3 and by["bob"]["utts"] == 2
    assert sum(g["errors"] for g in by.values()) == r.words.errors
    top = top_errors(r)
    assert top["substitutions"][0] == ["CAT", "BAT", 2]
    assert top["insertions"] == [["RAN", 1]] and len(top["deletions"]) == 3
    d = score_details(r, spk, {"a1": "en", "a2": "en", "b1": "fr", "b2": "fr"})
    assert d["by_language"]["fr"]["errors"] == 4
    write_details(d, tmp_path / "s.md", tmp_path / "s.json", "test")
    md = (tmp_path / "s.md").read_text()
    assert "| CAT -> BAT | 2 |" in md and "| bob | 2 | 5 |" in md and "## By language" in md
    assert json.loads((tmp_path / "s.json").read_text())["words"]["errors"] == r.words.errors


def test_fold_map(tmp_path):
    (tmp_path / "fold.txt").write_text("ao aa\nax ah\nq\n")
    m = read_fold_map(tmp_path / "fold.txt")
    assert fold("q ao b ax", m) == "aa b ah"
    r = score({"u": fold("ao q ax", m)}, {"u": fold("aa ah", m)})
    assert r.wer == 0.0
    (tmp_path / "bad.txt").write_text("a b c\n")
    with pytest.raises(ValueError, match="bad.txt:1"):
        read_fold_map(tmp_path / "bad.txt")
