"""bf16 training on CUDA (skipped on CPU-only machines)."""

import pytest
import torch

from synth import write_tiny_cuts
from w2v.train import checkpoint as ck
from w2v.train.config import TrainConfig
from w2v.train.loop import train

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_pretraining_bf16_on_cuda(tmp_path):
    from test_loop import _cfg

    cuts = write_tiny_cuts(tmp_path / "a")
    tcfg = TrainConfig(task="pretrain", max_updates=3, lr=5e-4, warmup=1, max_duration=4.0, crop_seconds=1.0,
                       save_every=3, log_every=1)
    out = ck.load(train(tcfg, cuts, tmp_path / "exp", _cfg(), device="cuda"))
    assert out["num_updates"] == 3
    assert all(torch.isfinite(v).all() for v in out["model"].values() if v.is_floating_point())


def test_device_masks_and_negatives_from_a_cpu_step_generator():
    from w2v.models import compute_mask_indices
    from w2v.models.masking import device_generator, negative_positions

    def draw(seed):
        g = device_generator(torch.Generator().manual_seed(seed), "cuda")
        assert g.device.type == "cuda"
        mask = compute_mask_indices((8, 780), None, 0.65, 10, 2, g, device="cuda")
        return mask, negative_positions(mask, 100, g)[1]

    (m1, n1), (m2, n2), (m3, _) = draw(5), draw(5), draw(6)
    assert m1.is_cuda and torch.equal(m1, m2) and torch.equal(n1, n2) and not torch.equal(m1, m3)
    assert abs(m1.float().mean().item() - (1 - (1 - 0.065) ** 10)) < 0.03


def test_compiled_pretraining_matches_eager_on_cuda():
    from test_loop import _cfg

    from w2v.models import Wav2Vec2ForPreTraining
    from w2v.models.accel import compile_model
    from w2v.train.losses import pretraining_loss

    cfg = _cfg().replace(dropout=0.0, attention_dropout=0.0, dropout_input=0.0, dropout_features=0.0, layerdrop=0.0)
    torch.manual_seed(0)
    eager = Wav2Vec2ForPreTraining(cfg).cuda().train()
    eager.static_head = True  # the head compile_model compiles, here uncompiled: same draws
    compiled = compile_model(Wav2Vec2ForPreTraining(cfg).cuda().train())
    assert torch._inductor.config.cpp_wrapper  # a GPU model's kernels are launched from C++
    compiled.load_state_dict(eager.state_dict())
    wav = torch.randn(4, 16000, device="cuda")
    losses = []
    for model in (eager, compiled):
        loss, _ = pretraining_loss(model(wav, torch.full((4,), 16000), generator=torch.Generator().manual_seed(1)))
        loss.backward()
        losses.append(loss.item())
    assert abs(losses[0] - losses[1]) <= 1e-3 * abs(losses[0])
    torch.testing.assert_close(eager.wav2vec2.feature_projection.projection.weight.grad,
                               compiled.wav2vec2.feature_projection.projection.weight.grad, rtol=1e-3, atol=1e-5)
