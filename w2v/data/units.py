"""CTC output units chosen per recipe (``lang.units``): characters, sentencepiece BPE, or phones.

* ``char``: ``<blank> | A B ...``, ``|`` between words (wav2vec 2.0's letter dictionary).
* ``bpe``: ``<blank>`` + sentencepiece pieces (``bpe.model`` beside ``units.txt``); a piece
  starting with ``▁`` starts a word.
* ``phone``: ``<blank>`` + the phones of a pronunciation lexicon (``WORD PH1 PH2 ...``); a
  transcript is spelled word by word through it.

``lang.json`` beside ``units.txt`` names the kind, so fine-tuning, graph building and
decoding all split words the same way (:func:`load_tokenizer`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Sequence

__all__ = ["BPE_SPACE", "Tokenizer", "join_units", "load_tokenizer", "read_phone_lexicon", "unit_kind",
           "words_to_phones"]

BPE_SPACE = "\u2581"  # sentencepiece's word-start mark
WORD_SEP = "|"


def unit_kind(units: Sequence[str]) -> str:
    """``char`` (has ``|``), ``bpe`` (pieces marked with ``▁``) or ``phone``."""
    if WORD_SEP in units:
        return "char"
    if any(u.startswith(BPE_SPACE) for u in units):
        return "bpe"
    return "phone"


def join_units(tokens: Sequence[str], kind: str) -> str:
    """Unit strings of one utterance -> text (words, or phones separated by spaces)."""
    if kind == "phone":
        return " ".join(tokens)
    text = "".join(tokens)
    return " ".join(text.replace(WORD_SEP, " ").replace(BPE_SPACE, " ").split())


def read_phone_lexicon(path: Path) -> dict[str, list[str]]:
    """``WORD PH1 PH2 ...`` per line -> ``{word: phones}`` (the first pronunciation of a word).

    Raises:
        FileNotFoundError: no such file. ValueError: a word without phones, or an empty file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"phone lexicon not found: {path}")
    lex: dict[str, list[str]] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) < 2:
                raise ValueError(f"{path}:{lineno}: {parts[0]!r} has no phones")
            lex.setdefault(parts[0], parts[1:])
    if not lex:
        raise ValueError(f"phone lexicon {path} is empty")
    return lex


def words_to_phones(text: str, lexicon: Mapping[str, Sequence[str]]) -> str:
    """A word transcript spelled in phones.

    Raises:
        KeyError: naming the first word the lexicon lacks.
    """
    out = []
    for w in text.split():
        if w not in lexicon:
            raise KeyError(f"word {w!r} is not in the phone lexicon")
        out += lexicon[w]
    return " ".join(out)


class Tokenizer:
    """Text -> unit ids the way the model was trained (see the module docstring)."""

    def __init__(self, units: Sequence[str], kind: str, sp_model: Path | None = None,
                 lexicon: Mapping[str, Sequence[str]] | None = None):
        self.units, self.kind = list(units), kind
        self.index = {u: i for i, u in enumerate(self.units)}
        self.sp = None
        if kind == "bpe":
            import sentencepiece as spm

            if sp_model is None or not Path(sp_model).is_file():
                raise FileNotFoundError(f"BPE units need the sentencepiece model {sp_model}")
            self.sp = spm.SentencePieceProcessor(model_file=str(sp_model))
        self.lexicon = lexicon

    def pieces(self, text: str) -> list[str] | None:
        """The unit strings of ``text``; ``None`` when it cannot be spelled (unknown character/word)."""
        if self.kind == "char":
            out = []
            for i, word in enumerate(text.split()):
                out += ([WORD_SEP] if i else []) + list(word)
        elif self.kind == "bpe":
            out = self.sp.encode(text, out_type=str)
        else:
            try:
                out = words_to_phones(text, self.lexicon).split()
            except KeyError:
                return None
        return out if all(u in self.index for u in out) else None

    def encode(self, text: str) -> list[int] | None:
        pieces = self.pieces(text)
        return None if pieces is None else [self.index[u] for u in pieces]


def load_tokenizer(units_path: str | Path) -> Tokenizer:
    """The tokenizer of a lang directory (``units.txt`` + ``lang.json``, ``bpe.model``, ``lexicon.txt``).

    A directory without ``lang.json`` is a character one (what ``w2v lang`` wrote before BPE/phones).
    """
    from w2v.decode.ctc import load_units

    units_path = Path(units_path)
    units = load_units(units_path)
    meta_path = units_path.with_name("lang.json")
    meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {"units": "char"}
    kind = meta.get("units", "char")
    if kind == "bpe":
        return Tokenizer(units, kind, sp_model=units_path.with_name("bpe.model"))
    if kind == "phone":
        return Tokenizer(units, kind, lexicon=read_phone_lexicon(units_path.with_name("lexicon.txt")))
    return Tokenizer(units, "char")
