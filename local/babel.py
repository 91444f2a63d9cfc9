"""IARPA BABEL language packs: full and limited language packs, per language (XLSR-53 §4, XLS-R).

Corpus type ``babel`` (see :mod:`w2v.data.corpora`), one entry per language pack::

    corpus:
      - {type: babel, path: /data/IARPA_BABEL_BP_101}    # Cantonese; holds conversational/
      - {type: babel, path: /data/IARPA_BABEL_OP1_102, untranscribed: false}

Read with lhotse's ``prepare_single_babel_language`` (``conversational/{training,dev,eval}``:
SPHERE or WAV audio, ``[start]``/text/``[end]`` transcripts), measuring audio with libsndfile;
SPHERE files then decode through sph2pipe or ffmpeg (:mod:`w2v.data.corpora.sphere`). What this adds:

* splits: ``training`` -> ``train``; ``dev`` -> ``test_dev`` (the BABEL dev set is the test set
  of XLSR and XLS-R: eval transcripts were never released; carve a tuning set from the training
  speakers with ``cuts.dev_speakers``); ``eval``, where transcribed, -> ``test_eval``.
  Untranscribed eval audio is left out (it is test audio, not pre-training data).
* labeled subsets the corpus defines: every training utterance is in ``flp`` (the full language
  pack); those of the recordings listed in ``conversational/sub-train/transcription`` are also
  in ``llp`` (the limited language pack, about 10 h).
* ``conversational/untranscribed-training/audio`` as unlabeled pre-training audio (unless
  ``untranscribed: false``).
* transcripts: lhotse writes ``<unk>``, ``<noise>``, ``<v-noise>``, ``<silence>`` for BABEL's
  markers; these tags are removed (a character model has no unit for them) and segments left
  with no words are dropped.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from lhotse import Recording, SupervisionSegment

from w2v.data.corpora import check_options, corpus_root, expect, tag
from w2v.data.corpora.sphere import sphere_recording

log = logging.getLogger(__name__)

OPTIONS = ("untranscribed",)
SPLITS = {"training": "train", "dev": "test_dev", "eval": "test_eval"}
_TAG = re.compile(r"<[^>]*>")


def _conversational(root: Path) -> Path | None:
    found = sorted(d for d in root.rglob("conversational") if d.is_dir())
    return found[0] if found else None


def check(corpus: dict, key: str) -> None:
    check_options(corpus, key, OPTIONS)
    root = corpus_root(corpus, key)
    conv = _conversational(root)
    base, prefix = (conv.parent, "conversational") if conv else (root, "conversational")
    expect(base, key, {f"{prefix}/training/audio/*": "training audio (.sph / .wav)",
                       f"{prefix}/training/transcription/*.txt": "training transcripts",
                       f"{prefix}/dev/audio/*": "dev audio", f"{prefix}/dev/transcription/*.txt": "dev transcripts"},
           "a BABEL language pack (IARPA_BABEL_*/conversational/...)")


def clean_text(text: str) -> str:
    """lhotse's normalised BABEL text without its tags (``<unk>``, ``<noise>`` ...)."""
    return " ".join(_TAG.sub(" ", text).split())


def _decodable(rec: Recording) -> Recording:
    """SPHERE recordings with a source lhotse can read here (:mod:`w2v.data.corpora.sphere`)."""
    src = rec.sources[0].source
    return sphere_recording(Path(src), rec.id) if src.lower().endswith(".sph") else rec


def prepare(corpus: dict, key: str, num_threads: int) -> tuple[list[Recording], list[SupervisionSegment]]:
    """One BABEL language pack -> recordings and supervisions (see the module docstring)."""
    from lhotse.audio.backend import audio_backend
    from lhotse.recipes.babel import prepare_single_babel_language
    from lhotse.utils import fastcopy

    check(corpus, key)
    conv = _conversational(Path(corpus["path"]).expanduser())
    llp = {p.stem for p in (conv / "sub-train" / "transcription").glob("*.txt")}
    with audio_backend("LibsndfileBackend"):  # lhotse would measure every *.sph with sph2pipe
        manifests = prepare_single_babel_language(conv.parent, output_dir=None, no_eval_ok=True)
    recs: list[Recording] = []
    sups: list[SupervisionSegment] = []
    dropped = 0
    for part, split in SPLITS.items():
        if part not in manifests:
            continue
        m = manifests[part]
        kept = []
        for s in m["supervisions"]:
            text = clean_text(s.text or "")
            if not text:
                dropped += 1
                continue
            subsets = (["flp"] + (["llp"] if s.recording_id in llp else [])) if split == "train" else []
            kept.append(tag(fastcopy(s, text=text), split, subsets))
        labeled = {s.recording_id for s in kept}
        recs += [_decodable(r) for r in m["recordings"] if r.id in labeled]
        sups += kept
    if corpus.get("untranscribed", True):
        audio = conv / "untranscribed-training" / "audio"
        recs += [sphere_recording(p, p.stem) if p.suffix.lower() == ".sph" else Recording.from_file(p)
                 for p in sorted(audio.glob("*")) if p.suffix.lower() in (".sph", ".wav")]
    if dropped:
        log.warning("babel %s: %d segments without words (only noise/silence tags) dropped", conv.parent.name, dropped)
    return recs, sups
