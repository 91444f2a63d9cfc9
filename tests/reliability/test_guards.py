"""Training guards: non-finite loss or gradients skip the update (recorded), N in a row stop; warnings."""

from __future__ import annotations

import json
import math
import logging

import pytest
import torch
from lhotse import load_manifest

from synth import write_tiny_cuts
from test_loop import SMALL
from w2v.models import load_model_config
from w2v.train import checkpoint as ck
from w2v.train import guards, loop, steps
from w2v.train.config import TrainConfig
from w2v.train.guards import NonFiniteError, codebook_warnings


def _cfg(**kw):
    d = dict(task="pretrain", max_updates=5, lr=5e-4, warmup=1, max_duration=4.0, crop_seconds=1.0,
             save_every=5, log_every=1, max_bad_updates=3)
    return TrainConfig(**{**d, **kw})


def _poison(monkeypatch, bad_calls: set[int], kind: str):
    """Make the pre-training loss non-finite (or finite with NaN gradients) on the given calls."""
    real = steps.pretraining_loss
    calls = {"n": 0}

    def loss_fn(out, *a, **k):
        loss, stats = real(out, *a, **k)
        calls["n"] += 1
        if calls["n"] in bad_calls:
            if kind == "loss":
                loss = loss * float("nan")
            else:  # value unchanged, gradient NaN: d/dx sqrt(0 * x) = inf * 0
                loss = loss + torch.sqrt(out.features_pen * 0)
        return loss, stats

    monkeypatch.setattr(steps, "pretraining_loss", loss_fn)  # the wav2vec 2.0 objective the loop calls


@pytest.mark.parametrize("kind", ["loss", "gradient"])
def test_non_finite_update_is_skipped_counted_and_its_cuts_saved(tmp_path, monkeypatch, kind):
    cuts = write_tiny_cuts(tmp_path / "a", n=10)
    _poison(monkeypatch, {2, 4}, kind)
    seen_batches = []
    real_collate = loop.collate_audio
    monkeypatch.setattr(loop, "collate_audio", lambda w, *a: seen_batches.append(len(w)) or real_collate(w, *a))
    out = loop.train(_cfg(), cuts, tmp_path / "exp", load_model_config("tiny", **SMALL))
    m = ck.load(out)
    assert m["num_updates"] == 5 and len(seen_batches) == 7  # 2 skipped batches, 5 updates
    assert all(torch.isfinite(v.float()).all() for v in m["model"].values())
    rows = [json.loads(x) for x in (tmp_path / "exp/skipped_batches.jsonl").read_text().splitlines()]
    assert [r["update"] for r in rows] == [1, 2] and {r["non_finite"] for r in rows} == {
        "loss" if kind == "loss" else "gradient norm"}
    all_ids = {c.id for c in load_manifest(cuts)}
    assert all(r["cut_ids"] and set(r["cut_ids"]) <= all_ids for r in rows)
    assert [len(r["cut_ids"]) for r in rows] == [seen_batches[1], seen_batches[3]]
    log = [json.loads(x) for x in (tmp_path / "exp/train_log.jsonl").read_text().splitlines()]
    assert log[-1]["skipped_updates"] == 2


def test_consecutive_non_finite_updates_stop_with_a_clear_message(tmp_path, monkeypatch):
    cuts = write_tiny_cuts(tmp_path / "a", n=10)
    _poison(monkeypatch, set(range(2, 100)), "loss")
    with pytest.raises(NonFiniteError, match=r"3 updates in a row had a non-finite loss.*skipped_batches.jsonl"):
        loop.train(_cfg(), cuts, tmp_path / "exp", load_model_config("tiny", **SMALL))
    assert len((tmp_path / "exp/skipped_batches.jsonl").read_text().splitlines()) == 3
    assert not (tmp_path / "exp/model.pt").exists()


