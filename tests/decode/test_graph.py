"""HLG construction (kaldifst/kaldilm) and WFST decoding (kaldi-decoder) on a toy lexicon."""

import math

import pytest
import torch

kaldifst = pytest.importorskip("kaldifst")
pytest.importorskip("kaldilm")
pytest.importorskip("kaldi_decoder")

from w2v.decode.graph import add_disambig, build_hlg, make_ctc_topo, read_lexicon  # noqa: E402
from w2v.decode.wfst import HLGDecoder, k2_available  # noqa: E402

LN10 = math.log(10)
# A unigram LM written by hand so that path weights are known exactly (log10 probabilities).
P = {"A": -0.5, "CAT": -0.7, "CAB": -2.5, "BED": -1.0, "</s>": -0.6}
ARPA = ("\\data\\\nngram 1=6\n\n\\1-grams:\n-99\t<s>\n"
        + "".join(f"{p}\t{w}\n" for w, p in P.items()) + "\n\\end\\\n")


@pytest.fixture
def graph(lang_dir):
    (lang_dir / "lm.arpa").write_text(ARPA)
    info = build_hlg(lang_dir / "units.txt", lang_dir / "lexicon.txt", lang_dir / "lm.arpa", lang_dir / "graph")
    return lang_dir / "graph", info


def _tokens(units, spelled):
    return [units.index(u) + 1 for u in spelled]


def _best_path(graph_dir, token_ids):
    hlg = kaldifst.StdVectorFst.read(str(graph_dir / "HLG.fst"))
    words = [line.split()[0] for line in (graph_dir / "words.txt").read_text().splitlines()]
    paths = kaldifst.compose(kaldifst.make_linear_acceptor(token_ids), hlg)
    if paths.num_states == 0:
        return None, None
    ok, _, olabels, weight = kaldifst.get_linear_symbol_sequence(kaldifst.shortest_path(paths))
    assert ok
    return [words[i] for i in olabels], weight.value


def test_disambiguation_symbols():
    lex = [("CAT", list("CAT")), ("KAT", list("CAT")), ("CATS", list("CATS")), ("A", ["A"])]
    out, top = add_disambig(lex)
    # CAT/KAT share a spelling (#1, #2); CAT is also a prefix of CATS; A is a prefix of nothing
    assert [d for *_, d in out] == [1, 2, 0, 0] and top == 2


def test_ctc_topology_collapses_repeats_and_blanks():
    H = make_ctc_topo(3)  # units 0 (blank), 1, 2 -> tokens 1, 2, 3
    assert H.num_states == 3 and sum(H.num_arcs(s) for s in range(3)) == 9
    # frames: 1 1 blank 1 2 2  ->  units 1 1 2
    path = kaldifst.shortest_path(kaldifst.compose(kaldifst.make_linear_acceptor([2, 2, 1, 2, 3, 3]), H))
    ok, _, olabels, _ = kaldifst.get_linear_symbol_sequence(path)
    assert ok and olabels == [2, 2, 3]


def test_hlg_paths_and_weights(graph, units):
    graph_dir, info = graph
    assert info["lm_oov"] == 0 and info["HLG_states"] > 0
    words, cost = _best_path(graph_dir, _tokens(units, ["A", "|", "C", "A", "T"]))
    assert words == ["A", "CAT"]
    assert cost == pytest.approx(-LN10 * (P["A"] + P["CAT"] + P["</s>"]), abs=1e-3)
    # repeated frames and blanks spell the same words at the same cost
    words, cost2 = _best_path(graph_dir, _tokens(units, ["<blank>", "A", "A", "|", "<blank>", "C", "A", "A", "T"]))
    assert words == ["A", "CAT"] and cost2 == pytest.approx(cost, abs=1e-3)
    # CATS is in the lexicon but not in the LM: no path spells it
    assert _best_path(graph_dir, _tokens(units, ["C", "A", "T", "S"])) == (None, None)
    # a word separator is needed between words
    assert _best_path(graph_dir, _tokens(units, ["A", "C", "A", "T"]))[0] is None


