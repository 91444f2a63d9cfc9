"""Transcript normalisation: raw corpus text -> the text the acoustic model is trained on.

wav2vec 2.0 fine-tunes on characters (Libri-light/LibriSpeech: 26 upper-case letters,
apostrophe, word boundary). Every corpus goes through :func:`normalize_text` in the
``cuts`` stage so that units, lexicon and LM text all see one alphabet.

Schemes: ``upper_letters`` (English, the LibriSpeech alphabet), ``letters`` (any script:
the multilingual CommonVoice / BABEL recipes, as XLSR's character models) and ``tokens``
(whitespace-separated symbols kept exactly, e.g. TIMIT's phone strings such as ``ax-h``).
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["SCHEMES", "normalize_text", "dropped_characters"]

SCHEMES = ("upper_letters", "letters", "tokens")

# Latin letters that NFKD does not decompose into an ASCII letter + combining mark.
_LATIN_EXTRA = {
    "Æ": "AE", "Œ": "OE", "Ø": "O", "Ł": "L", "Đ": "D", "Þ": "TH", "Ð": "D", "ß": "SS",
    "Ŋ": "NG", "Ħ": "H", "Ŧ": "T",
}
_APOSTROPHES = "'\u2019\u2018\u02bc\u02bb`\u00b4"
_SPACES = re.compile(r" +")
# An apostrophe survives only inside a word (DON'T, O'ER); quote marks around or at the
# end of words (JESUS' / 'TIS) become spaces, so the same word is not spelled two ways.
_LONE_APOSTROPHE = re.compile(r"(?<![A-Z])'|'(?![A-Z])")


def _check(scheme: str) -> None:
    if scheme not in SCHEMES:
        raise ValueError(f"unknown text normalisation scheme {scheme!r}; known: {', '.join(SCHEMES)}")


def _map_char(ch: str) -> str | None:
    """One character -> its replacement ('' for silently removed, None for dropped)."""
    if "A" <= ch <= "Z" or ch == " ":
        return ch
    if ch in _APOSTROPHES:
        return "'"
    if ch in _LATIN_EXTRA:
        return _LATIN_EXTRA[ch]
    cat = unicodedata.category(ch)
    if cat == "Mn":  # combining accent left over from NFKD: strip it
        return ""
    if cat[0] in "PSZC":  # punctuation, symbols (incl. hyphens), separators, controls
        return " "
    return None  # digits, non-Latin letters: not representable in this alphabet


def _normalize_letters(text: str) -> tuple[str, str]:
    """Lower case, NFC; letters and combining marks of every script kept; punctuation and
    symbols become spaces; apostrophes inside words kept; digits dropped."""
    out, dropped = [], []
    for ch in unicodedata.normalize("NFC", text.lower()):
        cat = unicodedata.category(ch)
        if cat[0] in "LM" or ch == " ":
            out.append(ch)
        elif ch in _APOSTROPHES:
            out.append("'")
        elif cat[0] in "PSZC":
            out.append(" ")
        else:
            dropped.append(ch)
    s = re.sub(r"(?<!\w)'|'(?!\w)", " ", "".join(out))
    return _SPACES.sub(" ", " ".join(s.split())).strip(), "".join(dropped)


def _normalize(text: str, scheme: str) -> tuple[str, str]:
    _check(scheme)
    if scheme == "tokens":
        return " ".join(text.split()), ""
    if scheme == "letters":
        return _normalize_letters(text)
    out, dropped = [], []
    for ch in unicodedata.normalize("NFKD", text.upper()):
        m = _map_char(ch)
        if m is None:
            dropped.append(ch)
        else:
            out.append(m)
    s = _LONE_APOSTROPHE.sub(" ", "".join(out))
    return _SPACES.sub(" ", s).strip(), "".join(dropped)


def normalize_text(text: str, scheme: str = "upper_letters") -> str:
    """Normalise a transcript for character-level training.

    ``upper_letters``: upper-case; accents stripped (NFKD, so "Café" -> "CAFE", plus a small
    table for Æ, Ø, ß ...); punctuation, symbols and hyphens become spaces; apostrophes are
    kept inside words only; spaces squeezed. Characters that cannot be written with A-Z and
    apostrophe (digits, non-Latin scripts) are dropped; :func:`dropped_characters` lists them
    so that the caller can count them.

    Args:
        text: raw transcript.
        scheme: normalisation scheme, one of :data:`SCHEMES`.

    Returns:
        The normalised transcript (may be empty).
    """
    return _normalize(text, scheme)[0]


def dropped_characters(text: str, scheme: str = "upper_letters") -> str:
    """The characters of ``text`` that :func:`normalize_text` drops, in order (after NFKD)."""
    return _normalize(text, scheme)[1]
