"""HF directory -> our model.pt -> HF directory, at toy sizes (random weights, fp32, CPU)."""

from __future__ import annotations

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("safetensors")

from tests.interop.test_hf_parity import SAMPLES, VARIANTS, randomize_, small_cfg
from w2v.decode.emissions import load_ctc_model
from w2v.interop.hf import HFConversionError, export_hf, from_hf_config, import_hf
from w2v.interop.hf_config import LEGACY_WEIGHT_NORM_KEYS, to_hf_config
from w2v.models import Wav2Vec2ForCTC
from w2v.train.checkpoint import load

ATOL = 1e-5
# HF style: pad (CTC blank) at 0, "|" word delimiter, <unk>.
VOCAB = {"<pad>": 0, "<unk>": 1, "|": 2, "A": 3, "B": 4, "C": 5, "E": 6, "H": 7, "L": 8, "O": 9, "'": 10}


def hf_model(cls, variant, vocab_size=None, seed=1):
    hc = to_hf_config(small_cfg(variant), vocab_size=vocab_size)
    if vocab_size is not None:
        hc.pad_token_id = 0
    hc._attn_implementation = "eager"
    torch.manual_seed(0)
    m = cls(hc)
    randomize_(m, seed)
    return m.eval()


def save_ctc_dir(tmp_path, variant, name="hf"):
    m = hf_model(transformers.Wav2Vec2ForCTC, variant, vocab_size=len(VOCAB))
    d = tmp_path / name
    m.save_pretrained(d)
    (d / "vocab.json").write_text(json.dumps(VOCAB))
    return m, d


def wave(n=2):
    return torch.randn(n, SAMPLES, generator=torch.Generator().manual_seed(5))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_ctc_round_trip(tmp_path, variant):
    theirs, d = save_ctc_dir(tmp_path, variant)
    summary = import_hf(d, tmp_path / "model.pt")
    assert summary["task"] == "finetune" and summary["architecture"] == "Wav2Vec2ForCTC"
    assert summary["dropped"] == [] and summary["n_params"] == sum(p.numel() for p in theirs.parameters())
    units = ["<blank>", "<unk>", "|", "A", "B", "C", "E", "H", "L", "O", "'"]
    assert summary["units"] == units

    ours, meta = load_ctc_model(tmp_path / "model.pt")
    assert meta["units"] == units and meta["task"] == "finetune"
    x = wave()
    with torch.no_grad():
        ref = theirs(x).logits
        logits, _ = ours(x)
    torch.testing.assert_close(logits, ref, atol=ATOL, rtol=0)

    out = export_hf(tmp_path / "model.pt", tmp_path / "export")
    assert sorted(p.name for p in out.iterdir()) == sorted([
        "config.json", "model.safetensors", "vocab.json", "tokenizer_config.json",
        "special_tokens_map.json", "preprocessor_config.json"])
    back = transformers.Wav2Vec2ForCTC.from_pretrained(out, attn_implementation="eager").eval()
    with torch.no_grad():
        torch.testing.assert_close(back(x).logits, ref, atol=ATOL, rtol=0)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architectures"] == ["Wav2Vec2ForCTC"] and cfg["pad_token_id"] == 0
    assert cfg["vocab_size"] == len(units) and cfg["word_delimiter_token"] == "|"

    proc = transformers.Wav2Vec2Processor.from_pretrained(out)
    fe = proc.feature_extractor
    assert fe.sampling_rate == 16000 and fe.do_normalize
    assert fe.return_attention_mask == (variant == "lv60_style")
    assert proc.tokenizer.pad_token_id == 0
    ids = [units.index(c) for c in "HELLO"] + [2] + [units.index(c) for c in "ABC"]
    assert proc.tokenizer.decode(ids, group_tokens=False) == "HELLO ABC"
    # CTC collapsing + blanks, as on argmax output
    assert proc.tokenizer.decode([7, 7, 0, 6, 8, 0, 8, 9, 2, 3]) == "HELLO A"
    # importing the export again gives the same checkpoint
    import_hf(out, tmp_path / "again.pt")
    a, b = load(tmp_path / "model.pt"), load(tmp_path / "again.pt")
    assert a["units"] == b["units"] and a["model_config"] == b["model_config"]
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_export_normalize_from_train_config(tmp_path):
    _, d = save_ctc_dir(tmp_path, "base_style")
    import_hf(d, tmp_path / "model.pt")
    ck = load(tmp_path / "model.pt")
    ck["train_config"] = {"normalize_audio": False}
    torch.save(ck, tmp_path / "nonorm.pt")
    out = export_hf(tmp_path / "nonorm.pt", tmp_path / "export")
    assert json.loads((out / "preprocessor_config.json").read_text())["do_normalize"] is False
    with pytest.raises(HFConversionError, match="not an empty directory"):
        export_hf(tmp_path / "nonorm.pt", tmp_path / "export")


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_pretraining_round_trip(tmp_path, variant):
    theirs = hf_model(transformers.Wav2Vec2ForPreTraining, variant)
    theirs.save_pretrained(tmp_path / "hf")
    summary = import_hf(tmp_path / "hf", tmp_path / "model.pt")
    assert summary["task"] == "pretrain" and summary["has_quantizer"] and summary["units"] is None
    ck = load(tmp_path / "model.pt")
    assert ck["has_quantizer"] is True and "units" not in ck
    assert ck["model_config"] == small_cfg(variant).to_dict()
    out = export_hf(tmp_path / "model.pt", tmp_path / "export")
    back = transformers.Wav2Vec2ForPreTraining.from_pretrained(out)
    ref_sd, back_sd = theirs.state_dict(), back.state_dict()
    assert list(ref_sd) == list(back_sd)
    assert all(torch.equal(ref_sd[k], back_sd[k]) for k in ref_sd)
    assert json.loads((out / "config.json").read_text())["architectures"] == ["Wav2Vec2ForPreTraining"]
    assert not (out / "vocab.json").exists()


