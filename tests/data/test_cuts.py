"""w2v.data.cuts: 16 kHz mono cuts, nested subsets, carving, filtering."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from lhotse import CutSet

from corpus_fixtures import write_manifests
from w2v.data.cuts import make_cuts
from w2v.data.ingest import CorpusError, prepare


def ids(path):
    return [c.id for c in CutSet.from_file(path)]


def test_folder_corpus_to_16k_mono(folder_corpus, tmp_path):
    prepare({"type": "folder", "path": folder_corpus}, tmp_path / "m")
    paths = make_cuts(tmp_path / "m", tmp_path / "cuts")
    assert {k for k in paths} == {"pretrain", "train", "dev", "test_other", "summary"}
    train = {c.id: c for c in CutSet.from_file(paths["train"])}
    assert sorted(train) == ["spkA-001", "spkA-002"]
    stereo = train["spkA-001"]  # 8 kHz stereo -> 16 kHz mono
    audio = stereo.load_audio()
    assert audio.shape == (1, 16000) and stereo.sampling_rate == 16000
    # channel amplitudes 0.5 and 0.25: the down-mix is their mean
    assert np.abs(audio[0, 2000:-2000]).max() == pytest.approx(0.375, abs=0.01)
    assert [s.text for s in stereo.supervisions] == ["HELLO WORLD"]
    assert train["spkA-002"].supervisions[0].text == "CAFE AU LAIT"
    for c in CutSet.from_file(paths["pretrain"]):
        assert c.load_audio().shape == (1, c.num_samples) and c.sampling_rate == 16000
    assert sorted(ids(paths["pretrain"])) == ["pool-001", "spkA-001", "spkA-002"]  # no dev/test audio
    for name, utt in (("dev", "spkB-001"), ("test_other", "spkB-002")):
        (cut,) = CutSet.from_file(paths[name])
        assert cut.id == utt and cut.sampling_rate == 16000
        assert cut.load_audio().shape == (1, round(cut.duration * 16000))
    summary = json.loads(paths["summary"].read_text())["sets"]
    assert summary["dev"] == {"utterances": 1, "speakers": 1, "hours": pytest.approx(0.8 / 3600, abs=1e-4)}


def test_nested_speaker_balanced_subsets(many_speakers, tmp_path):
    paths = make_cuts(many_speakers, tmp_path / "c", {"10s": 10, "1m": 60, "all": 100})
    sets = {k: list(CutSet.from_file(p)) for k, p in paths.items() if k != "summary"}
    small, mid = [c.id for c in sets["train_10s"]], [c.id for c in sets["train_1m"]]
    assert mid[: len(small)] == small  # nested: a prefix of one ordering
    for name, target in (("train_10s", 10), ("train_1m", 60)):
        durs = [c.duration for c in sets[name]]
        assert sum(durs) >= target > sum(durs[:-1])  # the smallest prefix reaching the target
    per_spk = Counter(c.supervisions[0].speaker for c in sets["train_1m"])
    assert len(per_spk) == 8 and max(per_spk.values()) - min(per_spk.values()) <= 1
    # same seed -> same subsets; another seed -> another ordering
    again = make_cuts(many_speakers, tmp_path / "c2", {"1m": 60})
    assert ids(again["train_1m"]) == mid
    assert ids(make_cuts(many_speakers, tmp_path / "c3", {"1m": 60}, seed=1)["train_1m"]) != mid
    # the 70 s unlabeled recording is split into three windows of <= 30 s
    pre = {c.id: c.duration for c in sets["pretrain"]}
    assert [pre[f"pool-1-w{i:03d}"] for i in range(3)] == [pytest.approx(70 / 3)] * 3
    assert len(pre) == 80 + 1 + 3
    with pytest.raises(CorpusError, match=r"labeled subset '10h' needs 10.000 h .* only 0.042 h \(152 s\)"):
        make_cuts(many_speakers, tmp_path / "c4", {"10h": 36000})


def test_carve_speaker_disjoint_dev_test(many_speakers, tmp_path):
    paths = make_cuts(many_speakers, tmp_path / "c", dev_speakers=2, test_speakers=1, seed=3)
    spk = {name: {c.supervisions[0].speaker for c in CutSet.from_file(paths[name])}
           for name in ("train", "dev", "test")}
    assert (len(spk["train"]), len(spk["dev"]), len(spk["test"])) == (5, 2, 1)
    assert not (spk["train"] & spk["dev"]) and not (spk["train"] & spk["test"]) and not (spk["dev"] & spk["test"])
    pre = set(ids(paths["pretrain"]))
    assert not pre & (set(ids(paths["dev"])) | set(ids(paths["test"])))
    again = make_cuts(many_speakers, tmp_path / "d", dev_speakers=2, test_speakers=1, seed=3)
    assert ids(again["dev"]) == ids(paths["dev"])
    with pytest.raises(CorpusError, match="cannot carve 9 dev speakers"):
        make_cuts(many_speakers, tmp_path / "e", dev_speakers=9)


def test_filters_are_counted(tmp_path, caplog):
    utts = [("a-1", "a", 0.2, "too short", "train"), ("a-2", "a", 40.0, "too long", "train"),
            ("a-3", "a", 2.0, "123 !!", "train"), ("a-4", "a", 2.0, "fine", "train"),
            ("b-1", "b", 2.0, "evaluation", "test")]
    m = write_manifests(tmp_path / "m", utts)
    paths = make_cuts(m, tmp_path / "c", min_duration=0.5, max_duration=30)
    assert ids(paths["train"]) == ["a-4"]
    summary = json.loads(paths["summary"].read_text())
    assert summary["filtered"] == {"too_short": 1, "too_long": 1, "empty_text": 1, "pretrain_too_short": 1}
    assert summary["dropped_characters"] == {"1": 1, "2": 1, "3": 1}
    assert "a-3" in caplog.text and "empty text" in caplog.text
    # the 40 s utterance still serves pre-training, as two 20 s windows
    assert sorted(ids(paths["pretrain"])) == ["a-2-w000", "a-2-w001", "a-3", "a-4"]
