"""A toy language directory (units, lexicon) and a KenLM built from four sentences."""

import pytest
import torch

UNITS = ["<blank>", "|", "A", "B", "C", "D", "E", "T", "S"]
LEXICON = """\
A A |
CAT C A T |
CAB C A B |
BAD B A D |
BED B E D |
CATS C A T S |
"""
# CAB never occurs in the LM text; CAT does, so the LM should prefer it.
LM_TEXT = "A CAT\nA CAT SAT\nTHE CAT\nA BED\n"


@pytest.fixture
def lang_dir(tmp_path):
    (tmp_path / "units.txt").write_text("".join(f"{u} {i}\n" for i, u in enumerate(UNITS)))
    (tmp_path / "lexicon.txt").write_text(LEXICON)
    (tmp_path / "text.txt").write_text(LM_TEXT)
    return tmp_path


@pytest.fixture
def tiny_lm(lang_dir):
    from w2v.lm import KenLMToolMissing, build_ngram

    try:
        return build_ngram(lang_dir / "text.txt", lang_dir / "lm", order=3, memory="32M")
    except KenLMToolMissing as e:
        pytest.skip(f"KenLM tools not installed ({e})")


@pytest.fixture
def units():
    return list(UNITS)


@pytest.fixture
def ambiguous():
    """Frames of "A CA?": the last letter is slightly more likely B (CAB) than T (CAT)."""
    return ["A", "|", "C", "A", {"T": 0.45, "B": 0.55}, "|"]


@pytest.fixture
def make_emissions():
    return emissions


def emissions(frames, units=UNITS, floor=1e-3):
    """(frames, vocab) log-probs from a list of frames; a frame is a unit name (prob ~1)
    or a dict {unit: prob}; the other units share ``floor``."""
    rows = []
    for fr in frames:
        p = torch.full((len(units),), floor)
        for u, v in (fr.items() if isinstance(fr, dict) else [(fr, 1.0)]):
            p[units.index(u)] = v
        rows.append((p / p.sum()).log())
    return torch.stack(rows) if rows else torch.empty(0, len(units))

