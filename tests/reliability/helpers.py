"""Shared by the reliability tests: a tiny recipe for `w2v pretrain` / `w2v finetune` subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from synth import write_tiny_cuts, write_units
from test_loop import SMALL

ROOT = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, PYTHONHASHSEED="0", PYTHONPATH=str(ROOT))


def tiny_recipe(tmp: Path, pretrain: dict | None = None, finetune: dict | None = None, **top) -> Path:
    """A recipe YAML whose model is the tests' smallest wav2vec 2.0 (see tests/train/test_loop.py)."""
    model = {**yaml.safe_load((ROOT / "conf/model/tiny.yaml").read_text()), **SMALL}
    (tmp / "model.yaml").write_text(yaml.safe_dump(model))
    cfg = {"recipe": "t", "model": str(tmp / "model.yaml"), "corpus": {"type": "folder", "path": str(tmp)},
           "pretrain": pretrain or {}, **top}
    if finetune is not None:
        cfg["finetune"] = {"settings": finetune, "subsets": {"1m": {}}}
    path = tmp / "recipe.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def tiny_data(tmp: Path, n: int = 10, **kw) -> tuple[Path, Path]:
    """Labeled tone-and-noise cuts and their character units."""
    return write_tiny_cuts(tmp / "audio", n=n, **kw), write_units(tmp / "units.txt")


def w2v_cmd(task: str, recipe: Path, cuts: Path, out: Path, *extra: str, units: Path | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "w2v.cli", task, "--config", str(recipe), "--cuts", str(cuts), "--out", str(out),
           "--threads", "1", *extra]
    if task == "finetune":
        cmd += ["--subset", "1m", "--units", str(units), "--init-from", "scratch", "--dev", str(cuts)]
    return cmd


def run(cmd: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def ddp_worker(cuts, out, rec, *extra: str, **settings) -> subprocess.CompletedProcess:
    """tests/reliability/ddp_worker.py as 2 torchrun processes (gloo), training ``settings``
    overriding its own (W2V_TEST_SETTINGS)."""
    env = dict(ENV, W2V_TEST_SETTINGS=json.dumps(settings))
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(ROOT / "tests/reliability/ddp_worker.py"), str(cuts), str(out), str(rec), *extra],
                          env=env, capture_output=True, text=True, timeout=180, cwd=ROOT)
