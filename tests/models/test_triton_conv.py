"""The positional convolution's Triton kernels (`w2v.models.triton_conv`) against the batched
products they replace. They run on a GPU, or on the CPU through Triton's interpreter:
``TRITON_INTERPRET=1 pytest tests/models/test_triton_conv.py`` with Triton installed. Without
either, they skip."""

import importlib.util
import os

import pytest
import torch

from w2v.models.accel import use_matmul_convolutions, use_triton_first_layer, use_triton_positional_conv
from w2v.models.components import ConvPositionalEmbedding, _GroupedConvAsMatmul

HAVE_TRITON = importlib.util.find_spec("triton") is not None
ON_GPU = torch.cuda.is_available()
needs_kernels = pytest.mark.skipif(not HAVE_TRITON or not (ON_GPU or os.environ.get("TRITON_INTERPRET") == "1"),
                                   reason="Triton kernels need a GPU, or TRITON_INTERPRET=1 and Triton installed")
# on the GPU the kernels take bf16 (fp32 accumulation); the interpreter computes in fp32
DEVICE, DTYPE, TOL = ("cuda", torch.bfloat16, 2e-2) if ON_GPU else ("cpu", torch.float32, 1e-4)


@needs_kernels
@pytest.mark.parametrize("batch,frames,groups,width,kernel", [
    (2, 150, 2, 48, 8),  # BASE's 48 channels per group: padded to 64 inside the kernel
    (1, 37, 3, 16, 5),  # an odd kernel, fewer frames than a block
    (2, 70, 2, 64, 16),  # LARGE's 64 channels per group
])
def test_triton_positional_conv_equals_the_batched_products_with_gradients(batch, frames, groups, width, kernel):
    use_triton_positional_conv(torch.nn.Identity())  # registers the ops
    torch.manual_seed(0)
    x = torch.randn(batch, frames, groups * width, device=DEVICE, dtype=DTYPE)
    w = (torch.randn(groups * width, width, kernel, device=DEVICE) / (width * kernel) ** 0.5).to(DTYPE)
    gy = torch.randn(batch, frames, groups * width, device=DEVICE, dtype=DTYPE)
    left = kernel // 2
    results = []
    for use_triton in (False, True):
        xr, wr = x.clone().requires_grad_(), w.clone().requires_grad_()
        y = _GroupedConvAsMatmul.apply(xr, wr, left, use_triton)
        results.append((y, *torch.autograd.grad(y, [xr, wr], gy)))
    for ref, got in zip(*results):
        assert got.dtype == ref.dtype and got.shape == ref.shape
        assert (got.float() - ref.float()).norm() <= TOL * ref.float().norm()


@pytest.mark.skipif(not (HAVE_TRITON and ON_GPU), reason="the module's switch takes effect on a GPU only")
def test_positional_embedding_with_triton_equals_it_without_under_autocast():
    torch.manual_seed(0)
    pos = ConvPositionalEmbedding(768, 128, 16).cuda()
    use_matmul_convolutions(pos)
    x = torch.randn(2, 300, 768, device="cuda")
    outs = []
    for enabled in (False, True):
        use_triton_positional_conv(pos, enabled)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            outs.append(pos(x).float())
    assert (outs[1] - outs[0]).norm() <= 2e-2 * outs[0].norm()


@pytest.mark.skipif(HAVE_TRITON, reason="Triton is installed here")
def test_switching_the_kernels_on_without_triton_is_an_import_error():
    with pytest.raises(ImportError):
        use_triton_positional_conv(torch.nn.Identity())


@needs_kernels
@pytest.mark.parametrize("norm,bias,channels,samples,offset", [
    ("group", False, 24, 6000, 3.0),  # BASE: group norm, no conv bias; 1,199 frames = 2 chunks; a DC offset
    ("layer", True, 40, 2600, 0.0),  # LARGE-LV60: layer norm over 40 channels (padded to 64), conv bias
])
def test_fused_first_layer_equals_the_unfused_layer_with_gradients(norm, bias, channels, samples, offset):
    from w2v.models.components import _ConvLayer, _FusedFirstLayer, _few_taps_layer

    use_triton_first_layer(torch.nn.Identity())  # registers the ops
    torch.manual_seed(0)
    layer = _ConvLayer(1, channels, 10, 5, bias, norm).to(DEVICE)
    with torch.no_grad():
        layer.layer_norm.weight.uniform_(0.5, 1.5)
        layer.layer_norm.bias.uniform_(-0.5, 0.5)
        if bias:
            layer.conv.bias.uniform_(-0.5, 0.5)
    wave = torch.randn(2, samples, device=DEVICE) + offset
    frames = (samples - 10) // 5 + 1
    gy = torch.randn(2, frames, channels, device=DEVICE)
    params = [layer.conv.weight, layer.layer_norm.weight, layer.layer_norm.bias] + ([layer.conv.bias] if bias else [])
    ref = _few_taps_layer(layer, wave.unsqueeze(-1), frames)  # fp32 throughout
    ref_grads = torch.autograd.grad(ref, params, gy)
    got = _FusedFirstLayer.apply(wave, layer.conv.weight[:, 0], layer.conv.bias, layer.layer_norm.weight,
                                 layer.layer_norm.bias, 5, norm == "layer", layer.layer_norm.eps, DTYPE)
    got_grads = torch.autograd.grad(got, params, gy.to(DTYPE))
    assert got.dtype == DTYPE and got.shape == ref.shape
    for r, g in zip([ref, *ref_grads], [got, *got_grads]):
        assert g.shape == r.shape
        assert (g.float() - r.float()).norm() <= TOL * r.float().norm()


