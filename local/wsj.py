"""Wall Street Journal (WSJ0 LDC93S6B + WSJ1 LDC94S13B): si284 / dev93 / eval92 (wav2vec 1.0 §4).

lhotse has no WSJ recipe; this follows Kaldi's ``egs/wsj/s5/local/wsj_data_prep.sh``. Corpus
type ``wsj`` (see :mod:`w2v.data.corpora`)::

    corpus:
      type: wsj
      path: /data/wsj            # the LDC discs side by side: 11-1.1/ ... 11-13.1/ ... 13-34.1/
      lm_text: data/wsj/lm_text.txt   # optional: write the WSJ LM text here (from 13-32.1's np_data)

Sets, from the discs' index files (``.ndx`` lines ``11_2_1:wsj0/si_tr_s/011/011c0201.wv1``,
disc ``11_2_1`` = directory ``11-2.1``):

* ``train`` = si284: ``11-13.1/wsj0/doc/indices/train/tr_s_wv1.ndx`` + ``13-34.1/wsj1/doc/
  indices/si_tr_s.ndx`` without ``11-2.1/wsj0/si_tr_s/401`` (listed but absent; 37,416 utts).
  Corpus-defined labeled subsets: ``si284`` (all of it) and ``si84`` (the WSJ0 part, 7,138 utts);
* ``dev93`` (``test_dev93`` would be the name of a test set; this is the tuning set):
  ``13-34.1/wsj1/doc/indices/h1_p0.ndx`` (503 utts);
* ``test_eval92`` = nov92: ``11-13.1/wsj0/doc/indices/test/nvp/si_et_20.ndx`` (333 utts;
  its lines lack the ``.wv1`` extension).

Audio is ``.wv1`` (channel 1, Sennheiser) NIST SPHERE, mostly shorten-compressed: the header
is read here (sample count and rate, no decoding) and shorten files become lhotse "command"
sources decoded on the fly by ``sph2pipe`` or, through :mod:`w2v.data.corpora.shorten`, ``ffmpeg``
(:mod:`w2v.data.corpora.sphere`);
uncompressed SPHERE is read by soundfile directly. Transcripts come from the ``.dot`` files
(``<text> (<utt id>)`` per line, found anywhere under ``path``) and are normalised as Kaldi's
``normalize_transcript.pl`` does, except that noise markers are dropped rather than mapped to
``<NOISE>`` (a character model has no unit for them): see :func:`normalize_wsj`. Speaker =
the first three characters of the utterance id.
"""

from __future__ import annotations

import logging
import re
import subprocess
from pathlib import Path

from lhotse import Recording, SupervisionSegment

from w2v.data.corpora import CorpusError, check_options, corpus_root, expect
from w2v.data.corpora.sphere import sphere_recording
from w2v.io import atomic_path

log = logging.getLogger(__name__)

INDICES = {
    "train": ["11-13.1/wsj0/doc/indices/train/tr_s_wv1.ndx", "13-34.1/wsj1/doc/indices/si_tr_s.ndx"],
    "dev93": ["13-34.1/wsj1/doc/indices/h1_p0.ndx"],
    "test_eval92": ["11-13.1/wsj0/doc/indices/test/nvp/si_et_20.ndx"],
}
EXCLUDE = re.compile(r"11-2\.1/wsj0/si_tr_s/401/", re.IGNORECASE)
LM_TEXT = "13-32.1/wsj1/doc/lng_modl/lm_train/np_data"
OPTIONS = ("lm_text",)


# ---------------------------------------------------------------- transcripts

_DROP = re.compile(r"^\[<\w+\]$|^\[\w+>\]$|^\[\w+/\]$|^\[/\w+\]$|^\[[\w-]+\]$")  # noise events


def normalize_wsj(text: str) -> str:
    """One ``.dot`` transcript -> words, after Kaldi's ``normalize_transcript.pl``.

    Dropped: noise markers (``[loud_breath]``, ``[<door_slam]``, ``[phone_ring/]``), ``~``
    (truncation) and ``.`` (pause). ``<word>`` (inserted word) and ``*word*`` (mispronounced)
    keep the word; ``:`` (lengthening), ``!`` (emphasis) and backslashes go. Verbalised
    punctuation (``,COMMA``, ``"DOUBLE-QUOTE``, ``.PERIOD``) keeps its spoken word.
    """
    out = []
    for w in text.replace("\\", "").split():
        if _DROP.match(w) or w in ("~", "."):
            continue
        m = re.fullmatch(r"<([\w'.-]+)>|\*([\w'.-]+)\*", w)
        if m:
            w = m.group(1) or m.group(2)
        w = w.replace(":", "").replace("!", "")
        w = re.sub(r"^[,.\"'(){}?;&%/-]+(?=[A-Z])", "", w)  # ,COMMA -> COMMA
        if w:
            out.append(w.upper())
    return " ".join(out)


