"""fairseq checkpoint import: key table round trip, config parsing, end-to-end import, errors.

A tiny model of ours is written in fairseq's layout (with `to_fairseq_keys`, the inverse of the
import table) inside a fake fairseq checkpoint dict, imported, and compared with the original;
where transformers is installed the same weights are also run through Hugging Face's model.
"""

from __future__ import annotations

import pytest
import torch

from w2v.interop.fairseq import (
    DROPPED,
    FairseqImportError,
    config_from_fairseq,
    from_fairseq_keys,
    import_fairseq,
    parse_conv_feature_layers,
    read_fairseq_dictionary,
    to_fairseq_keys,
)
from w2v.models import Wav2Vec2ForCTC, Wav2Vec2ForPreTraining
from w2v.models.config import Wav2Vec2Config, load_model_config
from w2v.train.checkpoint import CheckpointError

NO_DROPOUT = {"dropout": 0.0, "attention_dropout": 0.0, "activation_dropout": 0.0, "dropout_input": 0.0,
              "dropout_features": 0.0, "layerdrop": 0.0}
VARIANTS = {
    "default": {"extractor_mode": "default", "layer_norm_first": False, "conv_bias": False},
    "layer_norm": {"extractor_mode": "layer_norm", "layer_norm_first": True, "conv_bias": True},
}
CONV_STRING = "[(32, 10, 5)] + [(32, 3, 2)] * 2 + [(32,2,2)]"
FS_DICT = ["|", "E", "T", "A"]
UNITS = ["<blank>", "<pad>", "</s>", "<unk>", *FS_DICT]


def tiny_cfg(variant: str) -> Wav2Vec2Config:
    return load_model_config(
        "tiny", conv_feature_layers=parse_conv_feature_layers(CONV_STRING), encoder_layers=1,
        encoder_embed_dim=48, encoder_ffn_embed_dim=96, encoder_attention_heads=4, conv_pos=16, conv_pos_groups=4,
        final_dim=16, latent_vars=8, latent_groups=2, **NO_DROPOUT, **VARIANTS[variant],
    )


def fairseq_model_cfg(cfg: Wav2Vec2Config) -> dict:
    """What fairseq stores in ckpt["cfg"]["model"] for this network (plus a few fairseq-only fields)."""
    d = cfg.to_dict()
    d["conv_feature_layers"] = CONV_STRING
    d["encoder_layerdrop"] = d.pop("layerdrop")
    d.pop("mask_min_masks")
    d.update({"_name": "wav2vec2", "mask_selection": "static", "quantize_input": False, "target_glu": False})
    return d


