"""Languages from the recipe's corpus parts to the cuts: supervisions, pre-training cuts
(labeled and unlabeled audio) and the summary carry them."""

from __future__ import annotations

import json

import pytest
import soundfile as sf
from lhotse import CutSet

from corpus_fixtures import tone
from w2v.config import ConfigError, validate
from w2v.data.cuts import cut_language, make_cuts
from w2v.data.ingest import prepare


def _spanish(root):
    root.mkdir(parents=True)
    sf.write(root / "es1-001.wav", tone(1.0, 16000, freq=300), 16000)
    sf.write(root / "es1-002.wav", tone(1.5, 16000, freq=300), 16000)
    sf.write(root / "esPool-001.wav", tone(2.0, 16000, freq=300), 16000)  # unlabeled
    (root / "transcripts.tsv").write_text("es1-001\tHOLA\nes1-002\tBUENOS DIAS\n", encoding="utf-8")
    return root


def test_corpus_part_languages_reach_the_cuts(folder_corpus, tmp_path):
    corpus = [{"type": "folder", "path": str(folder_corpus), "language": "en"},
              {"type": "folder", "path": str(_spanish(tmp_path / "es")), "language": "es"}]
    validate({"recipe": "x", "model": "tiny", "corpus": corpus}, "recipe.yaml")
    prepare(corpus, tmp_path / "m")
    paths = make_cuts(tmp_path / "m", tmp_path / "cuts")
    pre = {c.id: cut_language(c) for c in CutSet.from_file(paths["pretrain"])}
    assert pre == {"pool-001": "en", "spkA-001": "en", "spkA-002": "en",  # spkA-001 is a stereo MixedCut
                   "es1-001": "es", "es1-002": "es", "esPool-001": "es"}
    train = {c.id: c for c in CutSet.from_file(paths["train"])}
    assert {k: c.supervisions[0].language for k, c in train.items()} == {
        "spkA-001": "en", "spkA-002": "en", "es1-001": "es", "es1-002": "es"}
    summary = json.loads(paths["summary"].read_text())["sets"]
    assert summary["pretrain"]["hours_per_language"] == {"en": round(4.2 / 3600, 4), "es": round(4.5 / 3600, 4)}


def test_without_languages_nothing_changes(folder_corpus, tmp_path):
    prepare({"type": "folder", "path": str(folder_corpus)}, tmp_path / "m")
    assert json.loads((tmp_path / "m" / "languages.json").read_text()) == {"recordings": {}}
    paths = make_cuts(tmp_path / "m", tmp_path / "cuts")
    assert all(cut_language(c) is None for c in CutSet.from_file(paths["pretrain"]))
    assert "hours_per_language" not in json.loads(paths["summary"].read_text())["sets"]["pretrain"]


def test_language_code_is_checked():
    with pytest.raises(ConfigError, match="corpus.language: 'e/n'"):
        validate({"recipe": "x", "model": "tiny", "corpus": {"type": "folder", "path": "p", "language": "e/n"}}, "r")
