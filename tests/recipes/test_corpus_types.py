"""Corpus-type plumbing: local/<type>.py discovery, schema, corpus-defined labeled subsets."""

from __future__ import annotations

import json

import pytest
from lhotse import AudioSource, Recording, RecordingSet, SupervisionSegment, SupervisionSet

from w2v import config as w2vconfig
from w2v.data import corpora
from w2v.data.cuts import make_cuts
from w2v.data.ingest import CorpusError


def test_types_are_builtin_plus_local_modules_with_prepare(tmp_path, monkeypatch):
    types = corpora.corpus_types()
    assert types[:2] == ["folder", "kaldi"]
    assert {"librispeech", "wsj", "timit", "commonvoice", "babel"} <= set(types)
    assert "demo" not in types  # local/demo.py makes a corpus; it is not a corpus type
    monkeypatch.chdir(tmp_path)
    (tmp_path / "local").mkdir()
    (tmp_path / "local" / "mine.py").write_text("def prepare(corpus, key, num_threads):\n    return [], []\n")
    (tmp_path / "local" / "helper.py").write_text("def prepare_text(x):\n    return x\n")
    assert "mine" in corpora.corpus_types() and "helper" not in corpora.corpus_types()
    assert corpora.load("mine").prepare({}, "corpus", 1) == ([], [])


def _cfg(corpus):
    return {"recipe": "r", "model": "base", "corpus": corpus}


def test_schema_dispatch():
    w2vconfig.validate(_cfg({"type": "babel", "path": "x", "untranscribed": False}), "c.yaml")
    with pytest.raises(w2vconfig.ConfigError, match=r"corpus.type: 'libri' is not one of .*librispeech"):
        w2vconfig.validate(_cfg({"type": "libri", "path": "x"}), "c.yaml")
    with pytest.raises(w2vconfig.ConfigError, match=r"corpus: unknown key\(s\) \['languages'\].*'path'"):
        w2vconfig.validate(_cfg({"type": "folder", "path": "x", "languages": ["es"]}), "c.yaml")
    with pytest.raises(CorpusError, match="does not exist"):
        corpora.check([{"type": "folder", "path": "/nonexistent/corpus"}])


def _manifests(tmp_path):
    recs, sups = [], []
    for i in range(8):
        rid = f"s{i % 4}-{i}"
        recs.append(Recording(id=rid, sources=[AudioSource(type="file", channels=[0], source="/x.flac")],
                              sampling_rate=16000, num_samples=16000, duration=1.0))
        subsets = (["llp"] if i < 3 else []) + ["flp"]
        sups.append(SupervisionSegment(id=rid, recording_id=rid, start=0, duration=1.0, channel=0, text="A B",
                                       speaker=f"s{i % 4}", custom={"split": "train", "subsets": subsets}))
    out = tmp_path / "m"
    out.mkdir(parents=True)
    RecordingSet.from_recordings(recs).to_file(out / "recordings.jsonl.gz")
    SupervisionSet.from_segments(sups).to_file(out / "supervisions.jsonl.gz")
    return out


def test_corpus_defined_subsets_and_all(tmp_path):
    paths = make_cuts(_manifests(tmp_path), tmp_path / "c", labeled_subsets={"llp": None, "flp": None, "all": None,
                                                                              "2s": 2.0})
    summary = json.loads(paths["summary"].read_text())["sets"]
    assert summary["train_llp"]["utterances"] == 3 and summary["train_flp"]["utterances"] == 8
    assert summary["train_all"]["utterances"] == 8 and summary["train_2s"]["utterances"] == 2
    with pytest.raises(CorpusError, match="'mlp' is neither a duration .* defines: flp, llp"):
        make_cuts(_manifests(tmp_path / "x"), tmp_path / "c2", labeled_subsets={"mlp": None})
