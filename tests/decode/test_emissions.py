"""compute_emissions: an utterance's log-probabilities do not depend on the batch it lands in."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from test_families import MODELS
from test_loop import SMALL
from w2v.decode.emissions import compute_emissions, use_fast_paths
from w2v.models import load_model_config
from w2v.models.components import ConvFeatureEncoder, ConvPositionalEmbedding, FeedForward, padding_invariant
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


def test_batches_are_padded_to_whole_hops_and_keep_their_emissions():
    """A padding-invariant model's batches go through padded to whole hops of the conv encoder
    (so that a compiled model meets one parity of lengths in every conv layer); each utterance
    keeps the emissions of its own unpadded forward. Models run one utterance at a time are
    not padded."""
    model = tiny_ctc("layer_norm")
    hop = model.wav2vec2.feature_extractor.stride
    widths = []
    model.register_forward_pre_hook(lambda _, args: widths.append(args[0].shape[1]))
    audio = _audio(6001, 16003)
    em = compute_emissions(model, audio, True)
    assert widths == [16003 + (-16003 % hop)]
    for e, a in zip(em, audio):
        with torch.no_grad():
            wav = (torch.from_numpy(a) - a.mean()) / torch.from_numpy(a).std(unbiased=False)
            alone = torch.log_softmax(model(wav[None], torch.tensor([len(a)]))[0][0], dim=-1)
        assert e.shape == alone.shape
        torch.testing.assert_close(e, alone, atol=1e-5, rtol=0)
    group_norm = tiny_ctc("default")
    widths.clear()
    group_norm.register_forward_pre_hook(lambda _, args: widths.append(args[0].shape[1]))
    compute_emissions(group_norm, audio, True)
    assert sorted(widths) == [6001, 16003]


def test_too_short_utterance_alone_gets_no_frames():
    """Run alone, a wav2vec 1.0 utterance shorter than the receptive field (465 samples) is
    padded up to it and still gets zero frames."""
    model = tiny_ctc("wav2vec1")
    em = compute_emissions(model, _audio(400, 6000), True, ids=["short", "ok"])
    assert em[0].shape == (0, 9) and em[1].shape[0] > 0


def test_fast_paths_give_the_same_emissions():
    """Decoding with the convolutions as matrix products (`decode.matmul_conv`) is the same function."""
    model = tiny_ctc("layer_norm")
    audio = _audio(6000, 16000)
    plain = compute_emissions(model, audio, True)
    use_fast_paths(model, matmul_conv=True, compile=False)
    convs = [m for m in model.modules() if isinstance(m, (ConvFeatureEncoder, ConvPositionalEmbedding))]
    assert len(convs) == 2 and all(m.matmul for m in convs)
    for fast, ref in zip(compute_emissions(model, audio, True), plain):
        torch.testing.assert_close(fast, ref, atol=1e-4, rtol=1e-4)


def test_half_weights_give_the_same_emissions_under_bf16_autocast(monkeypatch):
    """`decode` on a GPU casts the linear layers' weights to bf16 once (`use_fast_paths(half_weights=True)`):
    under bf16 autocast the emissions are the same, bit for bit (here CPU autocast stands in for the GPU's;
    the GELU epilogue, switched on too, acts on a GPU only: tests/models/test_gelu_epilogue.py)."""
    from w2v.decode import emissions

    model = tiny_ctc("layer_norm")
    audio = _audio(6000, 16000)
    monkeypatch.setattr(emissions, "runs_in_bf16", lambda device: True)
    monkeypatch.setattr(torch, "autocast", lambda device_type, **kw: torch.amp.autocast("cpu", **kw))
    plain = compute_emissions(model, audio, True)
    use_fast_paths(model, matmul_conv=False, compile=False, half_weights=True, gelu_epilogue=True)
    assert all(m.gelu_epilogue for m in model.modules() if isinstance(m, FeedForward))  # acts on a GPU only
    linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert linear and all(m.weight.dtype == torch.bfloat16 for m in linear)
    assert all(p.dtype == torch.float32 for m in model.modules() if isinstance(m, torch.nn.LayerNorm)
               for p in m.parameters())
    for fast, ref in zip(compute_emissions(model, audio, True), plain):
        assert torch.equal(fast, ref)


def test_compiling_a_model_outside_the_wav2vec2_family_is_refused_by_name():
    with pytest.raises(ValueError, match=r"recipe.yaml \[m.pt\]: decode.compile: expected a wav2vec 2.0 model"):
        use_fast_paths(tiny_ctc("wav2vec1"), matmul_conv=False, compile=True, where="recipe.yaml [m.pt]")


class _Stop(Exception):
    pass


@pytest.mark.parametrize("decode, gpu, expected", [
    ("{decoders: [greedy]}", False, (True, False, False, False)),
    ("{decoders: [greedy], matmul_conv: false, compile: true}", False, (False, True, False, False)),
    ("{decoders: [greedy]}", True, (True, False, True, True)),
    ("{decoders: [greedy], gelu_epilogue: false}", True, (True, False, True, False))])
def test_decode_stage_takes_the_fast_paths_the_model_was_trained_with(decode, gpu, expected, tmp_path, monkeypatch):
    """`w2v decode`: ``decode.matmul_conv`` defaults to the model's training setting; ``decode.compile`` to off;
    the linear layers keep float32 weights on the CPU (bf16 ones only under a GPU's bf16 autocast); the GELU
    epilogue acts on a GPU only, unless ``decode.gelu_epilogue: false``."""
    from w2v.cli import main
    from w2v.decode import emissions

    calls = []

    def spy(model, matmul_conv, compile, where, half_weights, gelu_epilogue):
        calls.append((matmul_conv, compile, half_weights, gelu_epilogue))
        raise _Stop

    monkeypatch.setattr(emissions, "load_ctc_model",
                        lambda path, device: (torch.nn.Identity(), {"units": ["a"], "train_config": {"matmul_conv": True}}))
    monkeypatch.setattr(emissions, "use_fast_paths", spy)
    monkeypatch.setattr(emissions, "runs_in_bf16", lambda device: gpu)
    cfg = tmp_path / "recipe.yaml"
    cfg.write_text(f"recipe: x\nmodel: tiny\ncorpus: {{type: folder, path: /nope}}\ndecode: {decode}\n")
    with pytest.raises(_Stop):
        main(["decode", "--config", str(cfg), "--model", "m.pt", "--cuts", "dev.jsonl.gz", "--out", str(tmp_path)])
    assert calls == [expected]
