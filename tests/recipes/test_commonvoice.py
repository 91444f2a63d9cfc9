"""Common Voice preparation on a fake release (local/commonvoice.py)."""

from __future__ import annotations

import pytest

import fake_layouts as fake
from w2v.data.ingest import CorpusError


def test_two_languages_splits_speakers(tmp_path):
    root = fake.commonvoice(tmp_path / "cv")
    recs, sups = fake.run_prepare({"type": "commonvoice", "path": str(root), "languages": ["es", "fr"]},
                                  tmp_path / "m")
    assert set(sups) == set(fake.CV_UTTS)
    for cid, (lang, split, client, secs, text) in fake.CV_UTTS.items():
        s = sups[cid]
        assert (s.text, s.custom["split"], s.speaker, s.language) == (text, split, client, lang)
        # MP3 frames pad the end a little; the header-derived length must be close
        assert recs[cid].sampling_rate == 48000 and recs[cid].duration == pytest.approx(secs, abs=0.06)


def test_lexicon_gives_phone_texts(tmp_path):
    root = fake.commonvoice(tmp_path / "cv")
    lex = tmp_path / "es.txt"
    lex.write_text("qué k e\ntal t a l\namigo a m i g o\nel e l\nniño n i ɲ o\ncome k o m e\n"
                   "buenos b w e n o s\ndías d i a s\n")
    _, sups = fake.run_prepare({"type": "commonvoice", "path": str(root), "languages": ["es"],
                                "lexicon": str(lex)}, tmp_path / "m")
    assert set(sups) == {"common_voice_es_001", "common_voice_es_002", "common_voice_es_003"}  # 004: OOV
    assert sups["common_voice_es_002"].text == "e l n i ɲ o k o m e"
    assert sups["common_voice_es_002"].custom["words"] == "El niño come."


def test_missing_language_is_listed(tmp_path):
    root = fake.commonvoice(tmp_path / "cv")
    with pytest.raises(CorpusError) as e:
        fake.run_prepare({"type": "commonvoice", "path": str(root), "languages": ["es", "it"]}, tmp_path / "m")
    msg = str(e.value)
    assert "MISSING it/train.tsv" in msg and "found   es/train.tsv" in msg and "Found in" in msg and "fr/" in msg
    with pytest.raises(CorpusError, match="languages"):
        fake.run_prepare({"type": "commonvoice", "path": str(root)}, tmp_path / "m")
