import pytest

from w2v import lm as lm_mod
from w2v.lm import KenLMToolMissing, LMBuildError, build_ngram, find_kenlm_tool


def _need_kenlm():
    try:
        find_kenlm_tool("lmplz"), find_kenlm_tool("build_binary")
    except KenLMToolMissing as e:
        pytest.skip(f"KenLM tools not installed ({e})")


def test_tiny_corpus_builds_and_scores(tmp_path):
    _need_kenlm()
    kenlm = pytest.importorskip("kenlm")
    text = tmp_path / "text.txt"
    text.write_text("THE CAT SAT\nTHE DOG RAN\n")  # too small for plain Kneser-Ney
    out = build_ngram(text, tmp_path / "lm", order=4, memory="32M", keep_arpa=True)
    assert out == tmp_path / "lm" / "lm.bin" and out.stat().st_size > 0
    assert "ngram 4=" in (tmp_path / "lm" / "lm.arpa").read_text()
    model = kenlm.Model(str(out))
    assert model.order == 4
    # A seen sentence is more likely than its scrambled words.
    assert model.score("THE CAT SAT") > model.score("SAT CAT THE")
    assert not [p for p in tmp_path.joinpath("lm").iterdir() if p.name.startswith(".")]


def test_pruned_trie_and_no_arpa(tmp_path):
    _need_kenlm()
    text = tmp_path / "text.txt"
    text.write_text("A B C\nA B D\nA B C\n")
    out = build_ngram(text, tmp_path / "lm", order=3, prune="0 0 1", memory="32M",
                      binary_type="trie")
    assert out.is_file() and not (tmp_path / "lm" / "lm.arpa").exists()


def test_failure_keeps_log_and_quotes_it(tmp_path):
    _need_kenlm()
    text = tmp_path / "text.txt"
    text.write_text("A B\n")
    with pytest.raises(LMBuildError, match="memory size") as err:
        build_ngram(text, tmp_path / "lm", memory="lots")
    assert "lmplz.log" in str(err.value) and (tmp_path / "lm" / "lmplz.log").is_file()
    assert not (tmp_path / "lm" / "lm.bin").exists()


def test_missing_tools_name_the_setup_script(tmp_path, monkeypatch):
    monkeypatch.setattr(lm_mod.sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    (tmp_path / "text.txt").write_text("A B\n")
    with pytest.raises(KenLMToolMissing, match=r"lmplz.*scripts/setup.sh"):
        build_ngram(tmp_path / "text.txt", tmp_path / "lm")


def test_empty_corpus_is_refused(tmp_path):
    (tmp_path / "text.txt").write_text("\n  \n")
    with pytest.raises(ValueError, match="no words"):
        build_ngram(tmp_path / "text.txt", tmp_path / "lm")
