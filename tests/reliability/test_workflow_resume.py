"""The reduced demo workflow, SIGKILLed (snakemake and all its children) during pre-training, then
rerun with the same command: it finishes, resumes from the checkpoint, and redoes nothing else.

Slow (corpus generation and pre-training on 2 cores), like tests/workflow/test_demo_workflow.py,
whose reduced configuration it reuses.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
import yaml

from workflow.test_demo_workflow import needs, small_config, snakemake_cmd

pytestmark = pytest.mark.slow


@pytest.mark.skipif(not all(needs), reason="espeak-ng and bible-kjv are needed (scripts/setup.sh installs them)")
def test_killed_workflow_resumes_with_the_same_command(tmp_path):
    cfg_path = small_config(tmp_path)
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["pretrain"].update(max_updates=40, save_every=4)  # a wide window to kill in
    cfg_path.write_text(yaml.safe_dump(cfg))
    cmd, env = snakemake_cmd(tmp_path, cfg_path, "pretrain")
    exp = tmp_path / "exp/demo/pretrain"

    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.time() + 900
    while proc.poll() is None and time.time() < deadline and not list(exp.glob("checkpoints/checkpoint_0*.pt")):
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)  # snakemake, its shell, `w2v pretrain`, tee: everything at once
    first = proc.communicate()[0].decode()
    assert proc.returncode == -signal.SIGKILL, first[-4000:]
    assert not (exp / "model.pt").exists(), "pre-training finished before it could be killed"
    assert list((tmp_path / ".snakemake/locks").glob("*.lock"))  # what a killed snakemake leaves behind

    r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-6000:]
    assert "removed the directory lock of an interrupted snakemake" in out
    assert "pretrain: " in out  # the interrupted stage is run again ...
    assert "prepare: corpus" not in out and "cuts: 16 kHz" not in out  # finished stages are not redone
    assert "resumed from" in (exp / "log.txt").read_text()
    assert (exp / "model.pt").exists()
