"""local/demo.py: a tiny synthetic corpus, then the generic ingestion path over it."""

from __future__ import annotations

import csv
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf

from w2v.data.cuts import make_cuts
from w2v.data.ingest import prepare

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not (shutil.which("espeak-ng") and shutil.which("bible")),
                                reason="needs Debian packages espeak-ng and bible-kjv")


def norm(text: str) -> str:
    return " ".join(re.sub(r"[^A-Z' ]+", " ", text.upper().replace("-", " ")).split())


def run_demo(out: Path) -> str:
    cmd = [sys.executable, str(ROOT / "local" / "demo.py"), "--out", str(out), "--size", "cpu",
           "--scale", "0.01", "--jobs", "2", "--seed", "0"]
    return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120).stdout


def tsv(path: Path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def test_demo_corpus(tmp_path):
    out = tmp_path / "corpus"
    run_demo(out)
    assert (out / ".done").is_file() and not list(tmp_path.glob(".corpus.*"))  # no temp dirs left
    rows = tsv(out / "transcripts.tsv")
    assert list(rows[0]) == ["id", "text", "speaker", "split"]
    assert {r["split"] for r in rows} == {"train", "dev", "test"}
    speakers = {r["speaker"]: r for r in tsv(out / "speakers.tsv")}
    flacs = {p.stem: p for p in (out / "audio").rglob("*.flac")}
    labeled = {r["id"] for r in rows}
    assert labeled < set(flacs)
    pool = {k for k, p in flacs.items() if p.parent.parent.name == "pool"}
    assert pool and not pool & labeled  # the pool has no transcript lines
    info = sf.info(str(next(iter(flacs.values()))))
    assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")

    # speaker-disjoint sets, down to the espeak (voice, variant) pair
    sets = {s: {k for k, v in speakers.items() if v["set"] == s} for s in ("pool", "train", "dev", "test")}
    pairs = {s: {(speakers[k]["voice"], speakers[k]["variant"]) for k in spk} for s, spk in sets.items()}
    for a in sets:
        for b in sets:
            if a < b:
                assert not sets[a] & sets[b] and not pairs[a] & pairs[b], (a, b)
    for r in rows:
        assert r["speaker"] in sets[r["split"]]

    # the LM text holds no dev/test sentence, but does hold the training text
    lm = {norm(line) for line in (out / "lm_text.txt").read_text(encoding="utf-8").splitlines()}
    assert len(lm) > 20000
    for r in rows:
        assert (norm(r["text"]) in lm) == (r["split"] == "train"), r

    # rerunning with the same parameters is a no-op
    mtime = (out / ".done").stat().st_mtime_ns
    assert "nothing to do" in run_demo(out)
    assert (out / ".done").stat().st_mtime_ns == mtime

    # and the corpus goes through the generic folder path
    prepare({"type": "folder", "path": out}, tmp_path / "manifests")
    cuts = make_cuts(tmp_path / "manifests", tmp_path / "cuts", {"10s": 10})
    assert {"pretrain", "train", "train_10s", "dev", "test"} <= set(cuts)
