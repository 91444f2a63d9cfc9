from pathlib import Path

import pytest

from w2v import config

ROOT = Path(__file__).resolve().parents[1]


def test_demo_config_is_valid():
    cfg = config.load(ROOT / "egs/demo/config.yaml")
    assert ("pretrained", "10m") in config.experiments(cfg) and ("scratch", "1h") in config.experiments(cfg)


def test_unknown_key_names_key_and_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("recipe: x\nmodel: tiny\ncorpus: {type: folder, path: /nope}\ncutz: {}\n")
    with pytest.raises(config.ConfigError) as e:
        config.load(p)
    assert "bad.yaml" in str(e.value) and "cutz" in str(e.value)


def test_wrong_type_names_the_nested_key(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("recipe: x\nmodel: tiny\ncorpus: {type: tarball, path: /nope}\n")
    with pytest.raises(config.ConfigError, match="corpus"):
        config.load(p)


def test_subset_seconds_and_finetune_merge():
    assert config.subset_seconds("10m") == 600 and config.subset_seconds("1h") == 3600
    cfg = {"finetune": {"settings": {"lr": 1.0, "model_overrides": {"mask_prob": 0.5}},
                        "subsets": {"10m": {"max_updates": 5}},
                        "scratch": {"lr": 2.0, "model_overrides": {"layerdrop": 0.0}}}}
    s = config.finetune_settings(cfg, "scratch", "10m")
    assert s["lr"] == 2.0 and s["max_updates"] == 5
    assert s["model_overrides"] == {"mask_prob": 0.5, "layerdrop": 0.0}
    assert config.finetune_settings(cfg, "pretrained", "10m")["lr"] == 1.0


def test_demo_gpu_overlay_is_valid():
    import yaml
    from snakemake.utils import update_config

    cfg = yaml.safe_load((ROOT / "egs/demo/config.yaml").read_text())
    update_config(cfg, yaml.safe_load((ROOT / "egs/demo/gpu.yaml").read_text()))
    config.validate(cfg, "demo + gpu overlay")
    assert cfg["recipe"] == "demo_gpu" and cfg["local"]["args"]["size"] == "gpu"


def test_pretrained_model_is_the_recipes_own_unless_init_from_is_set():
    cfg = {"recipe": "r", "finetune": {}}
    assert config.pretrained_model(cfg) == "exp/r/pretrain/model.pt"
    cfg["finetune"]["init_from"] = "exp/imported/xlsr.pt"
    assert config.pretrained_model(cfg) == "exp/imported/xlsr.pt"
