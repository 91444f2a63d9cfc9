"""Untrusted files: our checkpoints need no unpickling; a foreign pickle is refused unless trusted."""

from __future__ import annotations

import os
import sys

import pytest
import torch
import yaml

from reliability.helpers import run
from synth import write_tiny_cuts
from test_loop import SMALL
from w2v import config
from w2v.cli import main
from w2v.models import load_model_config
from w2v.train import checkpoint as ck
from w2v.train.config import TrainConfig
from w2v.train.loop import train


class _Payload:
    """Unpickling this creates a marker file: what a malicious checkpoint would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def test_our_checkpoints_load_with_weights_only(tmp_path):
    cuts = write_tiny_cuts(tmp_path / "a", n=6)
    out = train(TrainConfig(task="pretrain", max_updates=2, warmup=1, max_duration=4.0, crop_seconds=1.0,
                            save_every=2), cuts, tmp_path / "exp", load_model_config("tiny", **SMALL))
    for path in [out, *(tmp_path / "exp/checkpoints").glob("*.pt")]:
        state = torch.load(path, weights_only=True)
        assert state["model"] and state["task"] == "pretrain"
    resume = torch.load(next((tmp_path / "exp/checkpoints").glob("checkpoint_*.pt")), weights_only=True)
    assert {"torch", "numpy", "python"} <= set(resume["rng"][0]) and "optimizer" in resume


def _malicious(tmp_path):
    marker = tmp_path / "pwned"
    pt = tmp_path / "wav2vec_small.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "args": _Payload(marker)}, pt)
    return pt, marker


def test_foreign_pickle_is_refused_without_trust_and_runs_nothing(tmp_path):
    pt, marker = _malicious(tmp_path)
    with pytest.raises(ck.UntrustedCheckpointError, match="--trust-checkpoint"):
        ck.load(pt)
    r = run([sys.executable, "-m", "w2v.cli", "import-checkpoint", str(pt),
             str(tmp_path / "model.pt")])
    assert r.returncode != 0
    assert "can run arbitrary code" in r.stderr and "--trust-checkpoint" in r.stderr and "Traceback" not in r.stderr
    assert not marker.exists() and not (tmp_path / "model.pt").exists()
    # trusting it really unpickles (the payload runs), which is why it takes an explicit flag
    with pytest.raises(SystemExit):
        main(["import-checkpoint", str(pt), str(tmp_path / "model.pt"), "--trust-checkpoint"])
    assert marker.exists()


def test_yaml_is_read_safely(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("recipe: !!python/object/apply:os.makedirs ['" + str(tmp_path / "pwned") + "']\n"
                      "corpus: {type: folder, path: x}\nmodel: tiny\n")
    with pytest.raises(config.ConfigError, match="cannot parse"):
        config.load(recipe)
    assert not (tmp_path / "pwned").exists()
    model = tmp_path / "m.yaml"
    model.write_text("encoder_layers: !!python/object/apply:os.makedirs ['" + str(tmp_path / "pwned") + "']\n")
    with pytest.raises(yaml.YAMLError):
        load_model_config(str(model))
    assert not (tmp_path / "pwned").exists()
