"""Romanised text for alignment: uroman, then the model's character units.

MMS aligns 1,100+ languages with one model by writing every transcript in Latin letters with
uroman (Hermjakob et al. 2018) first (Pratap et al. 2023, the MMS-lab data). Here the romanised text is
normalised with the recipe's scheme (:func:`w2v.data.text.normalize_text`) and spelled in the
alignment model's units; characters the model has no unit for are dropped and counted.
"""

from __future__ import annotations

import functools
import logging
from collections import Counter
from typing import Mapping

from w2v.data.lang import WORD_SEP
from w2v.data.text import normalize_text

__all__ = ["romanize", "to_units"]

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def _uroman():
    try:
        import uroman
    except ImportError as e:
        raise RuntimeError("romanisation needs the uroman package: pip install uroman") from e
    return uroman.Uroman()  # loads its tables once (about 2 s)


def romanize(text: str, lang: str | None = None) -> str:
    """``text`` in Latin letters (uroman); ``lang`` is an ISO 639-3 code such as ``spa``, or None."""
    return _uroman().romanize_string(text, lcode=lang)


def to_units(text: str, unit_to_id: Mapping[str, int], lang: str | None = None,
             scheme: str = "upper_letters", dropped: Counter | None = None) -> list[int]:
    """Romanise, normalise and spell ``text`` in units, ``|`` between words.

    Args:
        text: raw transcript (any script).
        unit_to_id: the alignment model's units.
        lang: ISO 639-3 code for uroman.
        scheme: normalisation scheme applied after romanisation.
        dropped: if given, counts the characters that have no unit.

    Returns:
        Unit ids; empty when nothing of the text can be spelled.
    """
    ids: list[int] = []
    for word in normalize_text(romanize(text, lang), scheme).split():
        spelled = [unit_to_id[ch] for ch in word if ch in unit_to_id]
        if dropped is not None:
            dropped.update(ch for ch in word if ch not in unit_to_id)
        if spelled:
            if ids:
                ids.append(unit_to_id[WORD_SEP])
            ids += spelled
    return ids
