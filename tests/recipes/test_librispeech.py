"""LibriSpeech + Libri-light preparation on a fake layout (local/librispeech.py)."""

from __future__ import annotations

import shutil

import pytest

import fake_layouts as fake
from w2v.data.ingest import CorpusError


@pytest.fixture
def corpus(tmp_path):
    return fake.librispeech(tmp_path / "corpora")


def test_manifests_splits_subsets_and_unlabeled(corpus, tmp_path):
    cfg = {"type": "librispeech", "path": str(corpus["ls"]), "finetuning": str(corpus["finetuning"]),
           "librilight": str(corpus["librilight"])}
    recs, sups = fake.run_prepare(cfg, tmp_path / "m")
    assert set(sups) == set(corpus["utts"])
    for uid, (secs, text, split) in corpus["utts"].items():
        s = sups[uid]
        assert s.text == text and s.custom["split"] == split and s.speaker == uid.split("-")[0]
        assert recs[uid].duration == pytest.approx(secs, abs=1e-3) and s.duration == pytest.approx(secs, abs=1e-3)
    subsets = {uid: s.custom.get("subsets", []) for uid, s in sups.items()}
    # the shared utterance: train-clean-100 (100h, 960h) and fold 0 of 1h (10m, 1h, 10h)
    assert subsets["104-7-0000"] == ["100h", "10h", "10m", "1h", "960h"]
    assert subsets["104-7-0001"] == ["100h", "960h"] and subsets["105-7-0000"] == ["960h"]
    assert sum("10m" in v for v in subsets.values()) == 2  # fold 0: clean + other
    assert sum("1h" in v for v in subsets.values()) == 12
    assert sum("10h" in v for v in subsets.values()) == 14
    assert {s.custom["split"] for s in sups.values()} == {"train", "dev_clean", "dev_other", "test_clean", "test_other"}
    unlabeled = set(recs) - {s.recording_id for s in sups.values()}
    assert len(unlabeled) == 1 and recs[unlabeled.pop()].duration == pytest.approx(1.5)


def test_960h_needs_every_training_part(corpus, tmp_path):
    cfg = {"type": "librispeech", "path": str(corpus["ls"]), "labeled": ["train-clean-100", "train-other-500"]}
    _, sups = fake.run_prepare(cfg, tmp_path / "m")
    assert "105-7-0000" not in sups  # train-clean-360 is not labeled here
    assert sups["104-7-0000"].custom["subsets"] == ["100h"] and "subsets" not in sups["106-7-0000"].custom


def test_other_fold_is_10m(corpus, tmp_path):
    cfg = {"type": "librispeech", "path": str(corpus["ls"]), "finetuning": str(corpus["finetuning"]),
           "ten_minute_fold": 3}
    _, sups = fake.run_prepare(cfg, tmp_path / "m")
    ten = sorted(s.text for s in sups.values() if "10m" in s.custom.get("subsets", []))
    assert ten == ["FOLD 1H/3/CLEAN", "FOLD 1H/3/OTHER"]


def test_missing_parts_are_listed(corpus, tmp_path):
    ls = str(corpus["ls"])
    with pytest.raises(CorpusError, match="LibriSpeeh does not exist.*holds: LibriSpeech, librilight"):
        fake.run_prepare({"type": "librispeech", "path": ls[:-3] + "eh"}, tmp_path / "m")
    with pytest.raises(CorpusError, match="unknown key.*'labelled'"):
        fake.run_prepare({"type": "librispeech", "path": ls, "labelled": []}, tmp_path / "m")
    shutil.rmtree(corpus["finetuning"] / "9h")
    with pytest.raises(CorpusError, match=r"(?s)finetuning.*MISSING 9h/clean"):
        fake.run_prepare({"type": "librispeech", "path": ls, "finetuning": str(corpus["finetuning"])}, tmp_path / "m")
    shutil.rmtree(corpus["ls"] / "dev-other")
    with pytest.raises(CorpusError) as e:
        fake.run_prepare({"type": "librispeech", "path": ls}, tmp_path / "m")
    msg = str(e.value)
    assert "MISSING dev-other/*/*/*.trans.txt" in msg and "found   dev-clean/*/*/*.trans.txt" in msg
    assert "Found in" in msg and "test-other/" in msg
