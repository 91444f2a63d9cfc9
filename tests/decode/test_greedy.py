import pytest
import torch

from w2v.decode.ctc import greedy_decode, load_units

UNITS = ["<blank>", "|", "A", "B", "C"]


def one_hot(ids, vocab=len(UNITS)):
    x = torch.full((len(ids), vocab), -5.0)
    x[torch.arange(len(ids)), torch.tensor(ids)] = 5.0
    return x


def test_collapse_repeats_and_blanks():
    # A A _ A | | B _ C C  ->  "AA BC"
    x = one_hot([2, 2, 0, 2, 1, 1, 3, 0, 4, 4])
    assert greedy_decode(x[None], [10], UNITS) == ["AA BC"]


def test_boundaries_are_stripped_and_squeezed():
    x = one_hot([1, 2, 1, 0, 1, 3, 1, 1])
    assert greedy_decode(x[None], None, UNITS) == ["A B"]


def test_padding_is_ignored_and_batch_matches_single():
    a, b = one_hot([2, 0, 3, 1, 4]), one_hot([4, 4, 1])
    batch = torch.stack([a, torch.cat([b, one_hot([2, 2])])])  # b padded with "A" frames
    out = greedy_decode(batch, torch.tensor([5, 3]), UNITS)
    assert out == ["AB C", "C"]
    assert out[1] == greedy_decode(b[None], [3], UNITS)[0]


def test_zero_length_and_all_blank():
    x = one_hot([0, 0, 0])
    assert greedy_decode(torch.stack([x, x]), [0, 3], UNITS) == ["", ""]


def test_vocab_mismatch_raises():
    with pytest.raises(ValueError, match="units"):
        greedy_decode(torch.zeros(1, 2, 3), [2], UNITS)


def test_load_units(tmp_path):
    p = tmp_path / "units.txt"
    p.write_text("<blank> 0\n| 1\nA 2\n")
    assert load_units(p) == ["<blank>", "|", "A"]
    p.write_text("<blank> 0\n| 2\n")
    with pytest.raises(ValueError, match="without gaps"):
        load_units(p)
    p.write_text("<blank> 0\nA\n")
    with pytest.raises(ValueError, match=r"units.txt:2"):
        load_units(p)
