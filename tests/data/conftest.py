"""Fixtures that write tiny corpora in the layouts w2v.data.ingest reads."""

from __future__ import annotations

from pathlib import Path

import soundfile as sf
import pytest

from corpus_fixtures import tone, write_manifests


@pytest.fixture
def folder_corpus(tmp_path: Path) -> Path:
    """Mixed formats, rates and channels in sub-folders, one unlabeled file, a split column."""
    root = tmp_path / "corpus"
    (root / "a" / "b").mkdir(parents=True)
    sf.write(root / "a" / "spkA-001.wav", tone(1.0, 8000, channels=2), 8000, subtype="PCM_16")
    sf.write(root / "a" / "b" / "spkA-002.flac", tone(1.2, 22050), 22050)
    sf.write(root / "spkB-001.ogg", tone(0.8, 48000), 48000, format="OGG", subtype="VORBIS")
    sf.write(root / "spkB-002.mp3", tone(1.0, 16000), 16000, format="MP3")
    sf.write(root / "a" / "pool-001.flac", tone(2.0, 16000), 16000)  # no transcript: unlabeled
    (root / "transcripts.tsv").write_text(
        "id\ttext\tspeaker\tsplit\n"
        "spkA-001\tHello, world!\t\ttrain\n"
        "spkA-002\tCafé au lait\tAlice\ttrain\n"
        "spkB-001\tdon't stop\t\tdev\n"
        "spkB-002\tthe end\t\ttest_other\n",
        encoding="utf-8",
    )
    return root


@pytest.fixture
def many_speakers(tmp_path: Path) -> Path:
    """8 speakers x 10 labeled utterances of 1.0-2.8 s, all 'train', plus 2 unlabeled recordings."""
    utts = [(f"s{s}-{i:02d}", f"s{s}", 1.0 + 0.2 * ((s + i) % 10), f"word{'s' * i} number {s}", "train")
            for s in range(8) for i in range(10)]
    return write_manifests(tmp_path / "manifests", utts, unlabeled=[("pool-0", 3.0), ("pool-1", 70.0)])
