"""TensorBoard events beside train_log.jsonl: the same numbers, rank 0 only, no duplicates after a resume."""

from __future__ import annotations

import json

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import test_loop as tl
from synth import run_killed_after_checkpoint, write_tiny_cuts
from w2v.train.loop import train
from w2v.train.tensorboard import TensorBoardLog


def _scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}


def test_pretraining_events_match_the_json_log(tmp_path):
    cuts = write_tiny_cuts(tmp_path / "a")
    train(tl._pretrain_cfg(), cuts, tmp_path / "exp", tl._cfg())
    rows = [json.loads(x) for x in (tmp_path / "exp" / "train_log.jsonl").read_text().splitlines()]
    got = _scalars(tmp_path / "exp" / "tensorboard")
    for key in ("loss", "accuracy", "code_ppl", "prob_ppl", "temp", "lr", "gnorm"):
        assert [s for s, _ in got[f"train/{key}"]] == [r["update"] for r in rows], key
        assert [v for _, v in got[f"train/{key}"]] == pytest.approx([r[key] for r in rows], rel=1e-5), key


def test_resumed_run_has_each_update_once(tmp_path, monkeypatch):
    cuts = write_tiny_cuts(tmp_path / "a", n=10)
    run_killed_after_checkpoint(monkeypatch, 4, lambda: train(tl._pretrain_cfg(), cuts, tmp_path / "run", tl._cfg()))
    train(tl._pretrain_cfg(), cuts, tmp_path / "run", tl._cfg())
    assert [s for s, _ in _scalars(tmp_path / "run" / "tensorboard")["train/loss"]] == [1, 2, 3, 4, 5, 6]


def test_dev_rows_and_only_rank_zero(tmp_path, monkeypatch):
    tb = TensorBoardLog(tmp_path / "tb")
    tb.log({"update": 5, "epoch": 0, "loss": 2.5})
    tb.log({"update": 5, "dev_wer": 0.5, "dev_cer": 0.25})
    tb.close()
    got = _scalars(tmp_path / "tb")
    assert got["dev/wer"] == [(5, 0.5)] and got["dev/cer"] == [(5, 0.25)] and got["train/loss"] == [(5, 2.5)]
    assert "train/epoch" not in got
    monkeypatch.setenv("RANK", "1")
    other = TensorBoardLog(tmp_path / "tb1")
    other.log({"update": 1, "loss": 1.0})
    other.close()
    assert not (tmp_path / "tb1").exists()
