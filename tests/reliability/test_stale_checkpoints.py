"""A rerun with other settings or inputs never resumes from the old run's checkpoints.

Snakemake reruns a training stage when its settings (rule params) or inputs change; the
checkpoints of the earlier run are still in the experiment directory. Resuming from them would
silently mix two runs (the old optimizer state and data position under the new settings), so
they are set aside (kept, not deleted) and the run starts afresh. Changing only how long a run
goes, or how it logs and saves, still resumes.
"""

from __future__ import annotations

import logging
import os

import torch

from synth import write_tiny_cuts
from test_loop import SMALL
from w2v.models import load_model_config
from w2v.train import checkpoint as ck
from w2v.train import loop
from w2v.train.config import TrainConfig


def _cfg(**kw):
    d = dict(task="pretrain", max_updates=4, lr=5e-4, warmup=1, max_duration=4.0, crop_seconds=1.0,
             save_every=2, log_every=1)
    return TrainConfig(**{**d, **kw})


def _weights(path):
    return ck.load(path)["model"]


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_changed_settings_start_afresh_and_keep_the_old_checkpoints(tmp_path, caplog):
    cuts = write_tiny_cuts(tmp_path / "a", n=8)
    model = load_model_config("tiny", **SMALL)
    loop.train(_cfg(), cuts, tmp_path / "exp", model)
    old = sorted(p.name for p in (tmp_path / "exp/checkpoints").glob("checkpoint_*.pt"))
    with caplog.at_level(logging.WARNING):
        out = loop.train(_cfg(lr=2e-4, max_updates=6), cuts, tmp_path / "exp", model)
    assert "other settings or inputs (train.lr)" in caplog.text
    aside = tmp_path / "exp/checkpoints.stale-1"
    assert sorted(p.name for p in aside.glob("checkpoint_*.pt")) == old and (aside / "train_log.jsonl").exists()
    fresh = loop.train(_cfg(lr=2e-4, max_updates=6), cuts, tmp_path / "fresh", model)
    assert _same(_weights(out), _weights(fresh))  # exactly a run from scratch with the new settings


def test_remade_inputs_start_afresh(tmp_path, caplog):
    cuts = write_tiny_cuts(tmp_path / "a", n=8)
    model = load_model_config("tiny", **SMALL)
    loop.train(_cfg(), cuts, tmp_path / "exp", model)
    st = cuts.stat()
    os.utime(cuts, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # the cuts stage ran again
    (tmp_path / "exp/model.pt").unlink()
    with caplog.at_level(logging.WARNING):
        loop.train(_cfg(), cuts, tmp_path / "exp", model)
    assert "(cuts)" in caplog.text and (tmp_path / "exp/checkpoints.stale-1").is_dir()


def test_longer_run_still_resumes(tmp_path, caplog):
    cuts = write_tiny_cuts(tmp_path / "a", n=8)
    model = load_model_config("tiny", **SMALL)
    loop.train(_cfg(), cuts, tmp_path / "exp", model)
    with caplog.at_level(logging.INFO):
        out = loop.train(_cfg(max_updates=6, log_every=2), cuts, tmp_path / "exp", model)
    assert "resumed from" in caplog.text and not (tmp_path / "exp/checkpoints.stale-1").exists()
    assert ck.load(out)["num_updates"] == 6  # 4 from the first run, 2 more (the LR schedule follows max_updates)
