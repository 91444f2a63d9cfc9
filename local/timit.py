"""TIMIT (LDC93S1) for phone recognition: train / dev / core test, 61 phones (vq-wav2vec, wav2vec 2.0).

Corpus type ``timit`` (see :mod:`w2v.data.corpora`)::

    corpus:
      type: timit
      path: /data/timit       # holds data/TRAIN and data/TEST, or TRAIN and TEST (the LDC disc)
      keep_sa: false          # the two SA sentences every speaker read: left out, as is standard

Read with lhotse's ``prepare_timit`` (61 phones, no folding), which also fixes the sets:
``train`` = the 462 TRAIN speakers, ``dev`` = the 50-speaker development set and ``test`` = the
24-speaker core test set, both from TEST. Each supervision's text is the utterance's phone
sequence from its ``.PHN`` file (lower case, space separated, the utterance-initial and -final
``h#`` left out); the word transcript from ``.TXT`` is ``custom["words"]``. Folding to the 39
scoring classes (Lee & Hon, 1989) is the recipe's ``egs/timit/fold61_39.tsv``, applied by the
units and scoring stages (``text: {normalize: tokens}``, ``lang: {units: phone}``, ``score: {fold_map: ...}``), not here.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from lhotse import Recording, SupervisionSegment

from w2v.data.corpora import check_options, corpus_root, expect, tag

OPTIONS = ("keep_sa",)
SPLITS = {"TRAIN": "train", "DEV": "dev", "TEST": "test"}


def _data_root(root: Path) -> Path | None:
    """The directory that holds ``TRAIN`` and ``TEST`` (lhotse wants it to be ``<corpus>/data``)."""
    for d in (root / "data", root):
        if (d / "TRAIN").is_dir() and (d / "TEST").is_dir():
            return d
    return None


def check(corpus: dict, key: str) -> None:
    check_options(corpus, key, OPTIONS)
    root = corpus_root(corpus, key)
    if _data_root(root) is None:
        expect(root, key, {f"data/{s}/DR*/*/*.{ext}": f"{s} utterance {what}" for s in ("TRAIN", "TEST")
                           for ext, what in (("WAV", "audio (NIST SPHERE)"), ("PHN", "phone segmentation"))},
               "TIMIT (LDC93S1: data/TRAIN, data/TEST, or TRAIN, TEST at the top; upper-case names)")
    d = _data_root(root)
    expect(d, key, {f"{s}/DR*/*/*.{ext}": f"{s} utterance files" for s in ("TRAIN", "TEST")
                    for ext in ("WAV", "TXT", "PHN", "WRD")}, "TIMIT")


def phone_text(sup: SupervisionSegment) -> str:
    """The 61-phone sequence of a lhotse TIMIT supervision, without the boundary ``h#``."""
    phones = [a.symbol for a in sup.alignment["phone"]]
    while phones and phones[0] == "h#":
        phones.pop(0)
    while phones and phones[-1] == "h#":
        phones.pop()
    return " ".join(phones)


def prepare(corpus: dict, key: str, num_threads: int) -> tuple[list[Recording], list[SupervisionSegment]]:
    """TIMIT -> recordings and phone-level supervisions (see the module docstring)."""
    from lhotse.recipes import prepare_timit
    from lhotse.utils import fastcopy

    check(corpus, key)
    data = _data_root(Path(corpus["path"]).expanduser())
    with tempfile.TemporaryDirectory() as tmp:
        if data.name != "data":  # the LDC layout: give lhotse the <corpus>/data it globs for
            (Path(tmp) / "data").symlink_to(data.resolve(), target_is_directory=True)
            base = Path(tmp)
        else:
            base = data.parent
        manifests = prepare_timit(base, output_dir=None, num_phones=60, num_jobs=num_threads)
    recs: dict[str, Recording] = {}
    sups: list[SupervisionSegment] = []
    for part, split in SPLITS.items():
        m = manifests[part]
        for s in m["supervisions"]:
            if s.id.split("-")[1].upper().startswith("SA") and not corpus.get("keep_sa", False):
                continue
            sups.append(tag(fastcopy(s, text=phone_text(s), alignment=None), split, words=s.text))
            recs[s.recording_id] = m["recordings"][s.recording_id]
    return list(recs.values()), sups
