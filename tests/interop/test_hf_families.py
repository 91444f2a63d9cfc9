"""export-hf for the other families: HuBERT to transformers' Hubert classes (outputs equal),
wav2vec 1.0 / vq-wav2vec refused with a message that says why."""

from __future__ import annotations

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from tests.interop.test_hf_parity import ATOL, NO_DROPOUT, SAMPLES, randomize_  # noqa: E402
from w2v.interop.hf import HFConversionError, export_hf  # noqa: E402
from w2v.models.config import load_model_config  # noqa: E402
from w2v.models.families import build_ctc_model, build_pretraining_model  # noqa: E402
from w2v.train.checkpoint import save_atomic  # noqa: E402

UNITS = ["<blank>", "|", "A", "B", "E", "T"]


def hubert_cfg():
    conv = ((32, 10, 5),) + ((32, 3, 2),) * 4 + ((32, 2, 2),) * 2  # stride 320, as HuBERT needs
    return load_model_config("hubert_tiny", conv_feature_layers=conv, encoder_layers=2, encoder_embed_dim=48,
                             encoder_ffn_embed_dim=96,
                             encoder_attention_heads=4, conv_pos=16, conv_pos_groups=4, **NO_DROPOUT)


def checkpoint(path, model, cfg, task, **extra):
    save_atomic({"model": model.state_dict(), "model_config": cfg.to_dict(), "task": task, "num_updates": 0,
                 "best": None, "init": None, "train_config": {"normalize_audio": True}, **extra}, path)
    return path


def wave():  # 20 ms frames (HuBERT's stride): SAMPLES * 4 samples -> 19 frames
    return torch.randn(2, SAMPLES * 4, generator=torch.Generator().manual_seed(3))


def test_hubert_pretraining_checkpoint_exports_as_hubert_model(tmp_path):
    cfg = hubert_cfg()
    assert cfg.to_dict()["family"] == "hubert"
    ours = build_pretraining_model(cfg).eval()
    randomize_(ours)
    out = export_hf(checkpoint(tmp_path / "model.pt", ours, cfg, "pretrain"), tmp_path / "hf")
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "hubert" and config["architectures"] == ["HubertModel"]
    theirs = transformers.HubertModel.from_pretrained(out).eval()
    with torch.no_grad():
        expected = ours.wav2vec2(wave()).hidden
        got = theirs(wave()).last_hidden_state
    assert torch.allclose(got, expected, atol=ATOL), (got - expected).abs().max()


def test_fine_tuned_hubert_exports_as_hubert_for_ctc(tmp_path):
    cfg = hubert_cfg()
    ours = build_ctc_model(cfg, len(UNITS)).eval()
    randomize_(ours, seed=2)
    out = export_hf(checkpoint(tmp_path / "model.pt", ours, cfg, "finetune", units=UNITS), tmp_path / "hf")
    theirs = transformers.HubertForCTC.from_pretrained(out).eval()
    with torch.no_grad():
        expected, _ = ours(wave())
        got = theirs(wave()).logits
    assert torch.allclose(got, expected, atol=ATOL), (got - expected).abs().max()
    vocab = json.loads((out / "vocab.json").read_text())
    assert vocab["<pad>"] == 0 and len(vocab) == len(UNITS)


@pytest.mark.parametrize("preset", ["wav2vec1_tiny", "vq_wav2vec_tiny"])
def test_families_without_a_transformers_class_are_refused_clearly(tmp_path, preset):
    cfg = load_model_config(preset)
    path = checkpoint(tmp_path / "model.pt", build_pretraining_model(cfg), cfg, "pretrain")
    with pytest.raises(HFConversionError, match=r"model\.pt: transformers has no (wav2vec1|vq_wav2vec) model"):
        export_hf(path, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()
