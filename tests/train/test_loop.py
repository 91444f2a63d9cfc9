"""The training loop: it learns, it writes a usable model, and a killed run resumes exactly."""

from __future__ import annotations

import json

import torch

from synth import run_killed_after_checkpoint, write_tiny_cuts, write_units
from w2v.models import load_model_config
from w2v.train import checkpoint as ck
from w2v.train.config import TrainConfig
from w2v.train.loop import conv_output_frames, ctc_min_frames, train

SMALL = dict(conv_feature_layers=[[32, 10, 5], [32, 3, 2], [32, 3, 2], [32, 3, 2], [32, 3, 2], [32, 2, 2], [32, 2, 2]],
             encoder_layers=1, encoder_embed_dim=32, encoder_ffn_embed_dim=64, encoder_attention_heads=2,
             conv_pos=8, conv_pos_groups=4, final_dim=16, latent_vars=8, num_negatives=4, mask_length=3)


def _cfg():
    return load_model_config("tiny", **SMALL)


def _pretrain_cfg(**kw):
    d = dict(task="pretrain", max_updates=6, lr=5e-4, warmup=2, max_duration=4.0, crop_seconds=1.0,
             save_every=2, log_every=1, keep_last=5)
    d.update(kw)
    return TrainConfig(**d)


def test_conv_frames_and_ctc_min_frames():
    cfg = load_model_config("base")
    assert conv_output_frames(cfg, 16000) == 49
    assert conv_output_frames(cfg, 399) == 0 and conv_output_frames(cfg, 400) == 1
    assert ctc_min_frames([1, 1, 2]) == 4 and ctc_min_frames([1, 2, 3]) == 3


def test_pretraining_writes_model_and_log(tmp_path):
    cuts = write_tiny_cuts(tmp_path / "a")
    out = train(_pretrain_cfg(), cuts, tmp_path / "exp", _cfg())
    m = ck.load(out)
    assert m["task"] == "pretrain" and m["num_updates"] == 6
    rows = [json.loads(x) for x in (tmp_path / "exp" / "train_log.jsonl").read_text().splitlines()]
    assert [r["update"] for r in rows] == [1, 2, 3, 4, 5, 6]
    for key in ("loss", "accuracy", "code_ppl", "prob_ppl", "temp", "lr", "gnorm", "audio_s_per_s"):
        assert key in rows[0], key
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
    assert m["train_config"]["feature_penalty_weight"] == 10.0  # unset: the group-norm encoder's, written down


def test_cuda_graphs_setting_marks_each_update(tmp_path, monkeypatch):
    """`cuda_graphs: true` reaches the compile (one process) and marks every update's start for
    the replays; it needs `compile` (a clear error naming the settings)."""
    import pytest

    from w2v.train import loop, sharding

    compiled, marks = [], []
    monkeypatch.setattr(sharding, "compile_for", lambda model, strategy, info, **kw: compiled.append(kw))
    monkeypatch.setattr(loop, "step_begins", lambda: marks.append(1))
    cuts = write_tiny_cuts(tmp_path / "a")
    train(_pretrain_cfg(max_updates=3, compile=True, cuda_graphs=True), cuts, tmp_path / "exp", _cfg())
    assert compiled == [{"cuda_graphs": True}] and len(marks) == 3
    with pytest.raises(ValueError, match="recipe.yaml: cuda_graphs .* needs compile: true"):
        TrainConfig.from_dict({"cuda_graphs": True}, "recipe.yaml")
    with pytest.raises(ValueError, match="recipe.yaml: cuda_graphs is a pre-training setting"):
        TrainConfig.from_dict({"cuda_graphs": True, "compile": True, "task": "finetune"}, "recipe.yaml")


def test_matmul_conv_setting_trains_the_same_model(tmp_path):
    cuts = write_tiny_cuts(tmp_path / "a")
    runs = {}
    for matmul in (False, True):
        out = train(_pretrain_cfg(max_updates=3, matmul_conv=matmul), cuts, tmp_path / f"exp{matmul}", _cfg())
        runs[matmul] = ck.load(out)["model"]
    for key, value in runs[False].items():
        assert torch.allclose(value.float(), runs[True][key].float(), atol=1e-4), key


