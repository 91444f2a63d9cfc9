"""bench/tree_step.py: one workload's step timed in several versions of w2v, each in its own process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CPU_ONLY = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "bench/tree_step.py"), *args], capture_output=True, text=True,
                          timeout=300, cwd=ROOT, env=CPU_ONLY)


@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="needs this repository's git history")
def test_each_version_runs_its_own_w2v_in_turn_and_the_medians_are_reported(tmp_path):
    (tmp_path / "w2v").symlink_to(ROOT / "w2v")  # a directory with a w2v package is a version too
    (tmp_path / "conf").symlink_to(ROOT / "conf")
    r = run("HEAD", str(tmp_path), "--preset", "tiny", "--batch", "2", "--samples", "16000", "--steps", "1",
            "--warmup", "0", "--repeats", "2", "--rounds", "2", "--no-compile")
    assert r.returncode == 0, r.stderr[-3000:]
    lines = [json.loads(ln) for ln in r.stdout.strip().splitlines()]
    runs, summary = lines[:-1], lines[-1]
    assert [(x["version"], x["round"]) for x in runs] == [("HEAD", 0), (str(tmp_path), 0), ("HEAD", 1),
                                                          (str(tmp_path), 1)]
    assert "tree_step_" in runs[0]["w2v"] and runs[1]["w2v"].startswith(str(tmp_path))  # HEAD: exported
    assert all(len(x["audio_s_per_s"]) == 2 and min(x["audio_s_per_s"]) > 0 for x in runs)
    head = sorted(runs[0]["audio_s_per_s"] + runs[2]["audio_s_per_s"])
    assert summary["median_audio_s_per_s"]["HEAD"] == pytest.approx((head[1] + head[2]) / 2)
    assert summary["workload"] == "pretrain" and summary["compile"] is False


def test_a_version_that_is_neither_a_revision_nor_a_package_is_named(tmp_path):
    r = run(str(tmp_path / "nowhere"), "--preset", "tiny", "--no-compile")
    assert r.returncode != 0
    assert "nowhere" in r.stderr and "neither a directory with a w2v package nor a git revision" in r.stderr
