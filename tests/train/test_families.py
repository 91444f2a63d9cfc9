"""Every family through the one loop and the `w2v` CLI: pre-train, fine-tune, decode-ready model,
exact resume of a killed run, unit export and HuBERT targets."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from synth import run_killed_after_checkpoint, write_tiny_cuts, write_units
from w2v.cli import main
from w2v.decode.emissions import compute_emissions, load_ctc_model
from w2v.models import load_model_config
from w2v.train import checkpoint as ck
from w2v.train.config import TrainConfig
from w2v.train.steps import run_pretraining
from w2v.train.targets import read_units

W2V1_CONV = [[16, 10, 5], [16, 8, 4], [16, 4, 2], [16, 4, 2], [16, 4, 2]]
MODELS = {
    "wav2vec1": dict(family="wav2vec1", conv_feature_layers=W2V1_CONV, conv_aggregator_layers=[[16, 3, 1]] * 2,
                     prediction_steps=3, num_negatives=4, downstream_layers=1, downstream_dim=8),
    "vq_wav2vec": dict(family="vq_wav2vec", conv_feature_layers=W2V1_CONV, conv_aggregator_layers=[[16, 3, 1]] * 2,
                       prediction_steps=3, num_negatives=4, vq_vars=8, vq_temp=[2.0, 0.5, 0.9], bert_layers=1,
                       bert_embed_dim=16, bert_ffn_dim=32, bert_heads=2, bert_conv_pos=4, bert_conv_pos_groups=2,
                       bert_mask_prob=0.2, bert_mask_length=2, downstream_layers=1, downstream_dim=8),
    "vq_wav2vec_kmeans": dict(family="vq_wav2vec", vq_type="kmeans", conv_feature_layers=W2V1_CONV,
                              conv_aggregator_layers=[[16, 3, 1]], prediction_steps=2, num_negatives=3, vq_vars=8,
                              bert_layers=0, downstream_layers=1, downstream_dim=8),
    "hubert": dict(family="hubert", conv_feature_layers=[[16, 10, 5]] + [[16, 3, 2]] * 4 + [[16, 2, 2]] * 2,
                   encoder_layers=2, encoder_embed_dim=16, encoder_ffn_embed_dim=32, encoder_attention_heads=2,
                   conv_pos=4, conv_pos_groups=2, final_dim=8, mask_length=2, mask_prob=0.5,
                   kmeans_clusters=[4, 6], label_layer=1, layerdrop=0.0),
}
PRETRAIN = dict(max_updates=4, lr=1e-3, warmup=1, max_duration=4.0, crop_seconds=1.0, save_every=2, log_every=1,
                keep_last=5)
FINETUNE = dict(max_updates=2, lr=1e-3, schedule="tri_stage", max_duration=6.0, save_every=2,
                model_overrides={"mask_prob": 0.0, "layerdrop": 0.0})


def _model_yaml(tmp_path, family: str):
    path = tmp_path / f"{family}.yaml"
    path.write_text(yaml.safe_dump(MODELS[family]))
    return path


@pytest.mark.parametrize("family", list(MODELS))
def test_pretrain_and_finetune_through_the_cli(tmp_path, family):
    cuts = write_tiny_cuts(tmp_path / "a", n=6, min_s=1.5, max_s=2.0)
    units = write_units(tmp_path / "units.txt")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"recipe": "t", "model": str(_model_yaml(tmp_path, family)),
                                      "corpus": {"type": "folder", "path": str(tmp_path)}, "pretrain": PRETRAIN,
                                      "finetune": {"settings": FINETUNE, "subsets": {"1h": {}}}}))
    pre = tmp_path / "exp" / "pretrain"
    main(["pretrain", "--config", str(recipe), "--cuts", str(cuts), "--out", str(pre), "--threads", "1"])
    m = ck.load(pre / "model.pt")
    assert m["task"] == "pretrain" and m["num_updates"] == 4
    assert m["model_config"]["family"] == MODELS[family]["family"]
    rows = [json.loads(x) for x in (pre / "train_log.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
    if family == "vq_wav2vec":  # quantizer stage, then BERT over its units
        assert (pre / "quantizer" / "model.pt").exists() and m["model_config"]["with_bert"]
        assert "num_masked" in rows[0]
        first = ck.load(pre / "quantizer" / "model.pt")["model"]
        assert all(torch.equal(first[k], m["model"]["vq." + k]) for k in first)  # the quantizer stayed frozen
    if family == "hubert":  # MFCC targets, iteration 1, layer targets, iteration 2
        assert (pre / "iter1" / "model.pt").exists()
        assert {"ce_masked", "acc_masked"} <= set(rows[0])
        lab1, lab2 = read_units(pre / "labels_iter1.jsonl"), read_units(pre / "labels_iter2.jsonl")
        assert max(max(v) for v in lab1.values()) < 4 and max(max(v) for v in lab2.values()) < 6
        assert m["model"]["label_embs"].shape == (6, 8)

    ft = tmp_path / "exp" / "ft"
    main(["finetune", "--config", str(recipe), "--subset", "1h", "--cuts", str(cuts), "--dev", str(cuts),
          "--units", str(units), "--out", str(ft), "--init", str(pre / "model.pt"), "--threads", "1"])
    model, meta = load_ctc_model(ft / "model.pt")
    assert meta["init"] == str(pre / "model.pt") and meta["model_config"]["family"] == MODELS[family]["family"]
    em = compute_emissions(model, [torch.randn(16000).numpy()], normalize=True)
    assert em[0].shape[1] == len(meta["units"])
    assert torch.allclose(em[0].exp().sum(-1), torch.ones(em[0].shape[0]), atol=1e-4)


@pytest.mark.parametrize("family", ["wav2vec1", "vq_wav2vec", "hubert"])
def test_killed_family_run_resumes_bit_identical(tmp_path, monkeypatch, family):
    """Killed at update 2 of its last stage; the rerun skips finished stages and ends where an
    uninterrupted run ends, weight for weight."""
    cuts = write_tiny_cuts(tmp_path / "a", n=8)
    cfg = load_model_config(_model_yaml(tmp_path, family))
    tcfg = TrainConfig(task="pretrain", **PRETRAIN)
    ref = ck.load(run_pretraining(tcfg, cuts, tmp_path / "ref", cfg, device="cpu"))

    run_killed_after_checkpoint(monkeypatch, 2, lambda: run_pretraining(tcfg, cuts, tmp_path / "run", cfg, device="cpu"),
                               where=tmp_path / "run" / "checkpoints")
    resumed = ck.load(run_pretraining(tcfg, cuts, tmp_path / "run", cfg, device="cpu"))
    for k, v in ref["model"].items():
        assert torch.equal(v, resumed["model"][k]), k


def test_export_units_and_hubert_labels_cli(tmp_path, capsys):
    from lhotse import load_manifest

    cuts = write_tiny_cuts(tmp_path / "a", n=4)
    cfg = load_model_config(_model_yaml(tmp_path, "vq_wav2vec"))
    tcfg = TrainConfig(task="pretrain", **{**PRETRAIN, "max_updates": 2})
    model = run_pretraining(tcfg, cuts, tmp_path / "vq", cfg.replace(bert_layers=0), device="cpu")
    out = tmp_path / "units.jsonl"
    main(["export-units", "--model", str(model), "--cuts", str(cuts), "--out", str(out)])
    units = read_units(out)
    ids = [c.id for c in load_manifest(cuts)]
    assert list(units) == ids
    durations = {c.id: c.num_samples for c in load_manifest(cuts)}
    for cid, u in units.items():  # 10 ms frames; a token indexes a pair of codes < 8 * 8
        assert len(u) == (durations[cid] - 465) // 160 + 1 and max(u) < 64
    text = tmp_path / "units.txt"
    main(["export-units", "--model", str(model), "--cuts", str(cuts), "--out", str(text)])
    assert read_units(text) == units

    hub = _model_yaml(tmp_path, "hubert")
    labels = tmp_path / "labels.jsonl"
    main(["hubert-labels", "--model-config", str(hub), "--cuts", str(cuts), "--out", str(labels), "--clusters", "3"])
    lab = read_units(labels)
    assert list(lab) == ids and {x for v in lab.values() for x in v} == {0, 1, 2}
    for cid, v in lab.items():
        assert len(v) == (durations[cid] - 400) // 320 + 1
    with pytest.raises(SystemExit, match="not a HuBERT preset"):
        main(["hubert-labels", "--model-config", str(_model_yaml(tmp_path, "wav2vec1")), "--cuts", str(cuts),
              "--out", str(labels)])


def test_hubert_labels_from_a_model_layer(tmp_path):
    cuts = write_tiny_cuts(tmp_path / "a", n=4)
    cfg = load_model_config(_model_yaml(tmp_path, "hubert")).replace(kmeans_clusters=[3])
    model = run_pretraining(TrainConfig(task="pretrain", **{**PRETRAIN, "max_updates": 1}), cuts, tmp_path / "h",
                            cfg, device="cpu")
    out = tmp_path / "l2.txt"
    main(["hubert-labels", "--model-config", str(_model_yaml(tmp_path, "hubert")), "--model", str(model),
          "--layer", "2", "--clusters", "5", "--cuts", str(cuts), "--out", str(out)])
    lab = read_units(out)
    assert len(lab) == 4 and max(x for v in lab.values() for x in v) < 5
    assert len({x for v in lab.values() for x in v}) > 1


def test_demo_family_overlays_select_their_model():
    from pathlib import Path

    from w2v.config import pretrained_model, validate

    root = Path(__file__).resolve().parents[2]
    base = yaml.safe_load((root / "egs/demo/config.yaml").read_text())
    overlays = sorted((root / "egs/demo/families").glob("*.yaml"))
    assert {p.stem for p in overlays} == {"wav2vec1", "vq_wav2vec", "vq_wav2vec_kmeans", "hubert"}
    for path in overlays:
        overlay = yaml.safe_load(path.read_text())
        cfg = validate({**base, **overlay, "finetune": {**base["finetune"], **overlay.get("finetune", {})}}, str(path))
        family = load_model_config(cfg["model"]).family
        assert path.stem.startswith(family) and cfg["exp"] == f"demo_{path.stem}"
        assert pretrained_model(cfg) == f"exp/demo_{path.stem}/pretrain/model.pt"


def test_missing_labels_name_the_file_and_cut(tmp_path):
    from lhotse import load_manifest

    from w2v.train.loop import train
    from w2v.train.targets import write_units

    cuts = write_tiny_cuts(tmp_path / "a", n=3)
    ids = [c.id for c in load_manifest(cuts)]
    labels = tmp_path / "labels.jsonl"
    write_units(labels, {ids[0]: [1, 2], ids[1]: [0]})
    cfg = load_model_config(_model_yaml(tmp_path, "hubert"))
    with pytest.raises(ValueError, match=rf"labels.jsonl: no labels for 1 cut\(s\), e.g. {ids[2]}"):
        train(TrainConfig(task="pretrain", **PRETRAIN), cuts, tmp_path / "x", cfg, labels_path=labels)
