"""The feed-forward network's product and GELU as one cuBLASLt call (`accel.use_gelu_epilogue`):
which modules take it and that CPU forwards and training are untouched (CPU); its outputs beside
the separate GELU's and float32's (GPU only)."""

import pytest
import torch
import torch.nn.functional as F

from w2v.models import Wav2Vec2ForCTC
from w2v.models.accel import compile_model, step_begins, use_gelu_epilogue
from w2v.models.components import FeedForward, _linear_gelu

from test_wav2vec2 import small_cfg

NO_DROPOUT = dict(dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, dropout_input=0.0,
                  dropout_features=0.0)
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_only_gelu_networks_take_the_epilogue_and_cpu_forwards_are_unchanged():
    torch.manual_seed(0)
    gelu, relu = (Wav2Vec2ForCTC(small_cfg(activation_fn=act, **NO_DROPOUT), 7).eval() for act in ("gelu", "relu"))
    x = torch.randn(2, 4000)
    with torch.no_grad():
        before = gelu(x)[0]
        use_gelu_epilogue(gelu)
        use_gelu_epilogue(relu)
        after = gelu(x)[0]
    ffns = [m for m in gelu.modules() if isinstance(m, FeedForward)]
    assert ffns and all(m.gelu_epilogue for m in ffns)
    assert not any(m.gelu_epilogue for m in relu.modules() if isinstance(m, FeedForward))
    assert torch.equal(before, after)  # the CPU keeps the module's own GELU
    use_gelu_epilogue(gelu, False)
    assert not any(m.gelu_epilogue for m in ffns)


def test_the_fused_call_is_the_product_then_the_gelu():
    """On the CPU `torch._addmm_activation` computes erf's GELU, so the fused call's reshaping and
    bias must give the unfused network's result to rounding."""
    torch.manual_seed(0)
    linear = torch.nn.Linear(16, 24)
    x = torch.randn(3, 5, 16)
    y = _linear_gelu(x, linear)
    assert y.shape == (3, 5, 24)
    torch.testing.assert_close(y, F.gelu(linear(x)), atol=1e-6, rtol=1e-5)


def _logits(model, x, bf16=True):
    step_begins()
    with torch.no_grad(), torch.autocast("cuda", torch.bfloat16, enabled=bf16):
        return model(x)[0].float().clone()


@cuda
def test_gpu_epilogue_stays_within_bf16_of_float32_eager_and_compiled():
    torch.manual_seed(0)
    model = Wav2Vec2ForCTC(small_cfg(**NO_DROPOUT), 7).cuda().eval()
    x = torch.randn(3, 16000, device="cuda")
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    ref = _logits(model, x, bf16=False)
    torch.backends.cuda.matmul.allow_tf32 = tf32
    unfused = _logits(model, x)
    use_gelu_epilogue(model)
    fused = _logits(model, x)

    def err(y):
        return float((y - ref).norm() / ref.norm())

    assert not torch.equal(fused, unfused)  # the epilogue ran: cuBLASLt's tanh GELU, one rounding fewer
    # bf16's own error here is ~1e-2; the fused GELU adds nothing beyond it
    assert err(fused) < 3e-2 and err(fused) <= 1.5 * err(unfused), (err(fused), err(unfused))
    compile_model(model)
    for _ in range(2):
        compiled = _logits(model, x)
    assert err(compiled) < 3e-2 and err(compiled) <= 1.5 * err(unfused), (err(compiled), err(unfused))


@cuda
def test_gpu_training_forward_keeps_the_modules_gelu():
    torch.manual_seed(0)
    ffn = FeedForward(32, 64, "gelu", 0.0, 0.0).cuda()
    x = torch.randn(4, 9, 32, device="cuda", requires_grad=True)
    plain = ffn(x)
    ffn.gelu_epilogue = True
    assert torch.equal(ffn(x), plain)  # autograd on: the separate erf GELU
    with torch.no_grad():
        fused = ffn(x)
    torch.testing.assert_close(fused, ffn.output_dense(F.gelu(ffn.intermediate_dense(x), approximate="tanh")),
                               atol=1e-5, rtol=1e-4)