def test_decode_hand_made_posteriors(graph, make_emissions, ambiguous):
    graph_dir, _ = graph
    dec = HLGDecoder(graph_dir)
    # the acoustics slightly prefer CAB; the LM prefers CAT by 1.8 log10 units
    assert dec.decode_one(make_emissions(ambiguous)) == "A CAT"
    assert HLGDecoder(graph_dir, acoustic_scale=50.0).decode_one(make_emissions(ambiguous)) == "A CAB"
    assert dec.decode_one(make_emissions(["B", "E", "<blank>", "D"])) == "BED"
    assert dec.decode_one(make_emissions([])) == ""
    with pytest.raises(ValueError, match="built for 9 units, the log-probs have 5"):
        dec.decode_one(torch.zeros(3, 5))
    nbest = HLGDecoder(graph_dir, nbest_beam=12, lattice_beam=8).nbest_one(make_emissions(ambiguous), n=5)
    assert [h.text for h in nbest[:2]] == ["A CAT", "A CAB"]
    assert nbest[0].first_pass > nbest[1].first_pass
    assert nbest[1].am > nbest[0].am  # CAB is the acoustically better one
    # the acoustic score is the CTC log-likelihood of the spelled hypothesis
    em = make_emissions(ambiguous)
    target = torch.tensor([[2, 1, 4, 2, 7]])  # A | C A T
    ctc = -torch.nn.functional.ctc_loss(em.unsqueeze(1), target, [em.shape[0]], [5], reduction="sum")
    assert nbest[0].am == pytest.approx(ctc.item(), abs=1e-4)


def test_bpe_like_units_without_word_separator(tmp_path, make_emissions):
    units = ["<blank>", "\u2581CA", "T", "B", "\u2581A"]
    (tmp_path / "units.txt").write_text("".join(f"{u} {i}\n" for i, u in enumerate(units)))
    (tmp_path / "lexicon.txt").write_text("CAT \u2581CA T\nCAB \u2581CA B\nA \u2581A\n")
    (tmp_path / "lm.arpa").write_text(ARPA)
    build_hlg(tmp_path / "units.txt", tmp_path / "lexicon.txt", tmp_path / "lm.arpa", tmp_path / "g")
    em = make_emissions(["\u2581A", "\u2581CA", "<blank>", "T"], units=units)
    assert HLGDecoder(tmp_path / "g").decode_one(em) == "A CAT"


def test_oov_heavy_lm_is_reported(lang_dir, caplog):
    oov = ["W%d" % i for i in range(20)]
    arpa = ("\\data\\\nngram 1=23\n\n\\1-grams:\n-99\t<s>\n-1\t</s>\n-1\tCAT\n"
            + "".join(f"-1.5\t{w}\n" for w in oov) + "\n\\end\\\n")
    (lang_dir / "oov.arpa").write_text(arpa)
    info = build_hlg(lang_dir / "units.txt", lang_dir / "lexicon.txt", lang_dir / "oov.arpa", lang_dir / "g")
    assert info["lm_oov"] == 20 and info["lm_words"] == 21
    assert "20 of 21 LM words" in caplog.text
    (lang_dir / "all_oov.arpa").write_text(arpa.replace("-1\tCAT\n", "").replace("ngram 1=23", "ngram 1=22"))
    with pytest.raises(ValueError, match="none of the 20 words"):
        build_hlg(lang_dir / "units.txt", lang_dir / "lexicon.txt", lang_dir / "all_oov.arpa", lang_dir / "g2")


def test_missing_inputs_are_named(lang_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.arpa"):
        build_hlg(lang_dir / "units.txt", lang_dir / "lexicon.txt", tmp_path / "nope.arpa", tmp_path / "g")
    with pytest.raises(FileNotFoundError, match="HLG.fst is missing"):
        HLGDecoder(tmp_path / "empty")


def test_lexicon_with_unknown_unit(lang_dir):
    (lang_dir / "bad.txt").write_text("DOG D O G |\n")
    with pytest.raises(ValueError, match=r"bad.txt:1: units \['G', 'O'\]"):
        read_lexicon(lang_dir / "bad.txt", ["<blank>", "|", "D"])


@pytest.mark.skipif(not k2_available(), reason="k2 is not installed (not on PyPI for this Python/torch)")
def test_k2_backend_matches_kaldi(graph, make_emissions, ambiguous):
    graph_dir, _ = graph
    em = make_emissions(ambiguous)
    assert HLGDecoder(graph_dir, backend="k2").decode_one(em) == HLGDecoder(graph_dir).decode_one(em)


def test_k2_backend_absent_is_a_clear_error(graph):
    if k2_available():
        pytest.skip("k2 is installed")
    with pytest.raises(RuntimeError, match="k2 is not importable"):
        HLGDecoder(graph[0], backend="k2")
