"""`lm.arpa`: a ready-made ARPA (the official LibriSpeech 4-gram) is binarised, not re-estimated."""

from __future__ import annotations

import gzip

import pytest

from w2v.lm import KenLMToolMissing, find_kenlm_tool

ARPA = """\\data\\
ngram 1=4
ngram 2=2

\\1-grams:
-1.0\t<s>\t-0.3
-0.5\t</s>
-0.6\tHELLO\t-0.2
-0.9\tWORLD\t-0.1

\\2-grams:
-0.1\t<s> HELLO
-0.2\tHELLO WORLD

\\end\\
"""


def test_official_arpa_is_binarised(tmp_path):
    try:
        find_kenlm_tool("build_binary")
    except KenLMToolMissing:
        pytest.skip("KenLM's build_binary is not built (scripts/setup.sh)")
    import kenlm

    from w2v.cli import main

    arpa = tmp_path / "4-gram.arpa.gz"
    arpa.write_bytes(gzip.compress(ARPA.encode()))
    cfg = tmp_path / "r.yaml"
    cfg.write_text(f"recipe: r\nmodel: base\ncorpus: {{type: folder, path: x}}\nlm: {{order: 4, arpa: {arpa}}}\n")
    main(["lm", "--config", str(cfg), "--text", str(tmp_path / "unused.txt"), "--out", str(tmp_path / "lm")])
    model = kenlm.Model(str(tmp_path / "lm" / "lm.bin"))
    assert model.order == 2
    # log10 p(HELLO | <s>) + p(WORLD | HELLO) + p(</s> | WORLD) = -0.1 - 0.2 + (-0.1 - 0.5)
    assert model.score("HELLO WORLD") == pytest.approx(-0.9, abs=1e-4)
    with pytest.raises(SystemExit, match="ARPA file not found"):
        cfg.write_text("recipe: r\nmodel: base\ncorpus: {type: folder, path: x}\nlm: {arpa: /nonexistent.arpa}\n")
        main(["lm", "--config", str(cfg), "--text", "x", "--out", str(tmp_path / "lm2")])
