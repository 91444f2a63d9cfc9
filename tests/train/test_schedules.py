import math

import pytest

from w2v.train.schedules import Schedule


def test_polynomial_warmup_peak_and_end():
    s = Schedule("polynomial", lr=1e-3, total_updates=100, warmup=10)
    assert s(0) == pytest.approx(1e-4)
    assert s(9) == pytest.approx(1e-3)
    assert s(10) == pytest.approx(1e-3)
    assert s(55) == pytest.approx(0.5e-3)
    assert s(100) == 0.0


def test_tri_stage_phases():
    s = Schedule("tri_stage", lr=1e-3, total_updates=100, warmup=0.1, hold=0.4, final_lr_scale=0.05)
    assert s(0) == pytest.approx(1e-5)
    assert s(10) == pytest.approx(1e-3) and s(49) == pytest.approx(1e-3)
    assert s(100) == pytest.approx(5e-5)
    mid = s(75)
    assert mid == pytest.approx(1e-3 * math.exp(math.log(0.05) * 0.5))


def test_unknown_kind():
    with pytest.raises(ValueError, match="unknown schedule"):
        Schedule("cosine", lr=1.0, total_updates=1)
