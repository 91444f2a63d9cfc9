"""SIGKILL a training process at several seeded random points; the resumed run ends bit-identical.

Pre-training and CTC fine-tuning (with dev evaluation and a best checkpoint) each run once
uninterrupted in this process and once as `w2v pretrain` / `w2v finetune` subprocesses killed
three times and restarted with the same command.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time

import pytest
import torch

from reliability.helpers import ENV, ROOT, tiny_data, tiny_recipe, w2v_cmd
from w2v.models import load_model_config
from w2v.train import checkpoint as ck
from w2v.train.config import TrainConfig
from w2v.train.loop import train

MAX_UPDATES = 14
COMMON = dict(max_updates=MAX_UPDATES, lr=5e-4, warmup=2, save_every=3, log_every=1, keep_last=2)
SETTINGS = {
    "pretrain": dict(COMMON, max_duration=4.0, crop_seconds=1.0),
    "finetune": dict(COMMON, schedule="tri_stage", max_duration=4.0, freeze_transformer_updates=2,
                     model_overrides={"mask_prob": 0.3}),
}


def _logged_update(log_path) -> int:
    """The newest update in train_log.jsonl (0 if none yet; a half-written line is ignored)."""
    try:
        lines = log_path.read_text().splitlines()
    except FileNotFoundError:
        return 0
    done = 0
    for line in lines:
        try:
            done = max(done, json.loads(line)["update"])
        except (ValueError, KeyError):
            pass
    return done


def _kill_when(cmd: list[str], out, update: int) -> None:
    """Start ``cmd``, SIGKILL it once it has logged ``update``; it must not have finished."""
    proc = subprocess.Popen(cmd, env=ENV, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while proc.poll() is None and time.time() < deadline and _logged_update(out / "train_log.jsonl") < update:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err.decode()[-3000:]
    assert not (out / "model.pt").exists()


@pytest.mark.parametrize("task,seed", [("pretrain", 11), ("finetune", 12)])
def test_sigkill_at_random_points_resumes_bit_identical(tmp_path, task, seed):
    cuts, units = tiny_data(tmp_path, n=8, min_s=1.0, max_s=1.8)
    settings = SETTINGS[task]
    recipe = tiny_recipe(tmp_path, pretrain=settings if task == "pretrain" else None,
                         finetune=settings if task == "finetune" else None)
    kwargs = dict(units_path=units, dev_cuts_path=cuts) if task == "finetune" else {}
    model_cfg = load_model_config(str(tmp_path / "model.yaml"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the subprocesses (--threads 1)
    try:
        ref = ck.load(train(TrainConfig(task=task, **settings), cuts, tmp_path / "ref", model_cfg, **kwargs))
    finally:
        torch.set_num_threads(threads)

    out = tmp_path / "run"
    cmd = w2v_cmd(task, recipe, cuts, out, units=units)
    kill_points = sorted(random.Random(seed).sample(range(1, MAX_UPDATES - 1), 3))
    for update in kill_points:
        _kill_when(cmd, out, update)
    r = subprocess.run(cmd, env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resumed from" in r.stderr
    got = ck.load(out / "model.pt")
    assert got["num_updates"] == ref["num_updates"]
    assert got["model"].keys() == ref["model"].keys()
    for k, v in ref["model"].items():
        assert torch.equal(v, got["model"][k]), k
    rows = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["update"] for r in rows if "loss" in r] == list(range(1, MAX_UPDATES + 1))  # no gap, no repeat
