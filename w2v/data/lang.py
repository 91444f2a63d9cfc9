"""The ``lang`` stage for character units: units, words, lexicon and LM text.

wav2vec 2.0 fine-tunes with CTC on characters plus a word-boundary token ``|``
(fairseq's letter dictionary; §4.2 of the paper); the lexicon spells each word in those
units for the lexicon beam search / HLG decoders.

Files written (all via temp name + rename):

* ``units.txt``: ``<unit> <id>``; 0 = ``<blank>``, 1 = ``|``, then every character of the
  training transcripts, sorted.
* ``words.txt``: ``<word> <id>`` (Kaldi symbol table); 0 = ``<eps>``, then the sorted
  vocabulary of the training transcripts, the LM text and the extra words. Words that
  cannot be spelled with the units are left out here as in the lexicon (and counted), so
  ``words.txt`` and ``lexicon.txt`` always list the same words. Disambiguation symbols and
  ``<s>``/``</s>`` are the graph builder's business.
* ``lexicon.txt``: ``WORD W O R D |``.
* ``lm_text.txt``: the normalised LM text (the training transcripts when no LM text is
  given), one sentence per line.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from lhotse import CutSet

from w2v.data.ingest import utf8_lines
from w2v.io import atomic_path
from w2v.data.text import normalize_text

__all__ = ["BLANK", "WORD_SEP", "build_lang", "read_units", "encode", "decode_ids"]

log = logging.getLogger(__name__)

BLANK = "<blank>"
WORD_SEP = "|"


def _write_lines(path: Path, lines: Iterable[str]) -> Path:
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            for line in lines:
                f.write(line + "\n")
    return path


def _text_lines(path: Path, scheme: str) -> Iterable[str]:
    for _, line in utf8_lines(path):
        text = normalize_text(line, scheme)
        if text:
            yield text


def build_lang(
    train_cuts_path: Path,
    out_dir: Path,
    lm_text_path: Path | None = None,
    extra_words_text: Path | None = None,
    normalize: str = "upper_letters",
) -> dict[str, Path]:
    """Write character units, words, lexicon and LM text (see the module docstring).

    Args:
        train_cuts_path: the ``train`` CutSet; its (already normalised) transcripts define
            the units.
        out_dir: output directory.
        lm_text_path: raw LM training text, one sentence per line; normalised here.
        extra_words_text: a text file whose words join the vocabulary and lexicon but not
            the LM text (e.g. a decoding vocabulary).
        normalize: text normalisation scheme applied to the LM text and extra words.

    Returns:
        ``{"units": ..., "words": ..., "lexicon": ..., "lm_text": ...}`` paths.
    """
    out_dir = Path(out_dir)
    train_text = [s.text for c in CutSet.from_file(train_cuts_path) for s in c.supervisions if s.text]
    if not train_text:
        raise ValueError(f"{train_cuts_path}: no transcripts to build units from")
    chars = sorted({ch for t in train_text for ch in t if ch != " "})
    units = [BLANK, WORD_SEP] + chars
    lm_lines = list(_text_lines(Path(lm_text_path), normalize)) if lm_text_path else list(train_text)

    vocab: Counter[str] = Counter(w for t in train_text for w in t.split())
    vocab.update(w for t in lm_lines for w in t.split())
    if extra_words_text:
        vocab.update(w for t in _text_lines(Path(extra_words_text), normalize) for w in t.split())
    unit_set = set(chars)
    words = sorted(w for w in vocab if set(w) <= unit_set)
    skipped = sorted(set(vocab) - set(words))
    if skipped:
        log.warning("%d words have characters outside the units and are left out of the lexicon: %s",
                    len(skipped), ", ".join(skipped[:10]))

    paths = {
        "units": _write_lines(out_dir / "units.txt", (f"{u} {i}" for i, u in enumerate(units))),
        "words": _write_lines(out_dir / "words.txt",
                              (f"{w} {i}" for i, w in enumerate(["<eps>"] + words))),
        "lexicon": _write_lines(out_dir / "lexicon.txt", (f"{w} {' '.join(w)} {WORD_SEP}" for w in words)),
        "lm_text": _write_lines(out_dir / "lm_text.txt", lm_lines),
    }
    log.info("lang: %d units, %d words (%d skipped), %d LM sentences", len(units), len(words),
             len(skipped), len(lm_lines))
    return paths


def read_units(path: Path) -> dict[str, int]:
    """Read ``units.txt`` into ``{unit: id}`` (parsed and checked by :func:`w2v.decode.ctc.load_units`)."""
    from w2v.decode.ctc import load_units

    return {unit: i for i, unit in enumerate(load_units(path))}


def encode(text: str, unit_to_id: Mapping[str, int]) -> list[int]:
    """Normalised text -> unit ids: characters, ``|`` between words (none at the ends).

    Raises:
        KeyError: a character has no unit (normalise the text with the same scheme first).
    """
    ids = []
    for i, word in enumerate(text.split()):
        if i:
            ids.append(unit_to_id[WORD_SEP])
        for ch in word:
            try:
                ids.append(unit_to_id[ch])
            except KeyError:
                raise KeyError(f"character {ch!r} of {text!r} is not a unit") from None
    return ids


def decode_ids(ids: Sequence[int], units: Mapping[int, str] | Sequence[str]) -> str:
    """Unit ids -> text; ``<blank>`` is skipped, ``|`` becomes a space (no CTC collapsing)."""
    lookup = units if isinstance(units, Mapping) else dict(enumerate(units))
    chars = []
    for i in ids:
        u = lookup[int(i)]
        if u == BLANK:
            continue
        chars.append(" " if u == WORD_SEP else u)
    return " ".join("".join(chars).split())
