"""bf16 training on CUDA (skipped on CPU-only machines)."""

import pytest
import torch

from synth import write_tiny_cuts
from w2v.train import checkpoint as ck
from w2v.train.config import TrainConfig
from w2v.train.loop import train

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_pretraining_bf16_on_cuda(tmp_path):
    from test_loop import _cfg

    cuts = write_tiny_cuts(tmp_path / "a")
    tcfg = TrainConfig(task="pretrain", max_updates=3, lr=5e-4, warmup=1, max_duration=4.0, crop_seconds=1.0,
                       save_every=3, log_every=1)
    out = ck.load(train(tcfg, cuts, tmp_path / "exp", _cfg(), device="cuda"))
    assert out["num_updates"] == 3
    assert all(torch.isfinite(v).all() for v in out["model"].values() if v.is_floating_point())
