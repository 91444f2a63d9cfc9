"""FSDP2 sharding (gloo on CPU): it trains like DDP, its checkpoints resume under DDP, a killed run resumes exactly."""

from __future__ import annotations

import json
import re

import pytest
import torch

from reliability.helpers import ddp_worker, run, tiny_data, tiny_recipe, w2v_cmd
from synth import write_tiny_cuts

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed missing")


def _model(path):
    return torch.load(path, weights_only=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same 2-process pre-training (4 updates, 7 cuts) under ddp and under fsdp."""
    tmp = tmp_path_factory.mktemp("fsdp")
    cuts = write_tiny_cuts(tmp / "a", n=7)
    for strategy in ("ddp", "fsdp"):
        r = ddp_worker(cuts, tmp / strategy, tmp / f"rec_{strategy}", strategy=strategy)
        assert r.returncode == 0, r.stderr[-4000:]
    return cuts, tmp


def test_fsdp_trains_like_ddp_and_writes_the_same_format(runs):
    _, tmp = runs
    ddp, fsdp = _model(tmp / "ddp/model.pt"), _model(tmp / "fsdp/model.pt")
    assert fsdp["model"].keys() == ddp["model"].keys()
    assert fsdp["train_config"]["strategy"] == "fsdp"
    for k, v in ddp["model"].items():
        assert fsdp["model"][k].dtype == v.dtype and fsdp["model"][k].shape == v.shape, k
        torch.testing.assert_close(fsdp["model"][k], v, rtol=1e-4, atol=1e-5, msg=k)
    init = _model(tmp / "ddp/checkpoints/checkpoint_00000002.pt")["model"]
    moved = sum(not torch.equal(init[k], v) for k, v in ddp["model"].items())
    assert moved > len(init) // 2  # the comparison is between trained weights, not two copies of the start
    a, b = (_model(tmp / f"{s}/checkpoints/checkpoint_00000004.pt")["optimizer"] for s in ("ddp", "fsdp"))
    assert a["param_groups"][0]["params"] == b["param_groups"][0]["params"]
    assert a["state"].keys() == b["state"].keys()
    for i, s in a["state"].items():
        torch.testing.assert_close(b["state"][i]["exp_avg"], s["exp_avg"], rtol=1e-3, atol=1e-6)


def test_fsdp_checkpoint_resumes_under_ddp(runs, tmp_path):
    cuts, tmp = runs
    out = tmp_path / "out"
    (out / "checkpoints").mkdir(parents=True)
    src = tmp / "fsdp/checkpoints/checkpoint_00000002.pt"
    (out / "checkpoints" / src.name).write_bytes(src.read_bytes())
    r = ddp_worker(cuts, out, tmp_path / "rec", strategy="ddp")
    assert r.returncode == 0, r.stderr[-4000:]
    assert "resumed from" in r.stderr
    ref, got = _model(tmp / "fsdp/model.pt")["model"], _model(out / "model.pt")["model"]
    for k, v in ref.items():
        torch.testing.assert_close(got[k], v, rtol=1e-4, atol=1e-5, msg=k)


def test_killed_fsdp_run_resumes_bit_identical(runs, tmp_path):
    cuts, tmp = runs
    out = tmp_path / "out"
    r = ddp_worker(cuts, out, tmp_path / "rec", "2", strategy="fsdp")  # rank 0 SIGKILLed after checkpoint 2
    assert r.returncode != 0 and not (out / "model.pt").exists()
    r = ddp_worker(cuts, out, tmp_path / "rec", strategy="fsdp")
    assert r.returncode == 0, r.stderr[-4000:]
    assert "resumed from" in r.stderr
    ref, got = _model(tmp / "fsdp/model.pt")["model"], _model(out / "model.pt")["model"]
    assert all(torch.equal(ref[k], got[k]) for k in ref)


def test_fsdp_with_layerdrop_and_activation_checkpointing(tmp_path):
    """Ranks draw their own dropout but must skip the same blocks, or their all-gathers mismatch."""
    cuts = write_tiny_cuts(tmp_path / "a", n=4)
    r = ddp_worker(cuts, tmp_path / "out", tmp_path / "rec", strategy="fsdp", activation_checkpointing=True,
                dist_timeout=60.0, model_overrides={"encoder_layers": 4, "layerdrop": 0.5})
    assert r.returncode == 0, r.stderr[-4000:]
    got = _model(tmp_path / "out/model.pt")
    assert got["model_config"]["encoder_layers"] == 4
    assert all(torch.isfinite(v.float()).all() for v in got["model"].values())


def test_fsdp_finetuning_with_frozen_parts_and_dev_set_matches_ddp(tmp_path):
    """`w2v finetune` with gpus 2: a frozen conv encoder, frozen-transformer updates and a dev
    evaluation in which every rank takes part (sharded weights) give DDP's result."""
    cuts, units = tiny_data(tmp_path, n=6)
    settings = dict(max_updates=4, lr=5e-4, warmup=1, max_duration=3.0, save_every=2, log_every=1, num_buckets=2,
                    schedule="tri_stage", freeze_transformer_updates=2, freeze_feature_encoder=True,
                    model_overrides={"mask_prob": 0.3})
    models = {}
    for strategy in ("ddp", "fsdp"):
        d = tmp_path / strategy
        d.mkdir()
        recipe = tiny_recipe(d, finetune={**settings, "strategy": strategy}, gpus=2)
        r = run(w2v_cmd("finetune", recipe, cuts, d / "exp", units=units), timeout=180)
        assert r.returncode == 0, r.stderr[-4000:]
        rows = [json.loads(x) for x in (d / "exp/train_log.jsonl").read_text().splitlines()]
        assert [x["update"] for x in rows if "dev_wer" in x] == [2, 4]
        models[strategy] = _model(d / "exp/model.pt")
    assert models["fsdp"]["best"] == models["ddp"]["best"]
    for k, v in models["ddp"]["model"].items():
        torch.testing.assert_close(models["fsdp"]["model"][k], v, rtol=1e-4, atol=1e-5, msg=k)


def test_unknown_strategy_is_an_error_naming_it():
    from w2v.train.config import TrainConfig

    with pytest.raises(ValueError, match="recipe.yaml: strategy must be ddp or fsdp, got 'zero3'"):
        TrainConfig.from_dict({"strategy": "zero3"}, "recipe.yaml")
    assert TrainConfig.from_dict({"strategy": "fsdp", "activation_checkpointing": True}).strategy == "fsdp"


@pytest.mark.parametrize("settings,message", [
    ({"allreduce_dtype": "fp16"}, "allreduce_dtype must be fp32 or bf16, got 'fp16'"),
    ({"allreduce_dtype": "bf16", "strategy": "fsdp"}, "allreduce_dtype is a ddp setting; fsdp reduces gradients in fp32"),
    ({"ddp_bucket_mb": 0}, "ddp_bucket_mb must be a number of MB > 0, got 0"),
    ({"ddp_bucket_mb": "big"}, "ddp_bucket_mb must be a number of MB > 0, got 'big'"),
    ({"ddp_bucket_view": "yes"}, "ddp_bucket_view is true or false, got 'yes'"),
    ({"ddp_reducer": "ring"}, "ddp_reducer must be one of buckets, flat, got 'ring'"),
    ({"ddp_reducer": "flat", "strategy": "fsdp"}, "ddp_reducer is a ddp setting; fsdp reduce-scatters its own way"),
    ({"ddp_reducer": "buckets", "strategy": "fsdp"}, "ddp_reducer is a ddp setting; fsdp reduce-scatters its own way"),
    ({"update_freq": 2.5}, "update_freq is a number of batches per update, 1 or more, got 2.5"),
    ({"gc_interval": -1}, "gc_interval is a number of updates, 0 (Python's automatic garbage collection) or more, "
                          "got -1"),
])
def test_bad_ddp_settings_are_errors_naming_them(settings, message):
    from w2v.train.config import TrainConfig

    with pytest.raises(ValueError, match=f"recipe.yaml: {re.escape(message)}"):
        TrainConfig.from_dict(settings, "recipe.yaml")
    assert TrainConfig.from_dict({"allreduce_dtype": "bf16", "ddp_bucket_mb": 100}).ddp_bucket_mb == 100


def test_update_freq_reduces_once_per_update_under_ddp_and_fsdp_alike(tmp_path):
    """`update_freq: 2`: the first batch of each update keeps its gradients local (DDP's no_sync,
    FSDP's gradient sync off), the second reduces the sum; torch DDP's ranks (`ddp_reducer:
    buckets`) stay equal, with gradients in the buckets (`ddp_bucket_view`, its default), and FSDP
    trains the same model. (The flat reducer's one reduction per update: test_ddp.py.)"""
    cuts = write_tiny_cuts(tmp_path / "a", n=7)
    for strategy, settings in (("ddp", {"ddp_reducer": "buckets"}), ("fsdp", {})):
        r = ddp_worker(cuts, tmp_path / strategy, tmp_path / f"rec_{strategy}", strategy=strategy, update_freq=2,
                       **settings)
        assert r.returncode == 0, r.stderr[-4000:]
    seen = [json.loads((tmp_path / f"rec_ddp/rank_{k}.json").read_text()) for k in (0, 1)]
    for rank in seen:
        assert rank["no_sync"] == 4 and rank["ddp_bucket_view"] is True  # 4 updates of 2 batches
    w0, w1 = (torch.load(tmp_path / f"rec_ddp/weights_{k}.pt", weights_only=True) for k in (0, 1))
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    ddp, fsdp = _model(tmp_path / "ddp/model.pt"), _model(tmp_path / "fsdp/model.pt")
    assert ddp["train_config"]["update_freq"] == 2
    for k, v in ddp["model"].items():
        torch.testing.assert_close(fsdp["model"][k], v, rtol=1e-4, atol=1e-5, msg=k)
