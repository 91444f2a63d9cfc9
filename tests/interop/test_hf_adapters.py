"""MMS adapters across the Hugging Face boundary: our export loads in transformers with
`target_lang=` / `load_adapter()` and gives our logits; an MMS-style HF directory imports
with every adapter; `w2v transcribe --lang` picks the language's adapter and units."""

from __future__ import annotations

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("safetensors")

from tests.interop.test_hf_parity import ATOL, SAMPLES, randomize_, small_cfg
from w2v.decode.emissions import load_ctc_model
from w2v.interop.hf import export_hf, import_hf
from w2v.models import Wav2Vec2ForCTC
from w2v.models.adapters import adapter_weights
from w2v.train.checkpoint import load, save_atomic

UNITS = {"eng": ["<blank>", "|", "A", "B", "E", "T"], "spa": ["<blank>", "|", "A", "E", "L", "O", "S", "Ñ", "<unk>"]}


def adapter_checkpoint(path, default="spa"):
    """A fine-tuned model.pt with random base weights and two random language adapters."""
    cfg = small_cfg("lv60_style").replace(adapter_dim=4)
    torch.manual_seed(0)
    adapters = {}
    base = None
    for i, (lang, units) in enumerate(UNITS.items()):
        m = Wav2Vec2ForCTC(cfg, len(units))
        if base is None:
            randomize_(m, seed=1)
            base = m.state_dict()
        else:
            m.load_state_dict({k: v for k, v in base.items() if not k.startswith("lm_head.")}, strict=False)
        with torch.no_grad():  # a distinct adapter per language (perturb only those tensors)
            g = torch.Generator().manual_seed(10 + i)
            for name, p in m.named_parameters():
                if ".adapter_layer." in name or name.startswith("lm_head."):
                    p.add_(0.3 * torch.randn(p.shape, generator=g))
        adapters[lang] = {"weights": adapter_weights(m.state_dict()), "units": units, "sd": m.state_dict()}
    ck = {"model": adapters[default].pop("sd"), "model_config": cfg.to_dict(), "task": "finetune",
          "units": UNITS[default], "train_config": {"normalize_audio": True}, "num_updates": 0, "best": None,
          "init": None, "adapter_lang": default,
          "adapters": {k: {"weights": v["weights"], "units": v["units"]} for k, v in adapters.items()}}
    save_atomic(ck, path)
    return path


def wave():
    return torch.randn(2, SAMPLES, generator=torch.Generator().manual_seed(5))


def ours_logits(path, lang):
    m, meta = load_ctc_model(path, lang=lang)
    with torch.no_grad():
        return m(wave())[0], meta


def test_export_loads_in_transformers_with_target_lang_and_load_adapter(tmp_path):
    ck_path = adapter_checkpoint(tmp_path / "model.pt")
    out = export_hf(ck_path, tmp_path / "hf")
    assert sorted(p.name for p in out.glob("adapter.*")) == ["adapter.eng.safetensors", "adapter.spa.safetensors"]
    config = json.loads((out / "config.json").read_text())
    assert config["adapter_attn_dim"] == 4 and config["vocab_size"] == len(UNITS["spa"])
    vocab = json.loads((out / "vocab.json").read_text())
    assert set(vocab) == {"eng", "spa"} and vocab["spa"]["<pad>"] == 0 and vocab["spa"]["Ñ"] == 7

    for lang in ("eng", "spa"):
        ours, meta = ours_logits(ck_path, lang)
        assert meta["units"] == UNITS[lang]
        hf = transformers.Wav2Vec2ForCTC.from_pretrained(out, target_lang=lang, attn_implementation="eager").eval()
        with torch.no_grad():
            theirs = hf(wave()).logits
        assert theirs.shape == ours.shape == (2, 79, len(UNITS[lang]))
        torch.testing.assert_close(theirs, ours, atol=ATOL, rtol=0)
    # switching languages on a loaded model, as MMS users do
    hf.load_adapter("eng")
    with torch.no_grad():
        torch.testing.assert_close(hf(wave()).logits, ours_logits(ck_path, "eng")[0], atol=ATOL, rtol=0)
    # the languages differ (else the comparison above would not show a swapped adapter)
    assert not torch.allclose(ours_logits(ck_path, "eng")[0][..., :6], ours_logits(ck_path, "spa")[0][..., :6])

    tok = transformers.Wav2Vec2CTCTokenizer.from_pretrained(out)
    assert tok.target_lang == "spa" and tok.convert_ids_to_tokens(7) == "Ñ"
    tok.set_target_lang("eng")
    assert tok.convert_ids_to_tokens(5) == "T"


def test_import_of_an_mms_style_directory_brings_the_adapters(tmp_path):
    """HF-written directory (save_pretrained + adapter files) -> our model.pt -> same logits."""
    ck_path = adapter_checkpoint(tmp_path / "model.pt", default="eng")
    out = export_hf(ck_path, tmp_path / "hf")
    hf = transformers.Wav2Vec2ForCTC.from_pretrained(out, target_lang="eng")
    hf_dir = tmp_path / "hf_saved"
    hf.save_pretrained(hf_dir)  # transformers' own model.safetensors/config.json
    for f in list(out.glob("adapter.*")) + [out / "vocab.json", out / "tokenizer_config.json"]:
        (hf_dir / f.name).write_bytes(f.read_bytes())
    summary = import_hf(hf_dir, tmp_path / "imported.pt")
    assert summary["adapters"] == ["eng", "spa"] and summary["adapter_lang"] == "eng"
    imported = load(tmp_path / "imported.pt")
    assert imported["units"] == UNITS["eng"] and imported["model_config"]["adapter_dim"] == 4
    for lang in ("eng", "spa"):
        a, _ = ours_logits(ck_path, lang)
        b, meta = ours_logits(tmp_path / "imported.pt", lang)
        assert meta["units"] == UNITS[lang]
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_unknown_language_is_a_clear_error(tmp_path):
    ck_path = adapter_checkpoint(tmp_path / "model.pt")
    with pytest.raises(ValueError, match=r"no adapter for language 'fra'.*\['eng', 'spa'\]"):
        load_ctc_model(ck_path, lang="fra")


def test_post_ln_adapters_cannot_be_exported(tmp_path):
    from w2v.interop.hf import HFConversionError

    cfg = small_cfg("base_style").replace(adapter_dim=4)
    m = Wav2Vec2ForCTC(cfg, 6)
    save_atomic({"model": m.state_dict(), "model_config": cfg.to_dict(), "task": "finetune", "units": UNITS["eng"],
                 "adapter_lang": "eng", "adapters": {"eng": {"weights": adapter_weights(m.state_dict()),
                                                             "units": UNITS["eng"]}}}, tmp_path / "m.pt")
    with pytest.raises(HFConversionError, match="adapters only in pre-LN"):
        export_hf(tmp_path / "m.pt", tmp_path / "hf")
