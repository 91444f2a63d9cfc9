"""compute_emissions: an utterance's log-probabilities do not depend on the batch it lands in."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from test_families import MODELS
from test_loop import SMALL
from w2v.decode.emissions import compute_emissions
from w2v.models import load_model_config
from w2v.models.components import padding_invariant
from w2v.models.families import build_ctc_model, config_from_dict


def tiny_ctc(kind: str) -> torch.nn.Module:
    """A tiny CTC model: a family of `test_families.MODELS`, or wav2vec 2.0 in an extractor mode."""
    if kind in MODELS:
        cfg = config_from_dict(MODELS[kind])
    else:
        cfg = load_model_config("tiny", **SMALL, extractor_mode=kind)
    return build_ctc_model(cfg, 9).eval()


def _audio(*samples: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.standard_normal(n).astype(np.float32) for n in samples]


def _forwards(model: torch.nn.Module) -> list[int]:
    """Batch sizes of the model's forward calls, as they happen."""
    sizes: list[int] = []
    model.register_forward_pre_hook(lambda _, args: sizes.append(args[0].shape[0]))
    return sizes


@pytest.mark.parametrize("kind", ["wav2vec1", "vq_wav2vec", "hubert", "default"])
def test_group_norm_encoders_are_not_padding_invariant(kind):
    assert not padding_invariant(tiny_ctc(kind))


@pytest.mark.parametrize("kind", ["wav2vec1", "default"])
def test_emissions_alone_equal_batched_with_a_longer_utterance(kind):
    """Group norm over time (wav2vec 1.0's every conv layer, BASE's first) would see the longer
    utterance's padding: such models run each utterance unpadded."""
    model = tiny_ctc(kind)
    short, long = _audio(6000, 16000)
    alone = compute_emissions(model, [short], True)[0]
    long_alone = compute_emissions(model, [long], True)[0]
    sizes = _forwards(model)
    batched = compute_emissions(model, [long, short, long], True)
    assert alone.shape[0] > 0 and [e.shape for e in batched] == [long_alone.shape, alone.shape, long_alone.shape]
    torch.testing.assert_close(batched[1], alone, atol=1e-5, rtol=0)
    torch.testing.assert_close(batched[0], long_alone, atol=1e-5, rtol=0)
    assert sizes == [1, 1, 1]


def test_layer_norm_encoder_still_batches():
    model = tiny_ctc("layer_norm")
    assert padding_invariant(model)
    short, long = _audio(6000, 16000)
    alone = compute_emissions(model, [short], True)[0]
    sizes = _forwards(model)
    batched = compute_emissions(model, [long, short, long], True)
    assert sizes == [3]
    torch.testing.assert_close(batched[1], alone, atol=1e-5, rtol=0)


def test_too_short_utterance_alone_gets_no_frames():
    """Run alone, a wav2vec 1.0 utterance shorter than the receptive field (465 samples) is
    padded up to it and still gets zero frames."""
    model = tiny_ctc("wav2vec1")
    em = compute_emissions(model, _audio(400, 6000), True, ids=["short", "ok"])
    assert em[0].shape == (0, 9) and em[1].shape[0] > 0