def test_base_model_import_then_finetune_init(tmp_path):
    theirs = hf_model(transformers.Wav2Vec2Model, "base_style")
    theirs.save_pretrained(tmp_path / "hf")
    assert "feature_projection.projection.weight" in theirs.state_dict()  # no prefix on HF's side
    summary = import_hf(tmp_path / "hf", tmp_path / "model.pt")
    assert summary["task"] == "pretrain" and summary["has_quantizer"] is False
    ck = load(tmp_path / "model.pt")
    assert ck["has_quantizer"] is False and all(k.startswith("wav2vec2.") for k in ck["model"])
    ctc = Wav2Vec2ForCTC(small_cfg("base_style"), 5)
    assert ctc.load_pretrained(ck["model"]) == []
    x = wave()
    with torch.no_grad():
        torch.testing.assert_close(ctc.wav2vec2(x).hidden, theirs(x).last_hidden_state, atol=ATOL, rtol=0)
    out = export_hf(tmp_path / "model.pt", tmp_path / "export")
    back = transformers.Wav2Vec2Model.from_pretrained(out).eval()
    with torch.no_grad():
        torch.testing.assert_close(back(x).last_hidden_state, theirs(x).last_hidden_state, atol=ATOL, rtol=0)


def test_legacy_weight_norm_import(tmp_path):
    theirs, d = save_ctc_dir(tmp_path, "lv60_style")
    sd = theirs.state_dict()
    legacy = {}
    for k, v in sd.items():
        for old, new in LEGACY_WEIGHT_NORM_KEYS.items():
            if k.endswith(new):
                k = k[: -len(new)] + old
        legacy[k] = v.contiguous()
    assert "wav2vec2.encoder.pos_conv_embed.conv.weight_g" in legacy
    (d / "model.safetensors").unlink()
    torch.save(legacy, d / "pytorch_model.bin")
    import_hf(d, tmp_path / "model.pt")
    ours, _ = load_ctc_model(tmp_path / "model.pt")
    x = wave()
    with torch.no_grad():
        torch.testing.assert_close(ours(x)[0], theirs(x).logits, atol=ATOL, rtol=0)


def test_missing_weights_names_dir(tmp_path):
    _, d = save_ctc_dir(tmp_path, "base_style")
    (d / "model.safetensors").unlink()
    with pytest.raises(HFConversionError, match=f"no model.safetensors or pytorch_model.bin in {d}"):
        import_hf(d, tmp_path / "model.pt")
    assert not (tmp_path / "model.pt").exists()


