"""w2v.data.text.normalize_text."""

import pytest

from w2v.data.text import dropped_characters, normalize_text


@pytest.mark.parametrize("raw, norm", [
    ("Hello, world!", "HELLO WORLD"),
    ("Café déjà-vu — naïve", "CAFE DEJA VU NAIVE"),
    ("Don’t 'tis Jesus' name", "DON'T TIS JESUS NAME"),
    ("  spaced\tout\n ", "SPACED OUT"),
    ("Straße Ærø", "STRASSE AERO"),
    ("chapter 12: «Привет» ok", "CHAPTER OK"),
    ("123", ""),
])
def test_normalize(raw, norm):
    assert normalize_text(raw) == norm
    assert normalize_text(norm) == norm  # idempotent


def test_dropped_characters_and_scheme():
    assert dropped_characters("room 101, Σ") == "101Σ"
    assert dropped_characters("plain text!") == ""
    with pytest.raises(ValueError, match="unknown text normalisation scheme 'ipa'"):
        normalize_text("x", scheme="ipa")


def test_letters_scheme_keeps_every_script():
    from w2v.data.text import dropped_characters, normalize_text

    assert normalize_text("¿Qué tal? L'été, 'quoted' Straße 42.", "letters") == "qué tal l'été quoted straße"
    assert normalize_text("Привет, мир! — সকল মানুষ", "letters") == "привет мир সকল মানুষ"
    assert dropped_characters("a1 b22", "letters") == "122"


def test_tokens_scheme_keeps_symbols_exactly():
    """TIMIT phone strings (``ax-h``, ``h#``) survive; only whitespace is squeezed."""
    assert normalize_text("  h# ax-h  pau\tq ", "tokens") == "h# ax-h pau q"
    assert dropped_characters("ax-h h#", "tokens") == ""