def read_dots(root: Path) -> dict[str, str]:
    """Every ``.dot`` under ``root``: utterance id (lower case) -> raw transcript."""
    texts: dict[str, str] = {}
    for dot in sorted(p for p in root.rglob("*") if p.suffix.lower() == ".dot"):
        for n, line in enumerate(dot.read_text(encoding="latin-1").splitlines(), 1):
            m = re.fullmatch(r"\s*(.*?)\s*\((\w+)\)\s*", line)
            if m:
                texts[m.group(2).lower()] = m.group(1)
            elif line.strip():
                raise CorpusError(f"{dot}:{n}: expected '<transcript> (<utterance id>)', got {line.strip()!r}")
    return texts


# ---------------------------------------------------------------- index files and audio

def _find(root: Path, rel: str) -> Path | None:
    """``rel`` under ``root``, matching each component case-insensitively (CD copies vary)."""
    p = root
    for part in Path(rel).parts:
        if (p / part).exists():
            p = p / part
            continue
        match = [c for c in p.iterdir() if c.name.lower() == part.lower()] if p.is_dir() else []
        if not match:
            return None
        p = match[0]
    return p


def read_index(root: Path, ndx: Path) -> list[Path]:
    """Audio files of one ``.ndx`` file (comments ``;``; ``disc:path``, ``.wv1`` added if absent)."""
    files = []
    for line in ndx.read_text(encoding="latin-1").splitlines():
        line = line.strip()
        if not line or line.startswith(";"):
            continue
        disc, _, rel = line.partition(":")
        rel = rel.strip().lstrip("/")
        if not rel.lower().endswith(".wv1"):
            rel += ".wv1"
        disc = re.sub(r"^(\d+)_(\d+)_(\d+)$", r"\1-\2.\3", disc.strip())
        if EXCLUDE.search(f"{disc}/{rel}"):
            continue
        files.append(Path(disc) / rel)
    return files


# ---------------------------------------------------------------- the corpus type

def check(corpus: dict, key: str) -> None:
    """The index files of the three sets exist (case-insensitively) under ``path``."""
    check_options(corpus, key, OPTIONS)
    root = corpus_root(corpus, key)
    missing = [rel for rels in INDICES.values() for rel in rels if _find(root, rel) is None]
    if missing:
        expect(root, key, {rel: "index file" for rels in INDICES.values() for rel in rels} |
               {m: "index file (searched case-insensitively too)" for m in missing},
               "WSJ0 + WSJ1 (LDC93S6B, LDC94S13B: the discs 11-*.1 and 13-*.1 side by side)")


def prepare(corpus: dict, key: str, num_threads: int) -> tuple[list[Recording], list[SupervisionSegment]]:
    """WSJ -> recordings and supervisions for si284 / dev93 / eval92 (see the module docstring)."""
    check(corpus, key)
    root = Path(corpus["path"]).expanduser()
    texts = read_dots(root)
    recs, sups, missing_audio, missing_text, empty = [], [], [], [], []
    seen: set[str] = set()
    for split, ndxs in INDICES.items():
        for ndx in ndxs:
            subsets = (["si84", "si284"] if "wsj0" in ndx else ["si284"]) if split == "train" else []
            for rel in read_index(root, _find(root, ndx)):
                utt = rel.stem.lower()
                path = _find(root, str(rel))
                if path is None:
                    missing_audio.append(str(rel))
                    continue
                if utt not in texts:
                    missing_text.append(utt)
                    continue
                if utt in seen:
                    continue
                seen.add(utt)
                text = normalize_wsj(texts[utt])
                if not text:
                    empty.append(utt)
                    continue
                rec = sphere_recording(path, utt)
                recs.append(rec)
                sups.append(SupervisionSegment(id=utt, recording_id=utt, start=0.0, duration=rec.duration,
                                               channel=0, text=text, speaker=utt[:3], language="English",
                                               custom={"split": split, **({"subsets": subsets} if subsets else {})}))
    for what, ids in (("listed audio files are missing", missing_audio),
                      ("utterances have no .dot transcript", missing_text), ("transcripts are empty", empty)):
        if ids:
            log.warning("wsj: %d %s (skipped): %s", len(ids), what, ", ".join(ids[:5]))
    if not sups:
        raise CorpusError(f"{key}: no WSJ utterance with audio and transcript under {root}")
    if corpus.get("lm_text"):
        write_lm_text(root, Path(corpus["lm_text"]))
    return recs, sups


def write_lm_text(root: Path, out: Path) -> Path:
    """The WSJ LM training text (``np_data/*/*.z``: compress(1) files, SGML-ish tags) -> one sentence a line."""
    if out.is_file():
        return out
    src = _find(root, LM_TEXT)
    files = sorted(p for p in src.rglob("*") if p.is_file()) if src else []
    if not files:
        raise CorpusError(f"corpus.lm_text: the WSJ LM text {root / LM_TEXT}/*/*.z is not there (disc 13-32.1)")
    with atomic_path(out) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for p in files:
            raw = subprocess.run(["gzip", "-dc", str(p)], capture_output=True, check=True).stdout \
                if p.suffix.lower() == ".z" else p.read_bytes()
            for line in raw.decode("latin-1").splitlines():
                line = re.sub(r"<[^>]*>", " ", line)  # <s> </s> <p> <art.*> markers
                if line.strip():
                    f.write(" ".join(line.split()) + "\n")
    return out
