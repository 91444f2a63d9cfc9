"""A two-language run through the CLI on synthetic data: XLSR-style multilingual pre-training,
then one MMS adapter per language on the frozen model, `transcribe --lang`, `export-hf`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from synth import write_two_language_cuts, write_units
from test_loop import SMALL
from w2v.cli import main
from w2v.models.adapters import is_adapter_key
from w2v.train import checkpoint as ck

REPO = Path(__file__).resolve().parents[1]


def test_two_language_pretrain_then_adapters(tmp_path, capsys):
    cuts = write_two_language_cuts(tmp_path / "c", n={"en": 6, "es": 4}, min_s=1.5, max_s=2.0)
    units = write_units(tmp_path / "units.txt")
    model_yaml = tmp_path / "model.yaml"
    base = yaml.safe_load((REPO / "conf/model/tiny.yaml").read_text())
    # pre-LN blocks, as XLS-R/MMS (and the only place transformers puts adapters)
    model_yaml.write_text(yaml.safe_dump({**base, **SMALL, "layer_norm_first": True, "extractor_mode": "layer_norm",
                                          "conv_bias": True}))
    # one batch per language and no masking: the same batch every update, so its loss must fall
    ft = dict(max_updates=6, lr=5e-3, schedule="tri_stage", max_duration=20.0, num_buckets=1, save_every=3, log_every=1,
              model_overrides={"mask_prob": 0.0, "dropout": 0.0})
    recipe = {
        "recipe": "two", "model": str(model_yaml), "corpus": {"type": "folder", "path": str(tmp_path)},
        "pretrain": dict(max_updates=6, lr=5e-4, warmup=2, max_duration=4.0, crop_seconds=1.0, save_every=3,
                         log_every=1, language_alpha=0.5),
        "finetune": {"subsets": {lang: {**ft, "adapter": {"lang": lang, "dim": 8}} for lang in ("en", "es")}},
    }
    cfg = tmp_path / "recipe.yaml"
    cfg.write_text(yaml.safe_dump(recipe))
    exp = tmp_path / "exp"

    main(["pretrain", "--config", str(cfg), "--cuts", str(cuts), "--out", str(exp / "pre"), "--threads", "1"])
    sampling = json.loads((exp / "pre" / "language_sampling.json").read_text())
    assert set(sampling["languages"]) == {"en", "es"}
    assert sum(v["hours_sampled"] for v in sampling["languages"].values()) > 0

    def finetune(lang, init):
        main(["finetune", "--config", str(cfg), "--cuts", str(cuts), "--out", str(exp / lang), "--subset", lang,
              "--units", str(units), "--init", str(init), "--threads", "1"])
        return ck.load(exp / lang / "model.pt")

    en = finetune("en", exp / "pre" / "model.pt")
    es = finetune("es", exp / "en" / "model.pt")  # adds es on top of the en model, keeps en
    assert en["adapter_lang"] == "en" and sorted(es["adapters"]) == ["en", "es"]
    pre = ck.load(exp / "pre" / "model.pt")["model"]
    for k, v in es["model"].items():  # the base never moved: it is the pre-trained encoder
        if not is_adapter_key(k):
            assert torch.equal(v, pre[k]), k
    for k, v in es["adapters"]["en"]["weights"].items():
        assert torch.equal(v, en["adapters"]["en"]["weights"][k]), k
    moved = [k for k, v in es["adapters"]["es"]["weights"].items() if not torch.equal(v, en["model"][k])]
    assert moved
    losses = [json.loads(x)["loss"] for x in (exp / "es" / "train_log.jsonl").read_text().splitlines()]
    assert losses[-1] < losses[0]

    wav = sorted((tmp_path / "c" / "es").glob("*.wav"))[0]
    capsys.readouterr()
    hyps = {}
    for lang in ("en", "es"):
        main(["transcribe", str(exp / "es" / "model.pt"), str(wav), "--lang", lang, "--threads", "1"])
        line = capsys.readouterr().out.strip().splitlines()[-1]
        assert line.startswith(str(wav) + "\t")
        hyps[lang] = line
    with pytest.raises(SystemExit, match="no adapter for language 'fr'"):
        main(["transcribe", str(exp / "es" / "model.pt"), str(wav), "--lang", "fr"])

    main(["export-hf", str(exp / "es" / "model.pt"), str(exp / "hf")])
    assert {p.name for p in (exp / "hf").glob("adapter.*")} == {"adapter.en.safetensors", "adapter.es.safetensors"}