def test_skipped_batch_record_matches_the_checkpoint_after_resume(tmp_path, monkeypatch):
    """A skip recorded after the checkpoint a killed run resumes from is redone, so it is listed once."""
    cuts = write_tiny_cuts(tmp_path / "a", n=10)
    # call 2 is skipped at update 1; calls 3-5 make updates 2-4 (checkpoint); call 6 is skipped at update 4
    _poison(monkeypatch, {2, 6}, "loss")
    real_skip = guards.SkippedBatches.skip

    class Killed(Exception):
        pass

    def skip_then_die(self, **kw):
        real_skip(self, **kw)
        if kw["update"] == 4:
            raise Killed

    monkeypatch.setattr(guards.SkippedBatches, "skip", skip_then_die)
    cfg = _cfg(max_updates=6, save_every=2)
    with pytest.raises(Killed):
        loop.train(cfg, cuts, tmp_path / "exp", load_model_config("tiny", **SMALL))
    monkeypatch.setattr(guards.SkippedBatches, "skip", real_skip)
    record = tmp_path / "exp/skipped_batches.jsonl"
    assert [json.loads(x)["update"] for x in record.read_text().splitlines()] == [1, 4]
    _poison(monkeypatch, {1}, "loss")  # the resumed run's first batch is the one skipped before the kill
    loop.train(cfg, cuts, tmp_path / "exp", load_model_config("tiny", **SMALL))
    rows = [json.loads(x) for x in record.read_text().splitlines()]
    assert [r["update"] for r in rows] == [1, 4]


def test_codebook_collapse_and_diversity_warnings():
    healthy = {"code_ppl": 500.0, "contrastive": 3.0, "weighted_diversity": 0.05}
    assert codebook_warnings(healthy, 640, 0.1, 1.0) == []
    collapsed = codebook_warnings({**healthy, "code_ppl": 12.0}, 640, 0.1, 1.0)
    assert len(collapsed) == 1 and "codebook collapse" in collapsed[0] and "12.0" in collapsed[0]
    dominant = codebook_warnings({**healthy, "weighted_diversity": 4.0}, 640, 0.1, 1.0)
    assert len(dominant) == 1 and "diversity loss dominates" in dominant[0]
    assert codebook_warnings({**healthy, "code_ppl": 1.0, "weighted_diversity": 9.0}, 640, 0, 0) == []


def test_chance_level_contrastive_loss_warns():
    chance = math.log(101)
    stuck = codebook_warnings({"code_ppl": 600.0, "contrastive": chance + 0.004}, 640, 0.1, 1.0, chance)
    assert len(stuck) == 1 and "at chance" in stuck[0] and "diversity_start" in stuck[0]
    assert codebook_warnings({"code_ppl": 600.0, "contrastive": 3.9}, 640, 0.1, 1.0, chance) == []
    assert codebook_warnings({"code_ppl": 600.0, "contrastive": chance}, 640, 0.1, 1.0, None) == []


def test_training_warns_once_per_log_interval(tmp_path, caplog):
    cuts = write_tiny_cuts(tmp_path / "a", n=10)
    model_cfg = load_model_config("tiny", **SMALL)  # G x V = 2 x 8 codes
    with caplog.at_level(logging.WARNING, logger="w2v.train.loop"):
        loop.train(_cfg(max_updates=4, log_every=2, collapse_fraction=1.01, diversity_weight=100.0), cuts,
                   tmp_path / "warn", model_cfg)
    msgs = [r.getMessage() for r in caplog.records]
    assert sum("codebook collapse" in m for m in msgs) == 2  # updates 2 and 4
    assert sum("diversity loss dominates" in m for m in msgs) == 2
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="w2v.train.loop"):
        loop.train(_cfg(max_updates=4, log_every=2, collapse_fraction=0.0), cuts, tmp_path / "quiet", model_cfg)
    assert not [r for r in caplog.records if "codebook" in r.getMessage() or "dominates" in r.getMessage()]
