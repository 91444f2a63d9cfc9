"""The decode stage's decoder rows on toy emissions: every decoder writes hypotheses; LM rows fix
what greedy gets wrong; missing inputs are named."""

import pytest

pytest.importorskip("kaldifst")

from w2v.decode.graph import build_hlg  # noqa: E402
from w2v.decode.run import run_decoders  # noqa: E402
from w2v.score.wer import read_text_file  # noqa: E402


@pytest.fixture
def toy_graph(lang_dir):
    from w2v.lm import KenLMToolMissing, build_ngram

    try:
        build_ngram(lang_dir / "text.txt", lang_dir / "lm", order=3, memory="32M", keep_arpa=True)
    except KenLMToolMissing as e:
        pytest.skip(f"KenLM tools not installed ({e})")
    build_hlg(lang_dir / "units.txt", lang_dir / "lexicon.txt", lang_dir / "lm" / "lm.arpa", lang_dir / "graph")
    return lang_dir


def test_every_decoder_row(toy_graph, units, make_emissions, ambiguous, tmp_path):
    em = [make_emissions(ambiguous), make_emissions(["B", "E", "D"]), make_emissions([])]
    refs = {"u1": "A CAT", "u2": "BED", "u3": ""}
    sets = {"dev": (list(refs), em, refs), "test": (list(refs), em, refs)}
    decoders = ["greedy", "beam+3gram", "hlg", "hlg+nbest-3gram"]
    dc = {"lm_weights": [0.0, 2.0], "word_scores": [0.0], "beam": 50, "acoustic_scales": [1.0],
          "rescore_lm_weights": [0.0, 1.0], "rescore_word_scores": [0.0], "lattice_beam": 8, "nbest_beam": 12}
    out = run_decoders(decoders, sets, units, "dev", tmp_path / "out", dc, lm_order=3,
                       lexicon=str(toy_graph / "lexicon.txt"), lm=str(toy_graph / "lm" / "lm.bin"),
                       graph=str(toy_graph / "graph"))
    assert list(out) == decoders
    hyps = {d: read_text_file(out[d]["hyps"]["test"]) for d in decoders}
    assert hyps["greedy"] == {"u1": "A CAB", "u2": "BED", "u3": ""}
    for d in decoders[1:]:
        assert hyps[d] == refs, d
        assert out[d]["rtf"] >= 0
    assert (tmp_path / "out" / "hlg+nbest-3gram" / "tuning.tsv").is_file()
    assert out["hlg+nbest-3gram"]["first_pass_kept"] is False


def test_rescoring_worse_than_its_first_pass_on_dev_keeps_the_first_pass(toy_graph, units, make_emissions,
                                                                         ambiguous, tmp_path, monkeypatch):
    """A rescorer whose best weights still lose to the HLG one-best on dev (here: one that
    picks nothing) must not make the row worse than the graph it rescores."""
    import w2v.decode.rescore as rescore

    em = [make_emissions(ambiguous), make_emissions(["B", "E", "D"])]
    refs = {"u1": "A CAT", "u2": "BED"}
    sets = {"dev": (list(refs), em, refs), "test": (list(refs), em, refs)}
    monkeypatch.setattr(rescore, "pick", lambda features, weights: {utt: "" for utt in features})
    dc = {"acoustic_scales": [1.0], "rescore_lm_weights": [0.0, 1.0], "rescore_word_scores": [0.0],
          "lattice_beam": 8, "nbest_beam": 12}
    out = run_decoders(["hlg", "hlg+nbest-3gram"], sets, units, "dev", tmp_path / "out", dc, lm_order=3,
                       lm=str(toy_graph / "lm" / "lm.bin"), graph=str(toy_graph / "graph"))
    row = out["hlg+nbest-3gram"]
    assert row["first_pass_kept"] is True
    assert read_text_file(row["hyps"]["test"]) == read_text_file(out["hlg"]["hyps"]["test"]) == refs


def test_missing_lm_is_named(toy_graph, units, make_emissions, tmp_path):
    refs = {"u1": "A"}
    sets = {"dev": (["u1"], [make_emissions(["A"])], refs)}
    with pytest.raises(FileNotFoundError, match="rescoring LM not found: .*nowhere.bin"):
        run_decoders(["hlg+nbest-3gram"], sets, units, "dev", tmp_path, {}, 3, graph=str(toy_graph / "graph"),
                     lm=str(tmp_path / "nowhere.bin"))


def test_cli_names_missing_decoder_inputs(tmp_path):
    from w2v.cli import main

    cfg = tmp_path / "recipe.yaml"
    cfg.write_text("recipe: x\nmodel: tiny\ncorpus: {type: folder, path: /nope}\n"
                   "decode: {decoders: [greedy, hlg+nbest-4gram]}\n")
    base = ["decode", "--config", str(cfg), "--model", "m.pt", "--cuts", "dev.jsonl.gz", "--out", str(tmp_path)]
    with pytest.raises(SystemExit, match="need --graph, --lm"):
        main(base)
    with pytest.raises(SystemExit, match="lm not found: .*absent.bin"):
        main(base + ["--graph", str(tmp_path), "--lm", str(tmp_path / "absent.bin")])


def test_cli_graph_stage(lang_dir, tmp_path):
    import json

    from w2v.cli import main
    from w2v.lm import KenLMToolMissing, find_kenlm_tool

    try:
        find_kenlm_tool("lmplz")
    except KenLMToolMissing as e:
        pytest.skip(str(e))
    cfg = tmp_path / "recipe.yaml"
    cfg.write_text("recipe: x\nmodel: tiny\ncorpus: {type: folder, path: /nope}\ngraph: {order: 2}\n")
    main(["graph", "--config", str(cfg), "--units", str(lang_dir / "units.txt"), "--lexicon",
          str(lang_dir / "lexicon.txt"), "--text", str(lang_dir / "text.txt"), "--out", str(tmp_path / "g")])
    info = json.loads((tmp_path / "g" / "graph.json").read_text())
    assert info["lm_oov"] == 2 and (tmp_path / "g" / "HLG.fst").is_file()  # THE and SAT are not in the lexicon
    assert "2-grams" in (tmp_path / "g" / "lm" / "lm.arpa").read_text() and "3-grams" not in \
        (tmp_path / "g" / "lm" / "lm.arpa").read_text()