def test_loader_processes_train_the_same_model_as_threads(tmp_path):
    cuts = write_tiny_cuts(tmp_path / "a")
    runs = {}
    for kind in ("threads", "processes"):
        out = train(_pretrain_cfg(max_updates=3, loader=kind, loader_workers=2), cuts, tmp_path / kind, _cfg())
        runs[kind] = ck.load(out)["model"]
    for key, value in runs["threads"].items():
        assert torch.equal(value, runs["processes"][key]), key
    rows = [json.loads(x) for x in (tmp_path / "processes" / "train_log.jsonl").read_text().splitlines()]
    assert all(0 <= r["data_share"] <= 1 for r in rows)


def test_killed_run_resumes_bit_identical(tmp_path, monkeypatch):
    cuts = write_tiny_cuts(tmp_path / "a", n=10)
    ref = ck.load(train(_pretrain_cfg(), cuts, tmp_path / "ref", _cfg()))

    run_killed_after_checkpoint(monkeypatch, 4, lambda: train(_pretrain_cfg(), cuts, tmp_path / "run", _cfg()))
    assert not (tmp_path / "run" / "model.pt").exists()
    resumed = ck.load(train(_pretrain_cfg(), cuts, tmp_path / "run", _cfg()))
    for k, v in ref["model"].items():
        assert torch.equal(v, resumed["model"][k]), k
    log_updates = [json.loads(x)["update"] for x in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert log_updates == [1, 2, 3, 4, 5, 6]


def test_finetune_from_pretrained_and_scratch(tmp_path):
    cuts = write_tiny_cuts(tmp_path / "a", n=6, min_s=1.5, max_s=2.0)
    units = write_units(tmp_path / "units.txt")
    pre = train(_pretrain_cfg(max_updates=2), cuts, tmp_path / "pre", _cfg())
    ft = dict(task="finetune", max_updates=4, lr=1e-3, schedule="tri_stage", max_duration=6.0, save_every=2,
              freeze_feature_encoder=True, freeze_transformer_updates=2)
    out = train(TrainConfig(**ft), cuts, tmp_path / "ft", _cfg(), units_path=units, init=pre, dev_cuts_path=cuts)
    m = ck.load(out)
    assert m["task"] == "finetune" and m["units"][0] == "<blank>" and m["best"] is not None
    pre_w = ck.load(pre)["model"]
    # the frozen feature encoder kept its pre-trained weights; the transformer moved
    for k, v in m["model"].items():
        if k.startswith("wav2vec2.feature_extractor."):
            assert torch.equal(v, pre_w[k]), k
    moved = [k for k, v in m["model"].items() if k.startswith("wav2vec2.encoder.") and not torch.equal(v, pre_w[k])]
    assert moved
    out2 = train(TrainConfig(**{**ft, "freeze_feature_encoder": False, "freeze_transformer_updates": 0}),
                 cuts, tmp_path / "scratch", _cfg(), units_path=units, dev_cuts_path=cuts)
    assert ck.load(out2)["init"] is None


class _Store:
    """`AudioStore`'s interface (``cuts``, ``store[i]``) over in-memory audio."""

    def __init__(self, audio):
        self.cuts = self.audio = audio

    def __getitem__(self, i):
        return self.audio[i]


def test_dev_evaluation_gives_each_utterance_its_emissions_alone(tmp_path, monkeypatch):
    """wav2vec 1.0 normalises over time in every conv layer: batched with longer, padded
    utterances, a dev utterance's emissions (and so the dev rates) would depend on its batch."""
    import numpy as np

    import w2v.decode.ctc
    from test_families import MODELS
    from w2v.decode.ctc import load_units
    from w2v.decode.emissions import compute_emissions
    from w2v.models.families import build_ctc_model, config_from_dict
    from w2v.train.loop import evaluate_ctc

    units = load_units(write_units(tmp_path / "units.txt"))
    model = build_ctc_model(config_from_dict(MODELS["wav2vec1"]), len(units))
    rng = np.random.default_rng(0)
    audio = [rng.standard_normal(n).astype(np.float32) for n in (16000, 6000, 11000)]
    seen = {}
    greedy = w2v.decode.ctc.greedy_decode

    def spy(emissions, lengths, units):
        seen["emissions"], seen["lengths"] = emissions, lengths
        return greedy(emissions, lengths, units)

    monkeypatch.setattr(w2v.decode.ctc, "greedy_decode", spy)
    tcfg = TrainConfig(task="finetune", max_duration=60.0)
    metrics = evaluate_ctc(model, _Store(audio), ["GOD", "CREATED", "GOD CREATED"], units, tcfg, torch.device("cpu"))
    assert set(metrics) == {"cer", "wer"} and model.training
    model.eval()
    for i, a in enumerate(audio):
        alone = compute_emissions(model, [a], tcfg.normalize_audio)[0]
        assert int(seen["lengths"][i]) == alone.shape[0] > 0
        torch.testing.assert_close(seen["emissions"][i, : alone.shape[0]], alone, atol=1e-5, rtol=0)


def test_sigkilled_training_process_resumes_bit_identical(tmp_path):
    """The real thing: `w2v pretrain` killed with SIGKILL mid-run, then started again."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import yaml

    cuts = write_tiny_cuts(tmp_path / "a", n=10)
    model_yaml = tmp_path / "model.yaml"
    base = yaml.safe_load((__import__("pathlib").Path(__file__).parents[2] / "conf/model/tiny.yaml").read_text())
    model_yaml.write_text(yaml.safe_dump({**base, **SMALL}))
    settings = dict(max_updates=40, lr=5e-4, warmup=2, max_duration=4.0, crop_seconds=1.0, save_every=2,
                    log_every=1, keep_last=3)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"recipe": "t", "model": str(model_yaml),
                                      "corpus": {"type": "folder", "path": str(tmp_path)}, "pretrain": settings}))

    def cmd(out):
        return [sys.executable, "-m", "w2v.cli", "pretrain", "--config", str(recipe), "--cuts", str(cuts),
                "--out", str(out), "--threads", "1"]

    env = dict(os.environ, PYTHONHASHSEED="0")
    ref = tmp_path / "ref"
    subprocess.run(cmd(ref), check=True, env=env, capture_output=True)
    run = tmp_path / "run"
    proc = subprocess.Popen(cmd(run), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((run / "checkpoints").glob("checkpoint_0*.pt"))) < 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "model.pt").exists(), "the run finished before it could be killed"
    subprocess.run(cmd(run), check=True, env=env, capture_output=True)
    a, b = ck.load(ref / "model.pt")["model"], ck.load(run / "model.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_diversity_gate_holds_the_diversity_loss_until_the_accuracy_reaches_it(tmp_path):
    cuts = write_tiny_cuts(tmp_path / "a")

    def run(gate: float, name: str) -> tuple[list[dict], dict]:
        train(_pretrain_cfg(diversity_gate=gate, log_every=2), cuts, tmp_path / name, _cfg())
        rows = [json.loads(x) for x in (tmp_path / name / "train_log.jsonl").read_text().splitlines()]
        return rows, ck.load(ck.CheckpointDir(tmp_path / name / "checkpoints").latest())

    rows, state = run(0.999, "closed")  # a tiny model's accuracy never gets there
    assert [r["update"] for r in rows] == [2, 4, 6] and all(r["weighted_diversity"] == 0 for r in rows)
    assert state["diversity_opened_at"] is None
    rows, state = run(1e-6, "opened")  # any accuracy passes: open after the first interval (update 2)
    assert rows[0]["weighted_diversity"] == 0 and all(r["weighted_diversity"] > 0 for r in rows[1:])
    assert state["diversity_opened_at"] == 2


def test_a_setting_added_since_a_checkpoint_counts_at_its_default():
    from w2v.train.loop import _identity_changes, _run_identity

    cuts = None
    new = _run_identity(_pretrain_cfg(), _cfg(), cuts, None, None)
    old = json.loads(json.dumps(new))
    del old["train"]["diversity_gate"]  # written before the setting existed
    assert _identity_changes(old, new) == []
    changed = _run_identity(_pretrain_cfg(diversity_gate=0.2), _cfg(), cuts, None, None)
    assert _identity_changes(old, changed) == ["train.diversity_gate"]


def test_padded_fine_tuning_batches_go_to_whole_hops_for_padding_invariant_models(tmp_path, monkeypatch):
    """A layer-norm model's padded fine-tuning batches are padded on to whole hops of its conv
    encoder (one parity of lengths in every conv layer: one compiled graph for every batch); its
    masked forward gives each utterance what it gave before. A group-norm model's batches stay
    as collated (its norm would see the extra padding)."""
    from w2v.data.batching import pad_to_multiple
    from w2v.models import Wav2Vec2ForCTC
    from w2v.models.components import padding_hop

    cuts = write_tiny_cuts(tmp_path / "a", n=6, min_s=1.0, max_s=2.0)
    units = write_units(tmp_path / "units.txt")
    widths = {}
    real = Wav2Vec2ForCTC.forward

    def spy(self, wav, lengths=None, **kw):
        if self.training:
            widths.setdefault(self.cfg.extractor_mode, []).append((wav.shape[1], int(lengths.max())))
        return real(self, wav, lengths, **kw)

    monkeypatch.setattr(Wav2Vec2ForCTC, "forward", spy)
    for mode in ("layer_norm", "default"):
        cfg = load_model_config("tiny", **SMALL, extractor_mode=mode)
        ft = TrainConfig(task="finetune", max_updates=3, lr=1e-3, max_duration=8.0, save_every=3, log_every=1,
                         num_buckets=1)
        train(ft, cuts, tmp_path / mode, cfg, units_path=units)
    hop = 320
    assert padding_hop(Wav2Vec2ForCTC(load_model_config("tiny", **SMALL, extractor_mode="layer_norm"), 5)) == hop
    assert padding_hop(Wav2Vec2ForCTC(load_model_config("tiny", **SMALL), 5)) == 1
    assert all(w % hop == 0 and w - longest < hop for w, longest in widths["layer_norm"])
    assert any(w > longest for w, longest in widths["layer_norm"])  # some batches got padded on
    assert all(w == longest for w, longest in widths["default"])
    # the extra padding is masked: each utterance's masked, dropout-free forward is unchanged
    torch.manual_seed(0)
    cfg = load_model_config("tiny", **SMALL, extractor_mode="layer_norm", dropout=0.0, attention_dropout=0.0,
                            activation_dropout=0.0, dropout_input=0.0, dropout_features=0.0, layerdrop=0.0)
    model = Wav2Vec2ForCTC(cfg, 5).train()
    wav, lens = torch.randn(2, 16003), torch.tensor([16003, 12000])
    wav[1, 12000:] = 0
    out = {}
    for name, x in (("collated", wav), ("whole hops", pad_to_multiple(wav, hop))):
        logits, flens = real(model, x, lens, apply_mask=True, generator=torch.Generator().manual_seed(3))
        out[name] = [logits[i, :n] for i, n in enumerate(flens.tolist())]
    for a, b in zip(out["collated"], out["whole hops"]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_update_freq_sums_several_batches_into_one_update(tmp_path, monkeypatch):
    """`update_freq: 2` (fairseq --update-freq): each update runs 2 batches' forward and backward,
    their gradients adding up (each batch's loss halved) before one optimizer step; the update
    logs the batches' mean loss and ends where twice as many single-batch updates end."""
    import pytest

    from w2v.train import loop

    cuts = write_tiny_cuts(tmp_path / "a", n=10)
    train(_pretrain_cfg(max_updates=4, save_every=4), cuts, tmp_path / "one", _cfg())
    losses, own, grads, steps = [], [], [], []
    real_step, real_update = loop.pretrain_step, loop.optim.update
    weight = lambda model: model.wav2vec2.encoder.layers[0].feed_forward.intermediate_dense.weight  # noqa: E731

    def pretrain_step(model, *a, **k):  # each batch's loss, and its own gradient of one weight
        loss, stats = real_step(model, *a, **k)
        losses.append(float(loss.detach()))
        own.append(torch.autograd.grad(loss, weight(model), retain_graph=True)[0])
        return loss, stats

    def release(model, update_ends=True):  # after each batch's backward: the update's gradient so far
        grads.append(weight(model).grad.clone())

    def update(opt, loss, gnorm, stats, info):
        steps.append(len(grads))
        return real_update(opt, loss, gnorm, stats, info)

    monkeypatch.setattr(loop, "pretrain_step", pretrain_step)
    monkeypatch.setattr(loop, "release_dropped_grads", release)
    monkeypatch.setattr(loop.optim, "update", update)
    train(_pretrain_cfg(max_updates=2, save_every=2, update_freq=2), cuts, tmp_path / "two", _cfg())
    assert len(losses) == 4 and steps == [2, 4]  # one optimizer step per 2 batches
    for u in (0, 2):  # the first batch's gradient halved, then the second's half added to it
        assert own[u].abs().sum() > 0 and not torch.allclose(own[u], own[u + 1])
        assert torch.allclose(grads[u], own[u] / 2, atol=1e-7)
        assert torch.allclose(grads[u + 1], (own[u] + own[u + 1]) / 2, atol=1e-7)
    rows = [json.loads(x) for x in (tmp_path / "two" / "train_log.jsonl").read_text().splitlines()]
    assert [r["update"] for r in rows] == [1, 2]
    assert rows[0]["loss"] == pytest.approx((losses[0] + losses[1]) / 2, rel=1e-4)
    single, twice = (ck.load(tmp_path / run / "checkpoints" / name) for run, name in
                     (("one", "checkpoint_00000004.pt"), ("two", "checkpoint_00000002.pt")))
    assert (twice["epoch"], twice["batch"]) == (single["epoch"], single["batch"])  # 4 batches either way
    with pytest.raises(ValueError, match="recipe.yaml: update_freq is a number of batches per update"):
        TrainConfig.from_dict({"update_freq": 0}, "recipe.yaml")


def test_garbage_collection_runs_on_the_updates_schedule_and_python_gets_its_own_back(tmp_path, monkeypatch):
    """`gc_interval: 2`: automatic collection off while training, a collection after every update's
    step counted (ScheduledCollection decides which collect), a full one after each checkpoint,
    and Python's own collection back on afterwards; 0 changes nothing."""
    import gc

    from w2v.train import loop
    from w2v.train.collect import ScheduledCollection

    seen = {"updates": 0, "full": 0, "enabled_inside": []}

    class Recording(ScheduledCollection):
        def after_update(self):
            seen["updates"] += 1
            seen["enabled_inside"].append(gc.isenabled())
            super().after_update()

        def full(self):
            seen["full"] += 1
            super().full()

    monkeypatch.setattr(loop, "ScheduledCollection", Recording)
    cuts = write_tiny_cuts(tmp_path / "a", n=6)
    train(_pretrain_cfg(max_updates=4, save_every=2, gc_interval=2), cuts, tmp_path / "on", _cfg())
    assert seen["updates"] == 4 and seen["full"] == 2 and not any(seen["enabled_inside"])
    assert gc.isenabled() and gc.get_freeze_count() == 0
    seen.update(updates=0, full=0, enabled_inside=[])
    train(_pretrain_cfg(max_updates=2, save_every=2, gc_interval=0), cuts, tmp_path / "off", _cfg())
    assert seen["updates"] == 2 and all(seen["enabled_inside"]) and gc.isenabled()
