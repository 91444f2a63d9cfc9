"""BPE and phone units: the lang stage, the tokenizer fine-tuning uses, greedy decoding back to text."""

from __future__ import annotations

import json

import pytest
from lhotse import CutSet
import torch

from corpus_fixtures import write_manifests
from w2v.data.cuts import make_cuts
from w2v.data.lang import build_lang
from w2v.data.units import load_tokenizer, unit_kind, words_to_phones
from w2v.decode.ctc import greedy_decode, load_units

UTTS = [("a-1", "a", 2.0, "the cat sat on the mat", "train"), ("a-2", "a", 2.0, "a dog sat on a log", "train"),
        ("b-1", "b", 2.0, "the dog", "test")]


@pytest.fixture
def train_cuts(tmp_path):
    return make_cuts(write_manifests(tmp_path / "m", UTTS), tmp_path / "c")["train"]


def _one_hot(ids, vocab):
    x = torch.full((1, len(ids), vocab), -10.0)
    for t, i in enumerate(ids):
        x[0, t, i] = 0.0
    return x


def test_bpe_lang_roundtrip(tmp_path, train_cuts):
    lm = tmp_path / "lm.txt"
    lm.write_text("the cat and the dog\nthe mat on the log\n" * 20)
    p = build_lang(train_cuts, tmp_path / "lang", lm_text_path=lm, units="bpe", vocab_size=30)
    units = load_units(p["units"])
    assert units[0] == "<blank>" and len(units) == 31 and unit_kind(units) == "bpe"
    assert json.loads(p["lang"].read_text())["units"] == "bpe"
    tok = load_tokenizer(p["units"])
    ids = tok.encode("THE CAT SAT")
    assert ids and all(0 < i < len(units) for i in ids)
    # greedy decoding of those pieces (with a blank between repeats) gives the words back
    frames = []
    for i in ids:
        frames += [i, 0]
    assert greedy_decode(_one_hot(frames, len(units)), None, units) == ["THE CAT SAT"]
    lex = dict(line.split(maxsplit=1) for line in p["lexicon"].read_text().splitlines())
    assert lex["CAT"].split() == tok.pieces("CAT") and lex["CAT"].startswith("\u2581")


def test_phone_lang(tmp_path, train_cuts):
    plex = tmp_path / "phones.txt"
    plex.write_text("THE dh ax\nCAT k ae t\nSAT s ae t\nON aa n\nMAT m ae t\nA ax\nDOG d ao g\n")
    p = build_lang(train_cuts, tmp_path / "lang", units="phone", phone_lexicon=plex)
    units = load_units(p["units"])
    assert unit_kind(units) == "phone" and "|" not in units and "ae" in units
    assert "CAT k ae t" in p["lexicon"].read_text().splitlines()
    assert "LOG" not in p["words"].read_text().split()  # not in the phone lexicon: left out
    tok = load_tokenizer(p["units"])
    assert tok.pieces("THE CAT") == ["dh", "ax", "k", "ae", "t"]
    assert tok.encode("A LOG") is None  # fine-tuning drops (and counts) it
    ids = tok.encode("THE CAT")
    assert greedy_decode(_one_hot(ids, len(units)), None, units) == ["dh ax k ae t"]
    with pytest.raises(KeyError, match="'LOG'"):
        words_to_phones("A LOG", {"A": ["ax"]})


def test_phone_lang_without_lexicon_reads_transcripts_as_phone_sequences(tmp_path, train_cuts):
    """TIMIT's transcripts are phone strings: every token is a unit and its own lexicon word."""
    p = build_lang(train_cuts, tmp_path / "lang", units="phone")
    units = load_units(p["units"])
    train_tokens = {t for c in CutSet.from_file(train_cuts) for s in c.supervisions for t in s.text.split()}
    assert set(units[1:]) == train_tokens
    assert "CAT CAT" in p["lexicon"].read_text().splitlines()
    assert load_tokenizer(p["units"]).pieces("THE CAT") == ["THE", "CAT"]


def test_char_dir_without_lang_json_is_characters(tmp_path, train_cuts):
    p = build_lang(train_cuts, tmp_path / "lang")
    p["lang"].unlink()  # a lang directory from before BPE/phones
    tok = load_tokenizer(p["units"])
    assert tok.kind == "char"
    units = load_units(p["units"])
    assert [units[i] for i in tok.encode("THE CAT")] == ["T", "H", "E", "|", "C", "A", "T"]
    assert tok.encode("THE ZEBRA") is None


def test_bpe_units_flow_into_finetuning(tmp_path):
    """The model's output layer follows units.txt; transcripts are cut by the BPE model."""
    from synth import write_tiny_cuts
    from test_loop import _cfg
    from w2v.train import checkpoint as ck
    from w2v.train.config import TrainConfig
    from w2v.train.loop import train

    torch.manual_seed(0)
    cuts = write_tiny_cuts(tmp_path / "a", n=4, min_s=1.5, max_s=2.0)
    with pytest.raises(ValueError, match="lang.vocab_size 12: .*smaller than required_chars"):
        build_lang(cuts, tmp_path / "lang", units="bpe", vocab_size=12)
    p = build_lang(cuts, tmp_path / "lang", units="bpe", vocab_size=24)
    ft = TrainConfig(task="finetune", max_updates=1, lr=1e-3, max_duration=8.0, save_every=1)
    m = ck.load(train(ft, cuts, tmp_path / "ft", _cfg(), units_path=p["units"]))
    assert m["units"] == load_units(p["units"]) and m["model"]["lm_head.weight"].shape[0] == 25