@pytest.mark.skipif(not (HAVE_TRITON and ON_GPU), reason="the module's switch takes effect on a GPU only")
@pytest.mark.parametrize("mode,bias", [("default", False), ("layer_norm", True)])
def test_feature_encoder_with_the_fused_first_layer_equals_it_without_under_autocast(mode, bias):
    from w2v.models.components import ConvFeatureEncoder

    torch.manual_seed(0)
    fe = ConvFeatureEncoder([(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2, mode, bias).cuda()
    use_matmul_convolutions(fe, triton=False)
    wave = torch.randn(3, 32000, device="cuda")
    outs = []
    for enabled in (False, True):
        use_triton_first_layer(fe, enabled)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            y, _ = fe(wave)
        y.float().square().mean().backward()
        outs.append((y.float(), fe.conv_layers[0].conv.weight.grad.clone()))
        fe.zero_grad()
    for ref, got in zip(*outs):
        assert (got - ref).norm() <= 3e-2 * ref.norm()


def test_positional_conv_uses_triton_in_training_only_when_asked():
    pos = ConvPositionalEmbedding(64, 8, 4)
    pos.triton = True  # as use_triton_positional_conv(pos, training=False) sets it, without Triton here
    assert pos.uses_triton(True, torch.bfloat16) is False  # grad mode: the batched products
    with torch.no_grad():
        assert pos.uses_triton(True, torch.bfloat16)
        assert not pos.uses_triton(False, torch.bfloat16) and not pos.uses_triton(True, torch.float32)
    pos.triton_training = True
    assert pos.uses_triton(True, torch.bfloat16)
    pos.triton = False
    with torch.no_grad():
        assert not pos.uses_triton(True, torch.bfloat16)


@pytest.mark.skipif(not HAVE_TRITON, reason="switching the kernels on registers them (needs Triton)")
def test_matmul_convolutions_switch_the_triton_positional_conv_on_for_inference_only():
    """Faster in inference on an H100, slower in the compiled training step (BENCHMARKS.md)."""
    pos = ConvPositionalEmbedding(64, 8, 4)
    use_matmul_convolutions(pos)
    assert pos.matmul and pos.triton and not pos.triton_training
    use_triton_positional_conv(pos)
    assert pos.triton and pos.triton_training
    use_matmul_convolutions(pos, triton=False)
    assert pos.matmul and not pos.triton


@pytest.mark.skipif(not HAVE_TRITON, reason="switching the kernels on registers them (needs Triton)")
def test_matmul_convolutions_switch_the_fused_first_layer_on_in_training_for_group_norm_only(monkeypatch):
    """Faster on an H100 in the compiled BASE pre-training step and in inference; LARGE-LV60's
    (layer norm) pre-training step was slower with it (BENCHMARKS.md)."""
    import w2v.models.components as components

    asked = []
    unfused = components._matmul_layer
    monkeypatch.setattr(components, "_matmul_layer",
                        lambda layer, x, use_triton=False, *rest:
                        asked.append(use_triton) or unfused(layer, x, use_triton, *rest))

    def first_layer_asks(fe, grad: bool) -> bool:
        with torch.set_grad_enabled(grad):
            fe(torch.randn(1, 400))  # on the CPU the unfused layer runs either way
        first = asked[0]
        asked.clear()
        return first

    for mode, in_training in (("default", True), ("layer_norm", False)):
        fe = components.ConvFeatureEncoder([(32, 10, 5), (32, 3, 2)], mode, bias=mode == "layer_norm")
        use_matmul_convolutions(fe)
        assert fe.matmul and fe.triton
        assert first_layer_asks(fe, grad=False) is True, mode
        assert first_layer_asks(fe, grad=True) is in_training, mode
        use_triton_first_layer(fe)  # asked for explicitly: in training with layer norm too
        assert first_layer_asks(fe, grad=True) is True, mode
        use_matmul_convolutions(fe, triton=False)
        assert fe.matmul and not fe.triton
        assert first_layer_asks(fe, grad=False) is False, mode
