"""The whole demo recipe through Snakemake at a reduced size, then its resume behaviour.

Slow (a few minutes on 2 cores): it is the CI's end-to-end check, run once.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from browser import find_browser, image_status
from w2v.html_report import FIGURES

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

needs = [shutil.which("espeak-ng"), shutil.which("bible")]


def small_config(workdir: Path) -> Path:
    cfg = yaml.safe_load((ROOT / "egs/demo/config.yaml").read_text())
    cfg["local"]["args"]["scale"] = 0.12
    cfg["cuts"]["labeled_subsets"] = ["1m", "3m"]
    cfg["model"] = str(workdir / "model.yaml")
    model = yaml.safe_load((ROOT / "conf/model/tiny.yaml").read_text())
    model.update(encoder_layers=2, encoder_embed_dim=96, encoder_ffn_embed_dim=192)
    (workdir / "model.yaml").write_text(yaml.safe_dump(model))
    cfg["pretrain"].update(max_updates=16, save_every=8, log_every=4)
    cfg["finetune"]["settings"].update(save_every=10, log_every=5, freeze_transformer_updates=5)
    cfg["finetune"]["subsets"] = {"1m": {"max_updates": 20}, "3m": {"max_updates": 20}}
    cfg["decode"].update(lm_weights=[0.5, 1.0], word_scores=[0.0], beam=50, acoustic_scales=[1.0], nbest=5,
                         rescore_lm_weights=[0.0, 0.5], rescore_word_scores=[0.0], rescore_nn_weights=[0.0, 0.5])
    cfg["lm_nn"] = {"vocab_size": 500, "dim": 32, "layers": 1, "heads": 2, "max_updates": 30, "max_seconds": 20}
    path = workdir / "demo_small.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def cfg_decoders(cfg: Path) -> list[str]:
    return yaml.safe_load(cfg.read_text())["decode"]["decoders"]


def snakemake_cmd(workdir: Path, cfg: Path, *targets: str) -> tuple[list[str], dict]:
    """The snakemake command line for the reduced demo in ``workdir``, and its environment."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(workdir), "-c2",
           f"--configfile={cfg}", *targets]
    return cmd, env


def _snakemake(workdir: Path, cfg: Path, *targets: str) -> subprocess.CompletedProcess:
    cmd, env = snakemake_cmd(workdir, cfg, *targets)
    return subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=1500)


@pytest.mark.skipif(not all(needs), reason="espeak-ng and bible-kjv are needed (scripts/setup.sh installs them)")
def test_demo_end_to_end_and_resume(tmp_path):
    cfg = small_config(tmp_path)
    r = _snakemake(tmp_path, cfg)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-8000:]

    results = json.loads((tmp_path / "exp/demo/results.json").read_text())
    keys = {(row["init"], row["labeled"], row["decoder"]): row["results"] for row in results["rows"]}
    for init in ("pretrained", "scratch"):
        for subset in ("1m", "3m"):
            for decoder in cfg_decoders(cfg):
                res = keys[(init, subset, decoder)]
                assert set(res) == {"dev", "test"}
                assert all(r["wer"] >= 0 and r["cer"] >= 0 and r["num_utts"] > 0 for r in res.values())
    assert keys[("pretrained", "1m", "beam+4gram")]["test"]["lm_weight"] is not None
    md = (tmp_path / "exp/demo/results.md").read_text()
    assert "scratch" in md and "pretrained" in md
    report = json.loads((tmp_path / "exp/demo/report/report.json").read_text())
    assert set(report["figures"]) == set(FIGURES) and report["missing"] == []
    if find_browser():  # the page opens in a browser and every plot loads
        status = image_status(tmp_path / "exp/demo/report/index.html", find_browser())
        assert len(status) == len(FIGURES) and all(x["width"] > 0 for x in status), status
    errs = tmp_path / "exp/demo/decode/pretrained_1m/greedy/errs_test.txt"
    assert errs.exists() and "ref" in errs.read_text()

    # finished stages are skipped
    r = _snakemake(tmp_path, cfg)
    assert r.returncode == 0 and "Nothing to be done" in (r.stdout + r.stderr)

    # a fine-tuning whose model.pt is missing (as after an interruption) resumes from its newest
    # checkpoint instead of starting over; afterwards only what depends on it is redone
    ft = tmp_path / "exp/demo/finetune/scratch_3m"
    (ft / "model.pt").unlink()
    r = _snakemake(tmp_path, cfg, "finetune")
    assert r.returncode == 0, (r.stdout + r.stderr)[-8000:]
    assert "resumed from" in (ft / "log.txt").read_text()
    r = _snakemake(tmp_path, cfg)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-8000:]
    assert "rule pretrain:" not in out and "decode: scratch_3m" in out and "decode: scratch_1m" not in out
