"""Presets of the published wav2vec 2.0 line-up: parameter counts vs Hugging Face and the papers.

Built on the meta device (no memory, no init cost), so the 2B model counts in milliseconds.
"""

from __future__ import annotations

import pytest
import torch

from w2v.models import Wav2Vec2ForPreTraining, load_model_config
from w2v.models.wav2vec2 import count_parameters

transformers = pytest.importorskip("transformers")
from w2v.interop.hf_config import to_hf_config

# preset -> (exact Wav2Vec2ForPreTraining count incl. quantizer and projections, nominal count, tolerance).
# The exact counts equal transformers.Wav2Vec2ForPreTraining's (asserted below). Nominal counts
# are the papers' / model cards' names. BASE (95M) and LARGE (317M) are quoted to 3 digits and
# hold to 1%. XLS-R's names are rounded model-size labels, not counts: "300M" is the LARGE-LV60
# network (317.4M here, 315.4M without quantizer/projections, 5.8% above 300M); "1B" counts
# 965.5M (3.4% below) and "2B" 2.163B (8.1% above), so those three only get a 10% sanity bound
# and rely on the exact pinned count (= HF's) instead.
PRESETS = {
    "base": (95_044_608, 95e6, 0.01),
    "large": (317_380_864, 317e6, 0.01),
    "large_lv60": (317_390_592, 317e6, 0.01),
    "xlsr_53": (317_390_592, 317e6, 0.01),
    "xls_r_300m": (317_390_592, 300e6, 0.10),
    "xls_r_1b": (965_514_752, 1e9, 0.10),
    "xls_r_2b": (2_162_932_352, 2e9, 0.10),
    "mms_1b": (965_514_752, 1e9, 0.10),
}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_parameter_count_matches_hf_and_published(name):
    exact, nominal, rel = PRESETS[name]
    cfg = load_model_config(name)
    with torch.device("meta"):
        ours = Wav2Vec2ForPreTraining(cfg)
        theirs = transformers.Wav2Vec2ForPreTraining(to_hf_config(cfg))
    n_ours = count_parameters(ours)
    n_hf = sum(p.numel() for p in theirs.parameters())
    assert n_ours == n_hf, (name, n_ours, n_hf)
    assert n_ours == exact, (name, n_ours)
    assert abs(n_ours - nominal) <= rel * nominal, (name, n_ours, nominal)
    # Same names and shapes, so checkpoints move with load_state_dict(strict=True).
    ours_shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    hf_shapes = {k: tuple(v.shape) for k, v in theirs.state_dict().items()}
    assert ours_shapes == hf_shapes


@pytest.mark.parametrize("name", ["large_lv60", "xlsr_53", "xls_r_300m", "xls_r_1b", "xls_r_2b", "mms_1b"])
def test_stable_layer_norm_presets(name):
    cfg = load_model_config(name)
    assert cfg.layer_norm_first and cfg.extractor_mode == "layer_norm" and cfg.conv_bias
    hf = to_hf_config(cfg)
    assert hf.do_stable_layer_norm and hf.feat_extract_norm == "layer" and hf.conv_bias
    assert hf.proj_codevector_dim == hf.codevector_dim == cfg.final_dim


@pytest.mark.parametrize(
    "name,layers,dim,ffn,heads,final_dim",
    [
        ("large_lv60", 24, 1024, 4096, 16, 768),
        ("xls_r_300m", 24, 1024, 4096, 16, 768),
        ("xls_r_1b", 48, 1280, 5120, 16, 1024),
        ("xls_r_2b", 48, 1920, 7680, 16, 1024),
        ("mms_1b", 48, 1280, 5120, 16, 1024),
    ],
)
def test_preset_shapes(name, layers, dim, ffn, heads, final_dim):
    cfg = load_model_config(name)
    assert (cfg.encoder_layers, cfg.encoder_embed_dim, cfg.encoder_ffn_embed_dim) == (layers, dim, ffn)
    assert (cfg.encoder_attention_heads, cfg.final_dim, cfg.codevector_dim) == (heads, final_dim, final_dim)
