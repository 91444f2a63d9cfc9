"""BABEL preparation on a fake language pack (local/babel.py)."""

from __future__ import annotations

import shutil

import pytest

import fake_layouts as fake
from w2v.data.ingest import CorpusError


def test_segments_splits_packs_and_untranscribed(tmp_path):
    pack = fake.babel(tmp_path / "babel")
    recs, sups = fake.run_prepare({"type": "babel", "path": str(pack)}, tmp_path / "m")
    by_text = {s.text: s for s in sups.values()}
    assert set(by_text) == {"nei5 hou2 aa3", "m4 goi1", "hai6 aa3", "zou2 san4"}  # tag-only segments dropped
    s = by_text["nei5 hou2 aa3"]
    assert (s.start, s.duration) == (0.5, 1.5) and s.speaker == "101_10033_A" and s.language == "Cantonese"
    assert s.custom == {"split": "train", "subsets": ["flp", "llp"]}
    assert by_text["hai6 aa3"].custom["subsets"] == ["flp"]  # not in the limited pack
    assert by_text["zou2 san4"].custom == {"split": "test_dev"}
    assert by_text["m4 goi1"].duration == pytest.approx(1.0)
    untranscribed = set(recs) - {x.recording_id for x in sups.values()}
    assert len(untranscribed) == 1 and recs[untranscribed.pop()].sampling_rate == 8000
    assert recs[s.recording_id].load_audio().shape == (1, 24000)  # 3 s at 8 kHz, decoded
    recs2, _ = fake.run_prepare({"type": "babel", "path": str(pack), "untranscribed": False}, tmp_path / "m2")
    assert set(recs2) == {x.recording_id for x in sups.values()}


def test_two_languages(tmp_path):
    packs = [fake.babel(tmp_path / "babel", code) for code in ("101", "202")]
    _, sups = fake.run_prepare([{"type": "babel", "path": str(p)} for p in packs], tmp_path / "m")
    assert {s.language for s in sups.values()} == {"Cantonese", "Swahili"} and len(sups) == 8


def test_missing_dev_is_listed(tmp_path):
    pack = fake.babel(tmp_path / "babel")
    shutil.rmtree(pack / "conversational" / "dev")
    with pytest.raises(CorpusError) as e:
        fake.run_prepare({"type": "babel", "path": str(pack)}, tmp_path / "m")
    msg = str(e.value)
    assert "MISSING conversational/dev/audio/*" in msg and "found   conversational/training/audio/*" in msg
