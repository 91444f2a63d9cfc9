"""Helpers that write tiny corpora and manifests for the tests of w2v.data (no downloads)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from lhotse import AudioSource, Recording, RecordingSet, SupervisionSegment, SupervisionSet


def tone(seconds: float, sr: int, channels: int = 1, freq: float = 440.0) -> np.ndarray:
    """A sine tone; channel c has amplitude 0.5 / (c + 1) so that a down-mix is checkable."""
    t = np.arange(int(round(seconds * sr))) / sr
    x = np.stack([0.5 / (c + 1) * np.sin(2 * np.pi * freq * t) for c in range(channels)], axis=1)
    return x[:, 0] if channels == 1 else x


def write_manifests(out: Path, utts: list[tuple[str, str, float, str, str]],
                    unlabeled: list[tuple[str, float]] = ()) -> Path:
    """Manifests without audio (make_cuts never reads audio): (id, speaker, seconds, text, split)."""
    def rec(rid, dur):
        return Recording(id=rid, sources=[AudioSource(type="file", channels=[0], source=f"/nonexistent/{rid}.flac")],
                         sampling_rate=16000, num_samples=int(dur * 16000), duration=dur)
    recs = [rec(u, d) for u, _, d, _, _ in utts] + [rec(u, d) for u, d in unlabeled]
    sups = [SupervisionSegment(id=u, recording_id=u, start=0.0, duration=d, channel=0, text=t, speaker=s,
                               custom={"split": sp}) for u, s, d, t, sp in utts]
    out.mkdir(parents=True, exist_ok=True)
    RecordingSet.from_recordings(recs).to_file(out / "recordings.jsonl.gz")
    SupervisionSet.from_segments(sups).to_file(out / "supervisions.jsonl.gz")
    return out
