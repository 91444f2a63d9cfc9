import math

import pytest

from w2v.train.schedules import Schedule


def test_polynomial_warmup_peak_and_end():
    s = Schedule("polynomial", lr=1e-3, total_updates=100, warmup=10)
    assert s(0) == pytest.approx(1e-4)
    assert s(9) == pytest.approx(1e-3)
    assert s(10) == pytest.approx(1e-3)
    assert s(55) == pytest.approx(0.5e-3)
    assert s(100) == 0.0


def test_tri_stage_phases():
    s = Schedule("tri_stage", lr=1e-3, total_updates=100, warmup=0.1, hold=0.4, final_lr_scale=0.05)
    assert s(0) == pytest.approx(1e-5)
    assert s(10) == pytest.approx(1e-3) and s(49) == pytest.approx(1e-3)
    assert s(100) == pytest.approx(5e-5)
    mid = s(75)
    assert mid == pytest.approx(1e-3 * math.exp(math.log(0.05) * 0.5))


def test_unknown_kind():
    with pytest.raises(ValueError, match="unknown schedule"):
        Schedule("cosine", lr=1.0, total_updates=1)


def test_diversity_weight_ramps_from_zero():
    from w2v.train.config import TrainConfig

    cfg = TrainConfig(max_updates=1000, diversity_weight=0.1, diversity_warmup=0.5)
    assert cfg.diversity_weight_at(0) == 0.0
    assert cfg.diversity_weight_at(250) == pytest.approx(0.05)
    assert cfg.diversity_weight_at(500) == cfg.diversity_weight_at(999) == 0.1
    counted = TrainConfig(max_updates=1000, diversity_warmup=200)  # >= 1: a count of updates
    assert counted.diversity_weight_at(100) == pytest.approx(0.05)
    assert TrainConfig().diversity_weight_at(0) == 0.1  # no ramp by default (fairseq)
    delayed = TrainConfig(max_updates=1000, diversity_start=0.3, diversity_warmup=0.2)
    assert delayed.diversity_weight_at(299) == 0.0
    assert delayed.diversity_weight_at(400) == pytest.approx(0.05)
    assert delayed.diversity_weight_at(500) == 0.1
    assert TrainConfig(max_updates=10, diversity_start=5).diversity_weight_at(5) == 0.1  # no ramp: a step


def test_diversity_gate_counts_the_delay_and_ramp_from_its_opening():
    from w2v.train.config import TrainConfig

    gated = TrainConfig(max_updates=1000, diversity_start=0.3, diversity_warmup=0.2, diversity_gate=0.2)
    assert gated.diversity_weight_at(900, None) == 0.0  # not opened yet: off, whatever the update
    assert gated.diversity_weight_at(400, 100) == pytest.approx(0.05)  # opened early: diversity_start rules
    assert gated.diversity_weight_at(600, 500) == pytest.approx(0.05)  # opened late: the ramp starts there
    assert gated.diversity_weight_at(700, 500) == 0.1
    assert TrainConfig(max_updates=1000).diversity_weight_at(0, None) == 0.1  # no gate: opened_at is ignored
    with pytest.raises(ValueError, match="diversity_gate"):
        TrainConfig.from_dict({"diversity_gate": 1.5})


def test_pretrain_step_uses_the_ramped_weight():
    import torch

    from w2v.models import Wav2Vec2ForPreTraining
    from w2v.models.config import load_model_config
    from w2v.train.config import TrainConfig
    from w2v.train.steps import pretrain_step

    torch.manual_seed(0)
    model = Wav2Vec2ForPreTraining(load_model_config("tiny")).train()
    wav = torch.randn(2, 16000)
    tcfg = TrainConfig(max_updates=100, diversity_warmup=0.5)
    weights = {}
    for update in (0, 25, 60):
        g = torch.Generator().manual_seed(0)
        _, stats = pretrain_step(model, wav, torch.tensor([16000, 16000]), g, update, tcfg)
        assert stats["diversity"] > 0  # logged whatever its weight
        weights[update] = float(stats["weighted_diversity"] / stats["diversity"])
    assert weights[0] == 0.0
    assert weights[25] == pytest.approx(0.05)
    assert weights[60] == pytest.approx(0.1)


def test_feature_penalty_defaults_to_fairseqs_weight_for_the_architecture():
    from w2v.models.config import load_model_config
    from w2v.train.config import TrainConfig

    unset = TrainConfig()
    # fairseq wav2vec2_base_librispeech.yaml: loss_weights [0.1, 10]; wav2vec2_large_librivox.yaml: [0.1, 0]
    assert unset.feature_penalty_for(load_model_config("base")) == 10.0
    assert unset.feature_penalty_for(load_model_config("large")) == 10.0
    for lv60 in ("large_lv60", "xlsr_53", "xls_r_300m", "mms_1b"):
        assert unset.feature_penalty_for(load_model_config(lv60)) == 0.0, lv60
    assert unset.feature_penalty_for(load_model_config("hubert_base")) == 10.0
    assert TrainConfig(feature_penalty_weight=3.0).feature_penalty_for(load_model_config("large_lv60")) == 3.0
    assert TrainConfig(feature_penalty_weight=0.0).feature_penalty_for(load_model_config("base")) == 0.0


def test_pretrain_step_adds_the_penalty_only_where_the_architecture_has_it():
    import torch

    from w2v.models import Wav2Vec2ForPreTraining
    from w2v.models.config import load_model_config
    from w2v.train.config import TrainConfig
    from w2v.train.steps import pretrain_step

    wav, lens = torch.randn(2, 16000), torch.tensor([16000, 16000])
    tcfg = TrainConfig(max_updates=100, diversity_weight=0.0)
    for mode, weight in (("default", 10.0), ("layer_norm", 0.0)):
        torch.manual_seed(0)
        model = Wav2Vec2ForPreTraining(load_model_config("tiny", extractor_mode=mode)).train()
        loss, stats = pretrain_step(model, wav, lens, torch.Generator().manual_seed(0), 0, tcfg)
        assert stats["feature_pen"] > 0
        assert loss.item() == pytest.approx(float(stats["contrastive"]) + weight * float(stats["feature_pen"]), rel=1e-4)
