"""The positional convolution as implicit matrix products in Triton (GPU, bf16/fp16).

`components._window_conv` copies every output frame's k input frames out (the tap windows,
k = 128 times the input: 3.3 GB per LARGE-LV60 inference batch of 16 x 15.6 s) and multiplies
them in one batched product. The kernels here read the taps straight from the input instead:
for each tap j, the input rows shifted by j times that tap's (C/g x C/g) weight block,
accumulated in fp32 (``torch.ops.w2v.window_conv``); the weight gradient sums the same shifted
rows against the output gradient (``torch.ops.w2v.window_conv_weight_grad``). The input gradient
is the first with the kernel flipped (as `components._GroupedConvAsMatmul`).

Switched on by `accel.use_triton_positional_conv` (by `use_matmul_convolutions` for forwards
without autograd, where Triton is installed: faster there on an H100, slower in the compiled
training step); without it Triton is never imported. Tests run the kernels through Triton's CPU
interpreter where Triton is installed (`TRITON_INTERPRET=1`), else on a GPU, else skip.
"""

from __future__ import annotations

import functools
import os

import torch
from torch import Tensor


def pow2_block(n: int) -> int:
    """``n`` padded to a power of two of at least 16 (tl.dot's smallest side): a tile's channels
    or taps."""
    return max(16, 1 << (n - 1).bit_length())


def interpreted() -> bool:
    """Whether Triton runs its kernels through the CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def autotuned(configs: list[dict], key: list[str], fixed: dict):
    """A kernel decorator: on a GPU, each config (meta-parameters, plus ``num_warps`` and
    ``num_stages``) is timed on the first call for each value of the ``key`` arguments and the
    fastest kept; Triton's CPU interpreter cannot time them and runs ``fixed`` alone."""
    import triton

    def config(c: dict):
        meta = {k: v for k, v in c.items() if k not in ("num_warps", "num_stages")}
        return triton.Config(meta, num_warps=c.get("num_warps", 4), num_stages=c.get("num_stages", 3))

    return triton.autotune(configs=[config(c) for c in ([fixed] if interpreted() else configs)], key=key)


def _tiles(block: str) -> list[dict]:
    return [{block: size, "num_warps": w, "num_stages": st} for size in (64, 128) for w in (4, 8) for st in (3, 4)]


@functools.cache
def _kernels():
    import triton
    import triton.language as tl

    @autotuned(_tiles("BLOCK_T"), key=["T", "C", "CG", "K"], fixed={"BLOCK_T": 128})
    @triton.jit
    def conv_kernel(x_ptr, w_ptr, y_ptr, T, C, CG, K, LEFT, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr):
        # one program: BLOCK_T output frames of one utterance, one group's channels
        pid = tl.program_id(0)
        g = tl.program_id(1)
        blocks = tl.cdiv(T, BLOCK_T)
        b = pid // blocks
        rows = (pid % blocks) * BLOCK_T + tl.arange(0, BLOCK_T)
        ch = tl.arange(0, BLOCK_C)
        cmask = ch < CG
        wmask = cmask[:, None] & cmask[None, :]
        x_base = x_ptr + b * T * C + g * CG
        acc = tl.zeros((BLOCK_T, BLOCK_C), dtype=tl.float32)
        for j in range(0, K):
            src = rows - LEFT + j
            xm = (src >= 0) & (src < T)
            xt = tl.load(x_base + src[:, None] * C + ch[None, :], mask=xm[:, None] & cmask[None, :], other=0.0)
            wt = tl.load(w_ptr + ((g * K + j) * CG + ch[:, None]) * CG + ch[None, :], mask=wmask, other=0.0)
            acc += tl.dot(xt, wt)
        out = y_ptr + b * T * C + rows[:, None] * C + g * CG + ch[None, :]
        tl.store(out, acc.to(y_ptr.dtype.element_ty), mask=(rows < T)[:, None] & cmask[None, :])

    @autotuned(_tiles("BLOCK_M"), key=["M", "C", "CG", "K"], fixed={"BLOCK_M": 64})
    @triton.jit
    def weight_grad_kernel(x_ptr, gy_ptr, dw_ptr, M, T, C, CG, K, LEFT, BLOCK_M: tl.constexpr,
                           BLOCK_C: tl.constexpr):
        # one program: tap j of group g, summed over every (utterance, frame) row
        j = tl.program_id(0)
        g = tl.program_id(1)
        ch = tl.arange(0, BLOCK_C)
        cmask = ch < CG
        acc = tl.zeros((BLOCK_C, BLOCK_C), dtype=tl.float32)
        for m0 in range(0, M, BLOCK_M):
            m = m0 + tl.arange(0, BLOCK_M)
            src_t = m % T - LEFT + j
            inside = m < M
            xm = inside & (src_t >= 0) & (src_t < T)
            xt = tl.load(x_ptr + (m - LEFT + j)[:, None] * C + g * CG + ch[None, :],
                         mask=xm[:, None] & cmask[None, :], other=0.0)
            gt = tl.load(gy_ptr + m[:, None] * C + g * CG + ch[None, :], mask=inside[:, None] & cmask[None, :],
                         other=0.0)
            acc += tl.dot(tl.trans(xt), gt)
        tl.store(dw_ptr + ((g * K + j) * CG + ch[:, None]) * CG + ch[None, :], acc,
                 mask=cmask[:, None] & cmask[None, :])

    return triton, conv_kernel, weight_grad_kernel


def _blocked_weight(weight: Tensor) -> Tensor:
    """Conv1d's (C, C/g, k) -> (g, k, C/g in, C/g out), each tap's block contiguous."""
    c, cg, k = weight.shape
    return weight.reshape(c // cg, cg, cg, k).permute(0, 3, 2, 1).contiguous()


def register() -> None:
    """Register the kernels as Triton custom ops, which torch.compile keeps in its graphs:
    ``torch.ops.w2v.window_conv(x, weight, left)`` (`components._window_conv`'s arguments, any
    strides) and ``torch.ops.w2v.window_conv_weight_grad(x, grad, groups, kernel, left)`` (the
    weight's gradient, fp32). Once per process, before a model that uses them is traced."""
    if hasattr(torch.ops.w2v, "window_conv"):
        return
    from torch.library import triton_op, wrap_triton

    triton, conv_kernel, weight_grad_kernel = _kernels()

    @triton_op("w2v::window_conv", mutates_args={})
    def _conv(x: Tensor, weight: Tensor, left: int) -> Tensor:
        x = x.contiguous()
        b, t, c = x.shape
        cg, k = weight.shape[1], weight.shape[2]
        y = torch.empty_like(x)
        wrap_triton(conv_kernel)[lambda meta: (b * triton.cdiv(t, meta["BLOCK_T"]), c // cg)](
            x, _blocked_weight(weight), y, t, c, cg, k, left, BLOCK_C=pow2_block(cg))
        return y

    @triton_op("w2v::window_conv_weight_grad", mutates_args={})
    def _weight_grad(x: Tensor, grad: Tensor, groups: int, kernel: int, left: int) -> Tensor:
        x, grad = x.contiguous(), grad.contiguous()
        b, t, c = x.shape
        cg = c // groups
        dw = torch.empty(groups, kernel, cg, cg, device=x.device, dtype=torch.float32)
        wrap_triton(weight_grad_kernel)[(kernel, groups)](
            x, grad, dw, b * t, t, c, cg, kernel, left, BLOCK_C=pow2_block(cg))
        return dw.permute(0, 3, 2, 1).reshape(c, cg, kernel)
