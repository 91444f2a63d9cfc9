"""Adapter fine-tuning in the loop: settings are checked, the base stays frozen, the cuts
of other languages are left out, and a killed run resumes bit-identically."""

from __future__ import annotations

import pytest
import torch

from synth import run_killed_after_checkpoint, write_two_language_cuts, write_units
from test_loop import _cfg, _pretrain_cfg
from w2v.models.adapters import is_adapter_key
from w2v.train import checkpoint as ck
from w2v.train.config import TrainConfig
from w2v.train.loop import TrainingError, train


def test_adapter_settings_are_checked():
    ok = TrainConfig.from_dict({"task": "finetune", "adapter": {"lang": "es"}})
    assert ok.adapter == {"lang": "es", "dim": 16}
    for bad in ({"lang": ""}, {"dim": 8}, {"lang": "es", "dim": 0}, {"lang": "es", "size": 8}, "es"):
        with pytest.raises(ValueError, match="adapter must be"):
            TrainConfig.from_dict({"task": "finetune", "adapter": bad}, where="r.yaml")
    with pytest.raises(ValueError, match="fine-tuning setting"):
        TrainConfig.from_dict({"task": "pretrain", "adapter": {"lang": "es"}})


def _ft(**kw):
    d = dict(task="finetune", max_updates=4, lr=1e-3, schedule="tri_stage", max_duration=6.0, save_every=2,
             log_every=1, keep_last=5, adapter={"lang": "es", "dim": 4})
    d.update(kw)
    return TrainConfig(**d)


@pytest.fixture
def setup(tmp_path):
    cuts = write_two_language_cuts(tmp_path / "c", n={"en": 3, "es": 4}, min_s=1.5, max_s=2.0)
    units = write_units(tmp_path / "units.txt")
    pre = train(_pretrain_cfg(max_updates=2), cuts, tmp_path / "pre", _cfg())
    return cuts, units, pre


def test_adapter_run_needs_a_model(tmp_path, setup):
    cuts, units, _ = setup
    with pytest.raises(TrainingError, match="needs one"):
        train(_ft(), cuts, tmp_path / "x", _cfg(), units_path=units)
    with pytest.raises(TrainingError, match="no cuts of language 'fr'"):
        train(_ft(adapter={"lang": "fr", "dim": 4}), cuts, tmp_path / "y", _cfg(), units_path=units,
              init=setup[2])


def test_killed_adapter_run_resumes_bit_identical(tmp_path, setup, monkeypatch, caplog):
    cuts, units, pre = setup
    with caplog.at_level("INFO"):
        ref = ck.load(train(_ft(), cuts, tmp_path / "ref", _cfg(), units_path=units, init=pre, dev_cuts_path=cuts))
    assert any("4 of 7 cuts are in es" in r.getMessage() for r in caplog.records)
    pre_sd = ck.load(pre)["model"]
    for k, v in ref["model"].items():
        if not is_adapter_key(k):
            assert torch.equal(v, pre_sd[k]), k
    assert ref["adapter_lang"] == "es" and list(ref["adapters"]) == ["es"]
    run_killed_after_checkpoint(monkeypatch, 2, lambda: train(_ft(), cuts, tmp_path / "run", _cfg(), units_path=units, init=pre, dev_cuts_path=cuts))
    resumed = ck.load(train(_ft(), cuts, tmp_path / "run", _cfg(), units_path=units, init=pre, dev_cuts_path=cuts))
    for k, v in ref["model"].items():
        assert torch.equal(v, resumed["model"][k]), k
