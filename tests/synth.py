"""Tiny synthetic corpora for tests (importable as `synth`: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import soundfile as sf

WORDS = ["IN", "THE", "BEGINNING", "GOD", "CREATED", "HEAVEN", "AND", "EARTH", "LIGHT", "WATERS"]


def write_tiny_cuts(root: Path, n: int = 8, seed: int = 0, min_s: float = 0.8, max_s: float = 1.6,
                    language: str | None = None, prefix: str = "") -> Path:
    """``n`` labeled utterances of tone-and-noise audio at 16 kHz as a lhotse CutSet file
    (ids ``<prefix>utt000``...; supervisions marked with ``language`` when given)."""
    from lhotse import CutSet, Recording, RecordingSet, SupervisionSegment, SupervisionSet

    rng = np.random.default_rng(seed)
    pyrng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    cuts = []
    for i in range(n):
        dur = float(rng.uniform(min_s, max_s))
        t = np.arange(int(dur * 16000)) / 16000
        x = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 400) * t) + 0.05 * rng.standard_normal(len(t))
        path = root / f"{prefix}utt{i:03d}.wav"
        sf.write(path, x.astype(np.float32), 16000)
        rec = Recording.from_file(path)
        text = " ".join(pyrng.choice(WORDS) for _ in range(pyrng.randint(1, 3)))
        sup = SupervisionSegment(id=rec.id, recording_id=rec.id, start=0, duration=rec.duration, text=text,
                                 speaker=f"{prefix}spk{i % 3}", language=language)
        cuts.append((rec, sup))
    cutset = CutSet.from_manifests(recordings=RecordingSet.from_recordings(r for r, _ in cuts),
                                   supervisions=SupervisionSet.from_segments(s for _, s in cuts))
    out = root / "cuts.jsonl.gz"
    cutset.to_file(out)
    return out


def write_units(path: Path) -> Path:
    chars = sorted(set("".join(WORDS)))
    units = ["<blank>", "|", *chars]
    path.write_text("".join(f"{u} {i}\n" for i, u in enumerate(units)))
    return path


def write_two_language_cuts(root: Path, n: dict[str, int] | None = None, **kw) -> Path:
    """A synthetic two-language corpus: ``write_tiny_cuts`` per language (different seeds),
    supervisions marked with their language, in one CutSet file."""
    from lhotse import CutSet

    n = n or {"en": 8, "es": 3}
    parts = [CutSet.from_file(write_tiny_cuts(root / lang, n=k, seed=i, language=lang, prefix=f"{lang}_", **kw))
             for i, (lang, k) in enumerate(n.items())]
    out = root / "cuts.jsonl.gz"
    CutSet.from_cuts(c for part in parts for c in part).to_file(out)
    return out


class Killed(Exception):
    """Stands for a SIGKILL in-process: raised right after a checkpoint is written."""


def run_killed_after_checkpoint(monkeypatch, update: int, run, where: Path | None = None) -> None:
    """Call ``run()`` with the training loop dying right after it saves checkpoint ``update``
    (the checkpoint is complete, nothing after it is), then restore the real save. ``where``:
    only a save into that checkpoints directory dies (a multi-stage run's last stage)."""
    import pytest

    from w2v.train import checkpoint as ck

    real_save = ck.CheckpointDir.save

    def save_then_die(self, state, num_updates, is_best=False):
        path = real_save(self, state, num_updates, is_best)
        if num_updates == update and (where is None or self.path == where):
            raise Killed()
        return path

    monkeypatch.setattr(ck.CheckpointDir, "save", save_then_die)
    with pytest.raises(Killed):
        run()
    monkeypatch.undo()

