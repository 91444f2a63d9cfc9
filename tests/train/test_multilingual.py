"""Multilingual (XLSR) pre-training in the loop: hours per language are logged and match the
batches the plan drew, and a killed multilingual run resumes bit-identically."""

from __future__ import annotations

import json

import pytest
import torch
from lhotse import CutSet

from synth import run_killed_after_checkpoint, write_two_language_cuts
from test_loop import _cfg, _pretrain_cfg
from w2v.data.batching import BatchPlan
from w2v.data.cuts import cut_language
from w2v.train import checkpoint as ck
from w2v.train.loop import train


def _rows(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def _expected_seconds(cuts_path, tcfg):
    """Replay the plan the loop uses: seconds of (cropped) audio per language, update by update."""
    cuts = [c for c in CutSet.from_file(cuts_path) if c.duration >= tcfg.min_seconds]
    crop = int(tcfg.crop_seconds * 16000)
    langs = [cut_language(c) for c in cuts]
    plan = BatchPlan([min(c.duration, tcfg.crop_seconds) for c in cuts], tcfg.max_duration, seed=tcfg.seed,
                     num_buckets=tcfg.num_buckets, languages=langs, alpha=tcfg.language_alpha)
    out, epoch, pos = {}, 0, 0
    for _ in range(tcfg.max_updates):
        while pos >= len(plan.epoch(epoch)):
            epoch, pos = epoch + 1, 0
        batch = plan.epoch(epoch)[pos]
        pos += 1
        lang = langs[batch[0]]
        out[lang] = out.get(lang, 0.0) + sum(min(cuts[i].num_samples, crop) for i in batch) / 16000
    return out


def test_pretraining_logs_hours_per_language(tmp_path, caplog):
    cuts = write_two_language_cuts(tmp_path / "c", n={"en": 8, "es": 3})
    tcfg = _pretrain_cfg(max_updates=8, language_alpha=0.3)
    with caplog.at_level("INFO"):
        m = ck.load(train(tcfg, cuts, tmp_path / "exp", _cfg()))
    rows = _rows(tmp_path / "exp" / "train_log.jsonl")
    assert all("lang_hours" in r for r in rows)
    expected = _expected_seconds(cuts, tcfg)
    assert set(expected) == {"en", "es"}  # both languages were drawn in 8 updates
    assert rows[-1]["lang_hours"] == pytest.approx({k: v / 3600 for k, v in expected.items()}, abs=2e-6)
    # cumulative: never decreasing
    for a, b in zip(rows, rows[1:]):
        assert all(b["lang_hours"].get(k, 0) >= v for k, v in a["lang_hours"].items())
    summary = json.loads((tmp_path / "exp" / "language_sampling.json").read_text())
    assert summary == m["language_sampling"] and summary["alpha"] == 0.3
    langs = summary["languages"]
    assert langs["en"]["hours_sampled"] == pytest.approx(expected["en"] / 3600, abs=2e-6)
    assert langs["en"]["probability"] + langs["es"]["probability"] == pytest.approx(1.0, abs=1e-5)
    assert langs["es"]["probability"] > langs["es"]["hours_available"] / (
        langs["es"]["hours_available"] + langs["en"]["hours_available"])  # alpha < 1 up-samples es
    assert any("hours sampled per language: en" in r.getMessage() for r in caplog.records)


def test_pretraining_cuts_without_supervision_carry_language(tmp_path):
    """Pre-training cuts (no supervisions) carry the language in cut.custom."""
    src = CutSet.from_file(write_two_language_cuts(tmp_path / "c", n={"en": 4, "es": 2}))
    cuts = CutSet.from_cuts(c.drop_supervisions().with_custom("language", c.supervisions[0].language) for c in src)
    path = tmp_path / "pre.jsonl.gz"
    cuts.to_file(path)
    assert sorted({cut_language(c) for c in CutSet.from_file(path)}) == ["en", "es"]
    train(_pretrain_cfg(max_updates=2), path, tmp_path / "exp", _cfg())
    assert set(_rows(tmp_path / "exp" / "train_log.jsonl")[-1]["lang_hours"]) <= {"en", "es"}


def test_killed_multilingual_run_resumes_bit_identical(tmp_path, monkeypatch):
    cuts = write_two_language_cuts(tmp_path / "c", n={"en": 7, "es": 3})
    ref = ck.load(train(_pretrain_cfg(), cuts, tmp_path / "ref", _cfg()))
    run_killed_after_checkpoint(monkeypatch, 4, lambda: train(_pretrain_cfg(), cuts, tmp_path / "run", _cfg()))
    resumed = ck.load(train(_pretrain_cfg(), cuts, tmp_path / "run", _cfg()))
    for k, v in ref["model"].items():
        assert torch.equal(v, resumed["model"][k]), k
    assert resumed["language_sampling"] == ref["language_sampling"]
    a, b = _rows(tmp_path / "ref" / "train_log.jsonl"), _rows(tmp_path / "run" / "train_log.jsonl")
    assert [r["lang_hours"] for r in a] == [r["lang_hours"] for r in b]
    assert [r["loss"] for r in a] == [r["loss"] for r in b]
