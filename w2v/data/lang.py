"""The ``lang`` stage: units (characters, BPE or phones; :mod:`w2v.data.units`), words, lexicon, LM text.

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
    units: str = "char",
    vocab_size: int = 500,
    phone_lexicon: Path | None = None,
) -> dict[str, Path]:
    """Write units, words, lexicon, LM text and ``lang.json`` (see the module docstring).

    ``units="bpe"`` trains a sentencepiece model (``bpe.model``, ``vocab_size`` pieces) on the
    LM text and the transcripts; ``units="phone"`` takes the phones of ``phone_lexicon``
    (:mod:`w2v.data.units`), or, without one, reads the transcripts as phone sequences (TIMIT):
    each phone is then a "word" of the lexicon and the LM, so WER is PER. The lexicon spells each word in the chosen units.

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
    if units not in ("char", "bpe", "phone"):
        raise ValueError(f"lang.units must be char, bpe or phone, got {units!r}")
    lm_lines = list(_text_lines(Path(lm_text_path), normalize)) if lm_text_path else list(train_text)

    vocab: Counter[str] = Counter(w for t in train_text for w in t.split())
    vocab.update(w for t in lm_lines for w in t.split())
    if extra_words_text:
        vocab.update(w for t in _text_lines(Path(extra_words_text), normalize) for w in t.split())
    out_dir.mkdir(parents=True, exist_ok=True)
    if units == "char":
        chars = sorted({ch for t in train_text for ch in t if ch != " "})
        unit_list = [BLANK, WORD_SEP] + chars
        words = sorted(w for w in vocab if set(w) <= set(chars))
        spell = {w: [*w, WORD_SEP] for w in words}
    elif units == "bpe":
        sp = _train_bpe(train_text + lm_lines, out_dir / "bpe.model", vocab_size)
        unit_list = [BLANK] + [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
        spell = {w: sp.encode(w, out_type=str) for w in sorted(vocab)}
        words = sorted(w for w, p in spell.items() if "<unk>" not in p)
    else:
        from w2v.data.units import read_phone_lexicon

        if phone_lexicon is not None:
            plex = read_phone_lexicon(Path(phone_lexicon))
        else:  # the transcripts are phone sequences already (TIMIT): each phone is its own word
            plex = {ph: [ph] for t in train_text for ph in t.split()}
        unit_list = [BLANK] + sorted({p for ph in plex.values() for p in ph})
        words = sorted(w for w in vocab if w in plex)
        spell = {w: plex[w] for w in words}
    skipped = sorted(set(vocab) - set(words))
    if skipped:
        log.warning("%d words cannot be spelled in %s units and are left out of the lexicon: %s",
                    len(skipped), units, ", ".join(skipped[:10]))

    import json

    paths = {
        "units": _write_lines(out_dir / "units.txt", (f"{u} {i}" for i, u in enumerate(unit_list))),
        "words": _write_lines(out_dir / "words.txt",
                              (f"{w} {i}" for i, w in enumerate(["<eps>"] + words))),
        "lexicon": _write_lines(out_dir / "lexicon.txt", (f"{w} {' '.join(spell[w])}" for w in words)),
        "lm_text": _write_lines(out_dir / "lm_text.txt", lm_lines),
        "lang": _write_lines(out_dir / "lang.json", [json.dumps({"units": units, "num_units": len(unit_list),
                                                                  "words": len(words), "skipped": len(skipped)})]),
    }
    log.info("lang: %d %s units, %d words (%d skipped), %d LM sentences", len(unit_list), units, len(words),
             len(skipped), len(lm_lines))
    return paths


def _train_bpe(sentences: list[str], model_path: Path, vocab_size: int):
    """A sentencepiece BPE model on ``sentences``; ``<unk>`` is its only special piece."""
    import tempfile

    import sentencepiece as spm

    with tempfile.TemporaryDirectory(dir=model_path.parent, prefix=".bpe-") as tmp:
        text = Path(tmp) / "text.txt"
        text.write_text("\n".join(sentences) + "\n", encoding="utf-8")
        try:
            spm.SentencePieceTrainer.train(input=str(text), model_prefix=str(Path(tmp) / "bpe"), model_type="bpe",
                                           vocab_size=vocab_size, character_coverage=1.0, bos_id=-1, eos_id=-1,
                                           unk_id=0, minloglevel=2)
        except RuntimeError as e:  # e.g. fewer pieces than characters, or more than the text allows
            raise ValueError(f"lang.vocab_size {vocab_size}: sentencepiece cannot train on this text: "
                             f"{str(e).splitlines()[-1]}") from None
        with atomic_path(model_path) as out:
            Path(tmp, "bpe.model").replace(out)
    return spm.SentencePieceProcessor(model_file=str(model_path))


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
