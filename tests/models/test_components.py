"""Feature encoder arithmetic and padding exactness of the encoder stack."""

import pytest
import torch

from w2v.models import ConvFeatureEncoder, Wav2Vec2Model, conv_output_lengths, load_model_config

SMALL_CONV = ((16, 10, 5),) + ((16, 3, 2),) * 4 + ((16, 2, 2),) * 2


def small_cfg(**overrides):
    base = dict(
        conv_feature_layers=SMALL_CONV, encoder_layers=2, encoder_embed_dim=32, encoder_ffn_embed_dim=64,
        encoder_attention_heads=4, conv_pos=8, conv_pos_groups=4, final_dim=16, latent_vars=8,
        num_negatives=5, mask_length=3,
    )
    return load_model_config("base", **{**base, **overrides})


def explicit_frames(n: int) -> int:
    # BASE stack written out: 400-sample window, 320-sample hop.
    return max(0, (n - 400) // 320 + 1)


@pytest.mark.parametrize("n", [0, 399, 400, 401, 719, 720, 1601, 16000, 16001, 33333])
def test_output_lengths_match_formula_and_forward(n):
    enc = ConvFeatureEncoder(SMALL_CONV)
    frames = int(enc.output_lengths(torch.tensor([n]))[0])
    assert frames == explicit_frames(n)
    if n >= 400:
        feats, lengths = enc(torch.randn(1, n), torch.tensor([n]))
        assert feats.shape == (1, frames, 16)
        assert int(lengths[0]) == frames


def test_conv_output_lengths_generic_layers():
    layers = ((4, 3, 1), (4, 4, 3))
    lengths = torch.tensor([2, 3, 10, 11])
    expected = [((n - 3) // 1 + 1 - 4) // 3 + 1 if n >= 6 else 0 for n in [2, 3, 10, 11]]
    assert conv_output_lengths(lengths, layers).tolist() == [max(e, 0) for e in expected]


def _padded_batch(sizes, seed=0):
    g = torch.Generator().manual_seed(seed)
    waves = [torch.randn(n, generator=g) for n in sizes]
    batch = torch.zeros(len(sizes), max(sizes))
    for i, w in enumerate(waves):
        batch[i, : len(w)] = w
    # Garbage in the padding must not matter either.
    batch[batch == 0] = 7.0
    return waves, batch, torch.tensor(sizes)


@pytest.mark.parametrize("layer_norm_first", [False, True])
def test_layer_norm_extractor_batched_equals_per_utterance(layer_norm_first):
    # Every layer of the layer-norm extractor is local in time, so padding is exact end
    # to end: a padded utterance gives the same frames as the cropped one.
    torch.manual_seed(0)
    model = Wav2Vec2Model(small_cfg(extractor_mode="layer_norm", conv_bias=True, layer_norm_first=layer_norm_first))
    model.eval()
    waves, batch, lengths = _padded_batch([4000, 2500, 1333])
    out = model(batch, lengths)
    for i, w in enumerate(waves):
        single = model(w[None])
        n = int(out.lengths[i])
        assert n == single.hidden.shape[1]
        torch.testing.assert_close(out.hidden[i, :n], single.hidden[0], atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(out.features[i, :n], single.features[0], atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("layer_norm_first", [False, True])
def test_group_norm_extractor_padding(layer_norm_first):
    # BASE's first conv layer group-normalises each channel over the whole time axis,
    # padding included (fairseq and HF do the same), so a padded utterance is NOT equal to
    # the cropped one. What holds: (1) no leak across the batch and no dependence on the
    # padding's content (padded samples are zeroed); (2) after the conv encoder, the
    # attention mask makes the rest exact: cropping the conv features gives the same output.
    torch.manual_seed(0)
    model = Wav2Vec2Model(small_cfg(extractor_mode="default", layer_norm_first=layer_norm_first)).eval()
    waves, batch, lengths = _padded_batch([4000, 2500, 1333])
    out = model(batch, lengths)
    width = batch.shape[1]
    for i, w in enumerate(waves):
        n = int(out.lengths[i])
        alone_padded = torch.zeros(1, width)
        alone_padded[0, : len(w)] = w
        single = model(alone_padded, lengths[i : i + 1])
        torch.testing.assert_close(out.hidden[i, :n], single.hidden[0, :n], atol=2e-5, rtol=1e-4)
        if n < out.hidden.shape[1]:
            cropped = model(w[None])
            assert not torch.allclose(out.features[i, :n], cropped.features[0], atol=1e-3)

        raw, _ = model.extract_features(batch[i : i + 1], lengths[i : i + 1])
        x, _ = model.feature_projection(raw[:, :n])
        ref, _ = model.encoder(x)
        torch.testing.assert_close(out.hidden[i, :n], ref[0], atol=2e-5, rtol=1e-4)


def test_encoder_ignores_padded_frame_content():
    torch.manual_seed(0)
    model = Wav2Vec2Model(small_cfg()).eval()
    x = torch.randn(2, 12, 32)
    pad = torch.zeros(2, 12, dtype=torch.bool)
    pad[1, 7:] = True
    a, _ = model.encoder(x, pad)
    x2 = x.clone()
    x2[1, 7:] = 100.0
    b, _ = model.encoder(x2, pad)
    torch.testing.assert_close(a[:, :7], b[:, :7])
    torch.testing.assert_close(a[0], b[0])


def test_hidden_states_count_and_last():
    torch.manual_seed(0)
    for lnf in (False, True):
        model = Wav2Vec2Model(small_cfg(layer_norm_first=lnf)).eval()
        out = model(torch.randn(2, 3000), output_hidden_states=True)
        assert len(out.layer_results) == 3
        torch.testing.assert_close(out.layer_results[-1], out.hidden)


def test_too_short_input_gives_zero_frames_without_nan():
    torch.manual_seed(0)
    model = Wav2Vec2Model(small_cfg()).eval()
    out = model(torch.randn(2, 2000), torch.tensor([2000, 300]))
    assert out.lengths.tolist() == [explicit_frames(2000), 0]
    assert out.padding_mask[1].all()
    assert torch.isfinite(out.hidden).all()
