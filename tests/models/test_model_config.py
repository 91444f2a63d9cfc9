"""Config presets, YAML loading and the checkpoint round-trip."""

import pytest
import torch

from w2v.models import Wav2Vec2Config, Wav2Vec2ForPreTraining, count_parameters, load_model_config


def test_defaults_are_released_base():
    cfg = Wav2Vec2Config()
    assert cfg.encoder_attention_heads == 12 and cfg.encoder_layers == 12
    assert cfg.conv_feature_layers[0] == (512, 10, 5) and len(cfg.conv_feature_layers) == 7
    assert load_model_config("base") == cfg


def test_yaml_lists_become_tuples_and_dict_round_trips():
    cfg = load_model_config("tiny")
    assert isinstance(cfg.conv_feature_layers, tuple) and isinstance(cfg.conv_feature_layers[0], tuple)
    assert cfg.latent_temp == (2.0, 0.5, 0.999)
    assert Wav2Vec2Config.from_dict(cfg.to_dict()) == cfg
    assert hash(cfg) == hash(Wav2Vec2Config.from_dict(cfg.to_dict()))


def test_overrides_and_paths(tmp_path):
    assert load_model_config("tiny", mask_prob=0.5).mask_prob == 0.5
    p = tmp_path / "m.yaml"
    p.write_text("encoder_layers: 3\n")
    assert load_model_config(str(p)).encoder_layers == 3


def test_unknown_key_names_key_and_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("encoder_layers: 3\nencoder_layerz: 4\n")
    with pytest.raises(ValueError, match=r"encoder_layerz.*bad\.yaml"):
        load_model_config(str(p))
    with pytest.raises(ValueError, match="nonsense"):
        load_model_config("tiny", nonsense=1)


def test_tiny_preset_shape():
    cfg = load_model_config("tiny")
    assert [k for _, k, _ in cfg.conv_feature_layers] == [10, 3, 3, 3, 3, 2, 2]
    assert (cfg.encoder_layers, cfg.encoder_embed_dim, cfg.encoder_attention_heads) == (4, 192, 4)
    m = Wav2Vec2ForPreTraining(cfg)
    assert m.wav2vec2.feature_extractor.stride == 320
    assert m.wav2vec2.feature_extractor.receptive_field == 400


@pytest.mark.parametrize("name,expected", [("base", 95.0e6), ("large", 317.0e6)])
def test_published_parameter_counts(name, expected):
    # Counted with quantizer and projections (the published numbers are for the
    # pre-training models). Measured: base 95,044,608 (94,634,368 without the quantizer),
    # large 317,380,864 (316,806,784 without).
    with torch.device("meta"):  # no memory, no init cost
        m = Wav2Vec2ForPreTraining(load_model_config(name))
    total = count_parameters(m)
    assert abs(total - expected) / expected < 0.01
    assert total - count_parameters(m.quantizer) < total