def test_truncated_safetensors_names_file(tmp_path):
    _, d = save_ctc_dir(tmp_path, "base_style")
    f = d / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(HFConversionError, match=f"cannot read {f}"):
        import_hf(d, tmp_path / "model.pt")


def test_shape_mismatch_names_tensor_and_shapes(tmp_path):
    _, d = save_ctc_dir(tmp_path, "base_style")
    cfg = json.loads((d / "config.json").read_text())
    cfg["intermediate_size"] = 64  # weights have 96
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(HFConversionError) as e:
        import_hf(d, tmp_path / "model.pt")
    assert "wav2vec2.encoder.layers.0.feed_forward.intermediate_dense.weight: checkpoint (96, 48) vs config (64, 48)" in str(e.value)


def test_unknown_key_named(tmp_path):
    theirs, d = save_ctc_dir(tmp_path, "base_style")
    from safetensors.torch import save_file

    sd = {k: v.contiguous() for k, v in theirs.state_dict().items()}
    sd["wav2vec2.encoder.extra.weight"] = torch.zeros(3)
    save_file(sd, str(d / "model.safetensors"))
    with pytest.raises(HFConversionError, match=r"unknown key\(s\) \['wav2vec2.encoder.extra.weight'\]"):
        import_hf(d, tmp_path / "model.pt")


def test_vocab_errors(tmp_path):
    _, d = save_ctc_dir(tmp_path, "base_style")
    (d / "vocab.json").write_text(json.dumps({**{k: v for k, v in VOCAB.items() if v != 4}, "B": 11}))
    with pytest.raises(HFConversionError, match=r"missing \[4\]"):
        import_hf(d, tmp_path / "model.pt")
    (d / "vocab.json").write_text(json.dumps(VOCAB))
    cfg = json.loads((d / "config.json").read_text())
    cfg["pad_token_id"] = 1
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(HFConversionError, match="must be id 0"):
        import_hf(d, tmp_path / "model.pt")


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_from_hf_config_inverts_to_hf_config(variant):
    cfg = small_cfg(variant)
    assert from_hf_config(to_hf_config(cfg)) == cfg
    assert from_hf_config(to_hf_config(cfg).to_dict()) == cfg


def test_from_hf_config_rejects_unsupported():
    d = to_hf_config(small_cfg("base_style")).to_dict()
    with pytest.raises(ValueError, match="feat_extract_activation='relu'.*add_adapter=True"):
        from_hf_config({**d, "feat_extract_activation": "relu", "add_adapter": True})
    with pytest.raises(ValueError, match=r"unknown setting\(s\) \['frobnicate'\]"):
        from_hf_config({**d, "frobnicate": 1})
    from_hf_config({**d, "use_weighted_layer_sum": True})  # irrelevant head setting: ignored


def test_masking_off_masked_spec_embed(tmp_path):
    # HF has no masked_spec_embed when mask_time_prob == mask_feature_prob == 0; we always do.
    hc = to_hf_config(small_cfg("base_style").replace(mask_prob=0.0), vocab_size=len(VOCAB))
    hc.pad_token_id = 0
    theirs = transformers.Wav2Vec2ForCTC(hc).eval()
    assert "wav2vec2.masked_spec_embed" not in theirs.state_dict()
    theirs.save_pretrained(tmp_path / "hf")
    (tmp_path / "hf" / "vocab.json").write_text(json.dumps(VOCAB))
    summary = import_hf(tmp_path / "hf", tmp_path / "model.pt")
    assert summary["filled"] == ["wav2vec2.masked_spec_embed"]
    out = export_hf(tmp_path / "model.pt", tmp_path / "export")
    back = transformers.Wav2Vec2ForCTC.from_pretrained(out).eval()
    x = wave()
    with torch.no_grad():
        torch.testing.assert_close(back(x).logits, theirs(x).logits, atol=ATOL, rtol=0)


def test_unsupported_architecture(tmp_path):
    _, d = save_ctc_dir(tmp_path, "base_style")
    cfg = json.loads((d / "config.json").read_text())
    cfg["architectures"] = ["Wav2Vec2ForSequenceClassification"]
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(HFConversionError, match="unsupported architecture"):
        import_hf(d, tmp_path / "model.pt")