def randomized(model: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return model.eval()


def write_pretrain(tmp_path, variant: str):
    cfg = tiny_cfg(variant)
    ours = randomized(Wav2Vec2ForPreTraining(cfg))
    state = to_fairseq_keys(ours.state_dict(), cfg.extractor_mode)
    state["encoder._float_tensor"] = torch.zeros(1)  # a dropped fairseq-only buffer
    path = tmp_path / "fs_pretrain.pt"
    torch.save({"cfg": {"model": fairseq_model_cfg(cfg)}, "model": state}, path)
    return cfg, ours, path


def write_ctc(tmp_path, variant: str, with_dict: bool = True):
    cfg = tiny_cfg(variant)
    ours = randomized(Wav2Vec2ForCTC(cfg, len(UNITS)))
    state = to_fairseq_keys(ours.state_dict(), cfg.extractor_mode)
    model_cfg = {"_name": "wav2vec_ctc", "dropout": 0.0, "mask_prob": 0.5, "layerdrop": 0.0,
                 "w2v_args": {"model": fairseq_model_cfg(cfg)}}
    path = tmp_path / "fs_ctc.pt"
    torch.save({"cfg": {"model": model_cfg}, "model": state}, path)
    if with_dict:
        (tmp_path / "dict.ltr.txt").write_text("".join(f"{t} {100 - i}\n" for i, t in enumerate(FS_DICT)))
    return cfg, ours, path


def wave(n: int = 1600) -> torch.Tensor:
    return torch.randn(2, n, generator=torch.Generator().manual_seed(0))


# ---------------------------------------------------------------- key table


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("head", ["pretrain", "ctc"])
def test_to_fairseq_keys_is_exact_inverse(variant, head):
    cfg = tiny_cfg(variant)
    model = Wav2Vec2ForPreTraining(cfg) if head == "pretrain" else Wav2Vec2ForCTC(cfg, 7)
    ours = model.state_dict()
    fs = to_fairseq_keys(ours, cfg.extractor_mode)
    assert len(fs) == len(ours)
    back, dropped = from_fairseq_keys(fs)
    assert dropped == []
    assert list(back) == list(ours) and all(back[k] is ours[k] for k in ours)
    assert to_fairseq_keys(back, cfg.extractor_mode) == fs


def test_fairseq_names():
    fs = to_fairseq_keys(Wav2Vec2ForCTC(tiny_cfg("default"), 7).state_dict(), "default")
    for key in ["w2v_encoder.w2v_model.feature_extractor.conv_layers.0.0.weight",
                "w2v_encoder.w2v_model.feature_extractor.conv_layers.0.2.weight",
                "w2v_encoder.w2v_model.post_extract_proj.weight", "w2v_encoder.w2v_model.layer_norm.bias",
                "w2v_encoder.w2v_model.mask_emb", "w2v_encoder.w2v_model.encoder.pos_conv.0.weight_g",
                "w2v_encoder.w2v_model.encoder.pos_conv.0.weight_v", "w2v_encoder.w2v_model.encoder.pos_conv.0.bias",
                "w2v_encoder.w2v_model.encoder.layers.0.self_attn.out_proj.weight",
                "w2v_encoder.w2v_model.encoder.layers.0.self_attn_layer_norm.weight",
                "w2v_encoder.w2v_model.encoder.layers.0.fc1.weight",
                "w2v_encoder.w2v_model.encoder.layers.0.final_layer_norm.weight",
                "w2v_encoder.w2v_model.encoder.layer_norm.weight", "w2v_encoder.proj.weight"]:
        assert key in fs, key
    pre = to_fairseq_keys(Wav2Vec2ForPreTraining(tiny_cfg("layer_norm")).state_dict(), "layer_norm")
    for key in ["feature_extractor.conv_layers.2.2.1.weight", "feature_extractor.conv_layers.2.0.bias",
                "quantizer.vars", "quantizer.weight_proj.weight", "project_q.weight", "final_proj.weight"]:
        assert key in pre, key


def test_newer_parametrized_pos_conv_names_accepted():
    sd = {"encoder.pos_conv.0.parametrizations.weight.original0": 1,
          "encoder.pos_conv.0.parametrizations.weight.original1": 2}
    out, _ = from_fairseq_keys(sd)
    assert out == {"wav2vec2.encoder.pos_conv_embed.conv.parametrizations.weight.original0": 1,
                   "wav2vec2.encoder.pos_conv_embed.conv.parametrizations.weight.original1": 2}


def test_unknown_keys_named_and_dropped_listed():
    with pytest.raises(FairseqImportError, match=r"encoder\.layers\.0\.mystery\.weight"):
        from_fairseq_keys({"encoder.layers.0.mystery.weight": 0, "mask_emb": 1})
    out, dropped = from_fairseq_keys({"mask_emb": 1, "encoder._float_tensor": 2, "label_embs_concat": 3})
    assert dropped == ["encoder._float_tensor", "label_embs_concat"] and list(out) == ["wav2vec2.masked_spec_embed"]
    assert DROPPED  # the table is explicit
    # CTC: pre-training heads are dropped, anything outside the w2v_model prefix is unknown.
    _, dropped = from_fairseq_keys({"w2v_encoder.proj.weight": 0, "w2v_encoder.w2v_model.quantizer.vars": 1})
    assert dropped == ["w2v_encoder.w2v_model.quantizer.vars"]
    with pytest.raises(FairseqImportError, match=r"w2v_encoder\.extra"):
        from_fairseq_keys({"w2v_encoder.proj.weight": 0, "w2v_encoder.extra": 1})


# ---------------------------------------------------------------- config


def test_conv_feature_layers_parser():
    base = "[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512,2,2)] * 2"
    assert parse_conv_feature_layers(base) == Wav2Vec2Config().conv_feature_layers
    assert parse_conv_feature_layers("[(512, 10, 5)] + 2 * [(512, 2, 2)]")[1:] == ((512, 2, 2),) * 2
    for bad in ["__import__('os').system('true')", "[(512, 10, 5)] * (10 ** 9)", "[x]", "[(512, 10, 5)] - []",
                "[(512, 10)]", "[(512, 10, 5.0)]", "[(512, 10, 5)] * 100000", "[(1,2,3)] if True else []",
                "open('f')", "[(512, 10, 5)", "'abc'"]:
        with pytest.raises(ValueError):
            parse_conv_feature_layers(bad)


def test_config_from_fairseq_pretrain_and_finetune():
    cfg = tiny_cfg("layer_norm")
    fs = fairseq_model_cfg(cfg)
    assert config_from_fairseq(fs) == cfg
    ft = config_from_fairseq({"w2v_args": {"model": fs}, "mask_prob": 0.5, "layerdrop": 0.1, "dropout": None})
    assert ft == cfg.replace(mask_prob=0.5, layerdrop=0.1)
    # pre-hydra: flat w2v_args, latent_temp as a string
    old = {**fs, "latent_temp": "(2, 0.5, 0.999995)"}
    assert config_from_fairseq({"w2v_args": old}).latent_temp == (2.0, 0.5, 0.999995)
    with pytest.raises(ValueError, match="target_glu"):
        config_from_fairseq({**fs, "target_glu": True})


def test_read_fairseq_dictionary(tmp_path):
    p = tmp_path / "dict.ltr.txt"
    p.write_text("| 94802\nE 51860\n' 1000 #fairseq:overwrite\n")
    assert read_fairseq_dictionary(p) == ["<blank>", "<pad>", "</s>", "<unk>", "|", "E", "'"]
    p.write_text("oops\n")
    with pytest.raises(FairseqImportError, match="dict.ltr.txt:1"):
        read_fairseq_dictionary(p)


# ---------------------------------------------------------------- import


def _hf_model(cfg, vocab_size=None):
    pytest.importorskip("transformers")
    from transformers import Wav2Vec2ForCTC as HFCTC
    from transformers import Wav2Vec2ForPreTraining as HFPre

    from w2v.interop.hf_config import to_hf_config

    hf_cfg = to_hf_config(cfg, vocab_size=vocab_size)
    return (HFPre(hf_cfg) if vocab_size is None else HFCTC(hf_cfg)).eval()


@pytest.mark.parametrize("variant", VARIANTS)
def test_import_pretrain_roundtrip(tmp_path, variant):
    cfg, ours, path = write_pretrain(tmp_path, variant)
    out = tmp_path / "model.pt"
    summary = import_fairseq(path, out)
    assert summary["task"] == "pretrain" and summary["dropped"] == ["encoder._float_tensor"]
    assert summary["n_params"] == sum(p.numel() for p in ours.parameters())
    ck = torch.load(out, weights_only=False)
    assert ck["task"] == "pretrain" and "units" not in ck and ck["source"] == str(path)
    assert Wav2Vec2Config.from_dict(ck["model_config"]) == cfg
    assert ck["model"].keys() == ours.state_dict().keys()
    for k, v in ours.state_dict().items():
        assert torch.equal(ck["model"][k], v), k
    imported = Wav2Vec2ForPreTraining(cfg).eval()
    imported.load_state_dict(ck["model"], strict=True)
    x = wave()
    with torch.no_grad():
        assert torch.equal(imported.wav2vec2(x).hidden, ours.wav2vec2(x).hidden)
    try:
        hf = _hf_model(cfg)
    except pytest.skip.Exception:
        return
    hf.load_state_dict(ck["model"], strict=True)
    with torch.no_grad():
        ref = hf.wav2vec2(x).last_hidden_state
        torch.testing.assert_close(imported.wav2vec2(x).hidden, ref, atol=1e-4, rtol=0)


@pytest.mark.parametrize("variant", VARIANTS)
def test_import_ctc_roundtrip_matches_hf(tmp_path, variant):
    cfg, ours, path = write_ctc(tmp_path, variant)
    out = tmp_path / "model.pt"
    summary = import_fairseq(path, out)
    assert summary["task"] == "finetune" and summary["n_units"] == len(UNITS)
    ck = torch.load(out, weights_only=False)
    assert ck["units"] == UNITS and ck["task"] == "finetune"
    assert Wav2Vec2Config.from_dict(ck["model_config"]) == cfg.replace(mask_prob=0.5)
    for k, v in ours.state_dict().items():
        assert torch.equal(ck["model"][k], v), k
    imported = Wav2Vec2ForCTC(Wav2Vec2Config.from_dict(ck["model_config"]), len(ck["units"])).eval()
    imported.load_state_dict(ck["model"], strict=True)
    x = wave()
    with torch.no_grad():
        logits, _ = imported(x)
        assert torch.equal(logits, ours(x)[0])
    try:
        hf = _hf_model(cfg, vocab_size=len(UNITS))
    except pytest.skip.Exception:
        return
    hf.load_state_dict(ck["model"], strict=True)
    with torch.no_grad():
        torch.testing.assert_close(logits, hf(x).logits, atol=1e-4, rtol=0)


def test_ctc_units_argument_and_missing_dict(tmp_path):
    _, _, path = write_ctc(tmp_path, "default", with_dict=False)
    with pytest.raises(FairseqImportError, match="dict.ltr.txt"):
        import_fairseq(path, tmp_path / "model.pt")
    units = ["<blank>", "a", "b", "c", "|", "d", "e", "f"]
    assert import_fairseq(path, tmp_path / "model.pt", units=units)["n_units"] == 8
    assert torch.load(tmp_path / "model.pt", weights_only=False)["units"] == units
    with pytest.raises(FairseqImportError, match="7 units"):
        import_fairseq(path, tmp_path / "model.pt", units=units[:-1])


def test_truncated_file_named(tmp_path):
    _, _, path = write_pretrain(tmp_path, "default")
    data = path.read_bytes()
    bad = tmp_path / "truncated.pt"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated.pt"):
        import_fairseq(bad, tmp_path / "model.pt")
    assert not (tmp_path / "model.pt").exists()


def test_shape_mismatch_names_tensor_and_shapes(tmp_path):
    _, _, path = write_pretrain(tmp_path, "default")
    ck = torch.load(path, weights_only=False)
    ck["model"]["post_extract_proj.weight"] = torch.zeros(48, 31)
    torch.save(ck, path)
    with pytest.raises(FairseqImportError,
                       match=r"wav2vec2\.feature_projection\.projection\.weight: checkpoint \(48, 31\) vs model \(48, 32\)"):
        import_fairseq(path, tmp_path / "model.pt")


def test_unknown_key_in_checkpoint_named(tmp_path):
    _, _, path = write_pretrain(tmp_path, "default")
    ck = torch.load(path, weights_only=False)
    ck["model"]["target_glu.0.weight"] = torch.zeros(1)
    torch.save(ck, path)
    with pytest.raises(FairseqImportError, match=r"target_glu\.0\.weight"):
        import_fairseq(path, tmp_path / "model.pt")
