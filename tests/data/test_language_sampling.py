"""XLSR language sampling in the BatchPlan: the formula, the frequencies it produces, one
language per batch, and determinism in (seed, epoch)."""

from __future__ import annotations

from collections import Counter

import pytest

from w2v.data.batching import BatchPlan, language_probabilities


def test_probabilities_on_a_known_table():
    n = {"a": 90.0, "b": 9.0, "c": 1.0}
    # (n_l/N)^0.5 = 0.9^.5, 0.09^.5, 0.01^.5 = 0.948683, 0.3, 0.1; sum 1.348683
    p = language_probabilities(n, 0.5)
    assert p == pytest.approx({"a": 0.948683 / 1.348683, "b": 0.3 / 1.348683, "c": 0.1 / 1.348683}, abs=1e-6)
    assert p["a"] == pytest.approx(0.703417, abs=1e-5) and p["c"] == pytest.approx(0.074146, abs=1e-5)
    assert language_probabilities(n, 1.0) == pytest.approx({"a": 0.9, "b": 0.09, "c": 0.01})
    assert language_probabilities(n, 0.0) == pytest.approx({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3})
    # the units of n_l do not matter
    assert language_probabilities({k: v * 3600 for k, v in n.items()}, 0.3) == pytest.approx(
        language_probabilities(n, 0.3))
    with pytest.raises(ValueError, match="no data"):
        language_probabilities({"a": 1.0, "b": 0.0}, 0.5)


def _plan(alpha=0.5, seed=3, **kw):
    langs = ["a"] * 90 + ["b"] * 9 + ["c"] * 1
    return BatchPlan([1.0] * 100, max_duration=1.0, seed=seed, languages=langs, alpha=alpha, **kw)


@pytest.mark.parametrize("alpha", [0.5, 0.2])
def test_batches_are_drawn_with_the_language_probabilities(alpha):
    plan = _plan(alpha)
    assert plan.multilingual
    assert plan.language_hours() == pytest.approx({"a": 90 / 3600, "b": 9 / 3600, "c": 1 / 3600})
    counts: Counter[str] = Counter()
    for e in range(150):
        batches = plan.epoch(e)
        assert len(batches) == 100  # as many batches as the monolingual plan
        counts.update(plan.languages[b[0]] for b in batches)
    total = sum(counts.values())
    expected = language_probabilities({"a": 90, "b": 9, "c": 1}, alpha)
    for lang, p in expected.items():
        assert counts[lang] / total == pytest.approx(p, abs=0.012), (lang, counts)


def test_one_language_per_batch_and_deterministic():
    langs = ["en"] * 30 + ["es"] * 12
    durs = [0.5 + (i % 7) * 0.25 for i in range(42)]
    plan = BatchPlan(durs, max_duration=4.0, seed=1, languages=langs)
    a, b = plan.epoch(2), BatchPlan(durs, max_duration=4.0, seed=1, languages=langs).epoch(2)
    assert a == b
    assert a != plan.epoch(3) and a != BatchPlan(durs, max_duration=4.0, seed=2, languages=langs).epoch(2)
    for batch in a:
        assert len({langs[i] for i in batch}) == 1
        assert max(durs[i] for i in batch) * len(batch) <= 4.0 or len(batch) == 1


def test_up_sampled_language_repeats_reshuffled():
    plan = _plan(alpha=0.0)  # uniform: c (1 item) gets a third of 100 batches
    batches = plan.epoch(0)
    c = [b for b in batches if plan.languages[b[0]] == "c"]
    assert len(c) > 20 and all(b == [99] for b in c)
    a_items = [b[0] for b in batches if plan.languages[b[0]] == "a"]
    assert len(a_items) == len(set(a_items))  # a (90 items) is not exhausted: no repeats


def test_monolingual_plan_is_unchanged_by_languages():
    durs = [0.5 + (i % 5) * 0.3 for i in range(20)]
    ref = BatchPlan(durs, 3.0, seed=4).epoch(1)
    assert BatchPlan(durs, 3.0, seed=4, languages=["en"] * 20).epoch(1) == ref
    assert not BatchPlan(durs, 3.0, seed=4, languages=["en"] * 20).multilingual


def test_missing_language_is_an_error():
    with pytest.raises(ValueError, match="no language"):
        BatchPlan([1.0] * 3, 2.0, languages=["en", "es", None])
