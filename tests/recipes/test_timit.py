"""TIMIT preparation on a fake layout (local/timit.py) and the 61 -> 39 fold map."""

from __future__ import annotations

import shutil

import pytest

import fake_layouts as fake
from w2v.data.ingest import CorpusError

FOLD = fake.ROOT / "egs/timit/fold61_39.tsv"


@pytest.mark.parametrize("ldc_layout", [False, True])
def test_manifests_phones_words_sets(tmp_path, ldc_layout):
    root = fake.timit(tmp_path / "timit", ldc_layout=ldc_layout)
    recs, sups = fake.run_prepare({"type": "timit", "path": str(root)}, tmp_path / "m")
    expected = {f"{spk}-{sent}": (phones, words, part, spk)
                for (part, _, spk, sent), (phones, words) in fake.TIMIT_UTTS.items()
                if sent != "SA1" and spk != "MABC0"}
    assert set(sups) == set(expected)
    split = {"FCJF0": "train", "MKLS0": "train", "FAKS0": "dev", "MDAB0": "test"}
    for uid, (phones, words, _, spk) in expected.items():
        s = sups[uid]
        assert s.text == phones.removeprefix("h# ").removesuffix(" h#") and s.custom["words"] == words
        assert s.speaker == spk and s.custom["split"] == split[spk]
        assert recs[uid].duration == pytest.approx(0.05 * len(phones.split()))


def test_sa_sentences_on_request(tmp_path):
    root = fake.timit(tmp_path / "timit")
    _, sups = fake.run_prepare({"type": "timit", "path": str(root), "keep_sa": True}, tmp_path / "m")
    assert sups["FCJF0-SA1"].text == "dh ax q ae"


def test_fold_map_is_lee_and_hon():
    from lhotse.recipes.timit import get_phonemes

    rows = [line.split("\t") for line in FOLD.read_text().splitlines() if not line.startswith("#")]
    fold = {a: b for a, b in rows}
    assert len(rows) == len(fold) == 61
    assert {k: v for k, v in get_phonemes(39).items() if k != "sil"} == fold
    assert len(set(fold.values()) - {""}) == 39 and fold["q"] == "" and fold["pcl"] == "sil"


def test_missing_parts_are_listed(tmp_path):
    root = fake.timit(tmp_path / "timit")
    shutil.rmtree(root / "data" / "TEST")
    with pytest.raises(CorpusError) as e:
        fake.run_prepare({"type": "timit", "path": str(root)}, tmp_path / "m")
    msg = str(e.value)
    assert "MISSING data/TEST/DR*/*/*.WAV" in msg and "found   data/TRAIN/DR*/*/*.WAV" in msg and "data/" in msg
