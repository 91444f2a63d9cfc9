"""The positional convolution's Triton kernels (`w2v.models.triton_conv`) against the batched
products they replace. They run on a GPU, or on the CPU through Triton's interpreter:
``TRITON_INTERPRET=1 pytest tests/models/test_triton_conv.py`` with Triton installed. Without
either, they skip."""

import importlib.util
import os

import pytest
import torch

from w2v.models.accel import use_matmul_convolutions, use_triton_positional_conv
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
