"""The conv feature encoder's first layer as fused Triton kernels (GPU, bf16/fp16 autocast).

The first layer turns the waveform into 512 channels at 1/5 of the sample rate (a kernel of 10
samples, stride 5), then normalises (group norm: each channel over time, BASE; layer norm: each
frame over channels, LARGE-LV60 / XLS-R) and applies GELU. Its output is the step's largest
tensor (8 x 50k x 512 values for a BASE pre-training batch of 8 x 15.6 s). Unfused, the product
writes it, the norm's statistics read it, the norm-GELU kernel reads it and writes it again,
and backward reads and writes it several times more: compiled, 4.3 ms forward + backward of an
H100's 28.8 ms BASE pre-training step. The product has only 10 multiply-adds per value, so
these kernels recompute it from the waveform wherever they need it (one tf32 tensor-core
product per tile, the taps and a constant 1 for the bias against the packed weight) and touch
the big tensor only to write the output (forward) and to read its gradient (backward):

- forward: ``torch.ops.w2v.first_conv_layer`` -> (output, mean, rstd). Group norm first takes
  per-(utterance, channel) statistics in one pass (each tile slot's running mean and sum of
  squared deviations, merged per chunk in the kernel and over chunks on the host, by Chan's
  update); layer norm takes each frame's in the output kernel. Norm, affine and GELU in fp32;
  the output in the autocast dtype.
- backward: ``torch.ops.w2v.first_conv_layer_backward`` -> the gradients of the conv weight and
  bias and of the norm's weight and bias (the waveform needs none), one pass over the output
  gradient for either norm. Group norm's input gradient subtracts per-channel means over the
  whole utterance, which one pass cannot know in time, so the pass sums du (x) taps and
  xhat (x) taps instead, and the host combines them (`_group_weight_grad`).

Switched on by `accel.use_triton_first_layer` (by `use_matmul_convolutions` where Triton is
installed: in training for group norm, without autograd for either norm), which imports this
module (and Triton) only then. `components._FusedFirstLayer` is the autograd function; the
unfused path (`components._few_taps_layer`) is the reference the tests hold the kernels to,
through Triton's CPU interpreter (`TRITON_INTERPRET=1`) where no GPU is present.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from w2v.models.triton_conv import autotuned, interpreted, pow2_block

# rows of output frames each program of the statistics and backward kernels sums over, a
# multiple of every tile height tried (its partial sums are then added on the host: fixed order)
CHUNK = 1024


@triton.jit
def _gelu(u):
    return 0.5 * u * (1.0 + tl.erf(u * 0.7071067811865476))


@triton.jit
def _gelu_grad(u):
    return 0.5 * (1.0 + tl.erf(u * 0.7071067811865476)) + u * 0.3989422804014327 * tl.exp(-0.5 * u * u)


@triton.jit
def _taps(wave_ptr, b, rows, S, T, STRIDE, K: tl.constexpr, KP: tl.constexpr):
    # (BLOCK_T, KP) fp32: each frame's K samples, then a 1 (the bias' column), then zeros; rows
    # past T all zeros
    kk = tl.arange(0, KP)
    rmask = (rows < T)[:, None]
    taps = tl.load(wave_ptr + b * S + rows[:, None] * STRIDE + kk[None, :], mask=rmask & (kk[None, :] < K),
                   other=0.0).to(tl.float32)
    return taps + tl.where(rmask & (kk[None, :] == K), 1.0, 0.0)


@triton.jit
def _packed_weight(wt_ptr, ch, C, KP: tl.constexpr):
    # (KP, BLOCK_C) fp32 from the packed (KP, C) weight: the taps' rows, the bias', zeros
    kk = tl.arange(0, KP)
    return tl.load(wt_ptr + kk[:, None] * C + ch[None, :], mask=(ch < C)[None, :], other=0.0)


@triton.jit
def _frame_norm(y, cmask, C, EPS):
    # layer norm over the channels of each row: (normalised rows, 1 / std per row)
    mean = tl.sum(y, 1) / C
    d = tl.where(cmask[None, :], y - mean[:, None], 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(d * d, 1) / C + EPS)
    return d * rstd[:, None], rstd


@triton.jit
def _program_chunk(T, CHUNK, BLOCK_C: tl.constexpr):
    # this program's row of partial sums, utterance, first frame (CHUNK frames) and channels
    pid = tl.program_id(0)
    chunks = tl.cdiv(T, CHUNK)
    return pid, pid // chunks, (pid % chunks) * CHUNK, tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)


@triton.jit
def _channel_params(gamma_ptr, beta_ptr, mean_ptr, rstd_ptr, b, ch, C, PER_FRAME: tl.constexpr):
    # the norm's weight and bias for these channels, and group norm's statistics of utterance b
    # (zeros for layer norm, which takes each frame's own)
    cmask = ch < C
    gamma = tl.load(gamma_ptr + ch, mask=cmask, other=0.0).to(tl.float32)
    beta = tl.load(beta_ptr + ch, mask=cmask, other=0.0).to(tl.float32)
    mean = tl.zeros_like(gamma)
    rstd = tl.zeros_like(gamma)
    if not PER_FRAME:
        mean = tl.load(mean_ptr + b * C + ch, mask=cmask, other=0.0)
        rstd = tl.load(rstd_ptr + b * C + ch, mask=cmask, other=0.0)
    return gamma, beta, mean, rstd


# Tiles of BLOCK_T frames by BLOCK_C channels (128 for group norm, all of them for layer norm).
# Measured alone on an H100 (BASE batch 8, LARGE-LV60 batch 6): 16 or 32 rows; taller tiles
# spill registers, most of all in backward (its 16-row tile, 8 warps: BASE 0.66 ms against
# 2.15 for the 64-row tile it replaced).
_CONFIGS = [{"BLOCK_T": t, "num_warps": w} for t in (16, 32) for w in (2, 4, 8, 16)]
_BACKWARD_CONFIGS = [{"BLOCK_T": t, "num_warps": w} for t in (16, 32) for w in (4, 8, 16)]


@autotuned(_CONFIGS, key=["T", "C", "BLOCK_C"], fixed={"BLOCK_T": 16})
@triton.jit
def _stats_kernel(wave_ptr, wt_ptr, mean_ptr, m2_ptr, S, T, C, STRIDE, CHUNK, K: tl.constexpr, KP: tl.constexpr,
                  PREC: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr):
    # one program: CHUNK frames of one utterance, BLOCK_C channels -> their mean and sum of
    # squared deviations. Each slot of the tile keeps its own running pair (Welford), so the loop
    # has no reduction across the tile's rows; the slots are merged once at the end (Chan).
    pid, b, start, ch = _program_chunk(T, CHUNK, BLOCK_C)
    wt = _packed_weight(wt_ptr, ch, C, KP)
    n_s = tl.zeros((BLOCK_T,), dtype=tl.float32)
    mean_s = tl.zeros((BLOCK_T, BLOCK_C), dtype=tl.float32)
    m2_s = tl.zeros((BLOCK_T, BLOCK_C), dtype=tl.float32)
    for t0 in range(start, tl.minimum(start + CHUNK, T), BLOCK_T):
        rows = t0 + tl.arange(0, BLOCK_T)
        valid = (rows < T)[:, None]
        y = tl.dot(_taps(wave_ptr, b, rows, S, T, STRIDE, K, KP), wt, input_precision=PREC)
        n_s += (rows < T).to(tl.float32)
        delta = y - mean_s
        mean_s += tl.where(valid, delta / tl.maximum(n_s, 1.0)[:, None], 0.0)
        m2_s += tl.where(valid, delta * (y - mean_s), 0.0)
    n = tl.sum(n_s, 0)
    mean = tl.sum(mean_s * n_s[:, None], 0) / n
    d = mean_s - mean[None, :]
    m2 = tl.sum(m2_s + n_s[:, None] * d * d, 0)
    cmask = ch < C
    tl.store(mean_ptr + pid * C + ch, mean, mask=cmask)
    tl.store(m2_ptr + pid * C + ch, m2, mask=cmask)


@autotuned(_CONFIGS, key=["T", "C", "BLOCK_C", "PER_FRAME"], fixed={"BLOCK_T": 16})
@triton.jit
def _forward_kernel(wave_ptr, wt_ptr, gamma_ptr, beta_ptr, mean_ptr, rstd_ptr, y_ptr, S, T, C, STRIDE, CHUNK,
                    EPS: tl.constexpr, K: tl.constexpr, KP: tl.constexpr, PREC: tl.constexpr, PER_FRAME: tl.constexpr,
                    BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr):
    # one program: CHUNK frames of one utterance, BLOCK_C channels (all of them for PER_FRAME),
    # BLOCK_T frames at a time; the weights are read once
    _, b, start, ch = _program_chunk(T, CHUNK, BLOCK_C)
    cmask = ch < C
    wt = _packed_weight(wt_ptr, ch, C, KP)
    gamma, beta, mean, rstd = _channel_params(gamma_ptr, beta_ptr, mean_ptr, rstd_ptr, b, ch, C, PER_FRAME)
    if not PER_FRAME:
        gamma, beta = gamma * rstd, beta - mean * rstd * gamma  # the norm and affine as one of each
    for t0 in range(start, tl.minimum(start + CHUNK, T), BLOCK_T):
        rows = t0 + tl.arange(0, BLOCK_T)
        y = tl.dot(_taps(wave_ptr, b, rows, S, T, STRIDE, K, KP), wt, input_precision=PREC)
        if PER_FRAME:
            y, rstd_rows = _frame_norm(y, cmask, C, EPS)  # (a name of its own: Triton types loop-carried names)
        out = _gelu(y * gamma[None, :] + beta[None, :])
        tl.store(y_ptr + (b * T + rows)[:, None] * C + ch[None, :], out.to(y_ptr.dtype.element_ty),
                 mask=(rows < T)[:, None] & cmask[None, :])


@autotuned(_BACKWARD_CONFIGS, key=["T", "C", "BLOCK_C", "PER_FRAME"], fixed={"BLOCK_T": 16})
@triton.jit
def _backward_kernel(wave_ptr, wt_ptr, gamma_ptr, beta_ptr, mean_ptr, rstd_ptr, gy_ptr, dw_ptr, q_ptr, a_ptr, c_ptr,
                     S, T, C, STRIDE, CHUNK, EPS: tl.constexpr, K: tl.constexpr, KP: tl.constexpr,
                     PREC: tl.constexpr, PER_FRAME: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr):
    # one program: CHUNK frames of one utterance, BLOCK_C channels, one pass over the output
    # gradient; its sums go to row pid of the outputs (du: the gradient at the norm's affine
    # output, xhat: the normalised conv output). a = sum of du * xhat (the norm weight's
    # gradient). Layer norm: dw = sum of dy (x) taps, the packed weight's gradient (the conv's K
    # taps, then its bias), and c = sum of du (the norm bias'). Group norm, whose dy needs
    # per-channel means over the whole utterance first: dw = sum of du (x) taps and q = sum of
    # xhat (x) taps, from which the host forms the weight's gradient (`_group_weight_grad`).
    pid, b, start, ch = _program_chunk(T, CHUNK, BLOCK_C)
    cmask = ch < C
    kk = tl.arange(0, KP)
    wt = _packed_weight(wt_ptr, ch, C, KP)
    gamma, beta, mean, rstd = _channel_params(gamma_ptr, beta_ptr, mean_ptr, rstd_ptr, b, ch, C, PER_FRAME)
    acc_dw = tl.zeros((BLOCK_C, KP), dtype=tl.float32)
    acc_q = tl.zeros((BLOCK_C, KP), dtype=tl.float32)
    acc_a = tl.zeros((BLOCK_T, BLOCK_C), dtype=tl.float32)  # summed over rows once, at the end
    acc_c = tl.zeros((BLOCK_T, BLOCK_C), dtype=tl.float32)
    for t0 in range(start, tl.minimum(start + CHUNK, T), BLOCK_T):
        rows = t0 + tl.arange(0, BLOCK_T)
        inside = (rows < T)[:, None] & cmask[None, :]
        taps = _taps(wave_ptr, b, rows, S, T, STRIDE, K, KP)
        y = tl.dot(taps, wt, input_precision=PREC)
        if PER_FRAME:
            xhat, rstd_rows = _frame_norm(y, cmask, C, EPS)
        else:
            xhat = tl.where(inside, (y - mean[None, :]) * rstd[None, :], 0.0)
        gy = tl.load(gy_ptr + (b * T + rows)[:, None] * C + ch[None, :], mask=inside, other=0.0).to(tl.float32)
        du = tl.where(inside, gy * _gelu_grad(xhat * gamma[None, :] + beta[None, :]), 0.0)
        acc_a += du * xhat
        if PER_FRAME:
            acc_c += du
            dxhat = du * gamma[None, :]
            m1 = tl.sum(dxhat, 1) / C
            m2 = tl.sum(dxhat * xhat, 1) / C
            dy = tl.where(inside, rstd_rows[:, None] * (dxhat - m1[:, None] - xhat * m2[:, None]), 0.0)
            acc_dw += tl.dot(tl.trans(dy), taps, input_precision=PREC)
        else:
            acc_dw += tl.dot(tl.trans(du), taps, input_precision=PREC)
            acc_q += tl.dot(tl.trans(xhat), taps, input_precision=PREC)
    tl.store(dw_ptr + (pid * C + ch)[:, None] * KP + kk[None, :], acc_dw, mask=cmask[:, None])
    tl.store(a_ptr + pid * C + ch, tl.sum(acc_a, 0), mask=cmask)
    if PER_FRAME:
        tl.store(c_ptr + pid * C + ch, tl.sum(acc_c, 0), mask=cmask)
    else:
        tl.store(q_ptr + (pid * C + ch)[:, None] * KP + kk[None, :], acc_q, mask=cmask[:, None])


def _channel_block(c: int, per_frame: bool) -> int:
    """Channels per program: all of them where each frame is normalised over its channels."""
    return pow2_block(c) if per_frame else min(128, pow2_block(c))


def _packed(weight: Tensor, bias: Tensor | None) -> Tensor:
    """(KP, C) fp32: the conv weight's taps as rows, then the bias (0 without one), then zeros:
    the right side of each tile's product with `_taps`."""
    c, k = weight.shape
    wt = weight.new_zeros(pow2_block(k + 1), c, dtype=torch.float32)
    wt[:k] = weight.t()
    if bias is not None:
        wt[k] = bias
    return wt


def _precision() -> str:
    """The tiles' products on tensor cores (tf32 inputs, fp32 sums: finer than the bf16 product
    they replace); the interpreter computes in fp32."""
    return "ieee" if interpreted() else "tf32"


def _group_stats(wave: Tensor, wt: Tensor, k: int, stride: int, frames: int, eps: float,
                 block_c: int) -> tuple[Tensor, Tensor]:
    """Per (utterance, channel) mean and 1/std of the conv output over its frames, fp32 (b, C):
    each chunk's pair from the kernel, merged here (Chan et al.'s parallel variance)."""
    from torch.library import wrap_triton

    b, s = wave.shape
    kp, c = wt.shape
    chunks = triton.cdiv(frames, CHUNK)
    means = torch.empty(b * chunks, c, device=wave.device, dtype=torch.float32)
    m2s = torch.empty_like(means)
    wrap_triton(_stats_kernel)[(b * chunks, triton.cdiv(c, block_c))](
        wave, wt, means, m2s, s, frames, c, stride, CHUNK, K=k, KP=kp, PREC=_precision(), BLOCK_C=block_c)
    counts = (frames - torch.arange(chunks, device=wave.device) * CHUNK).clamp(max=CHUNK).float()[None, :, None]
    means, m2s = means.view(b, chunks, c), m2s.view(b, chunks, c)
    mean = (means * counts).sum(1) / frames
    m2 = m2s.sum(1) + ((means - mean[:, None]).square() * counts).sum(1)
    return mean, torch.rsqrt(m2 / frames + eps)


def register() -> None:
    """Register the kernels as Triton custom ops, which torch.compile keeps in its graphs:
    ``torch.ops.w2v.first_conv_layer(wave, weight, bias, norm_weight, norm_bias, stride, per_frame,
    eps, dtype)`` -> (output (b, frames, C) in ``dtype``, mean, rstd) and
    ``torch.ops.w2v.first_conv_layer_backward(grad, wave, weight, bias, norm_weight, norm_bias, mean,
    rstd, stride, per_frame, eps)`` -> fp32 gradients of (weight, bias, norm_weight, norm_bias).
    ``wave`` is (b, samples), ``weight`` (C, k) (the Conv1d weight of one input channel), ``bias``
    None for a conv without; ``per_frame`` layer norm, else group norm (mean and rstd (b, C),
    empty for layer norm). Once per process, before a model that uses them is traced."""
    if hasattr(torch.ops.w2v, "first_conv_layer"):
        return
    from torch.library import triton_op, wrap_triton

    @triton_op("w2v::first_conv_layer", mutates_args={})
    def _forward(wave: Tensor, weight: Tensor, bias: Tensor | None, norm_weight: Tensor, norm_bias: Tensor,
                 stride: int, per_frame: bool, eps: float, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
        wave = wave.contiguous()
        b, s = wave.shape
        c, k = weight.shape
        wt = _packed(weight, bias)
        frames = max(0, (s - k) // stride + 1)
        block_c = _channel_block(c, per_frame)
        if per_frame:
            mean, rstd = wave.new_empty(0, dtype=torch.float32), wave.new_empty(0, dtype=torch.float32)
        else:
            mean, rstd = _group_stats(wave, wt, k, stride, frames, eps, block_c)
        y = torch.empty(b, frames, c, device=wave.device, dtype=dtype)
        wrap_triton(_forward_kernel)[(b * triton.cdiv(frames, CHUNK), triton.cdiv(c, block_c))](
            wave, wt, norm_weight, norm_bias, mean, rstd, y, s, frames, c, stride, CHUNK, eps, K=k, KP=wt.shape[0],
            PREC=_precision(), PER_FRAME=per_frame, BLOCK_C=block_c)
        return y, mean, rstd

    @triton_op("w2v::first_conv_layer_backward", mutates_args={})
    def _backward(grad: Tensor, wave: Tensor, weight: Tensor, bias: Tensor | None, norm_weight: Tensor,
                  norm_bias: Tensor, mean: Tensor, rstd: Tensor, stride: int, per_frame: bool,
                  eps: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        grad, wave = grad.contiguous(), wave.contiguous()
        b, s = wave.shape
        c, k = weight.shape
        wt = _packed(weight, bias)
        kp = wt.shape[0]
        frames = grad.shape[1]
        block_c = _channel_block(c, per_frame)
        chunks = triton.cdiv(frames, CHUNK)
        f32 = dict(device=wave.device, dtype=torch.float32)
        dw = torch.empty(b * chunks, c, kp, **f32)
        q = torch.empty(b * chunks, c, kp, **f32) if not per_frame else dw.new_empty(0)
        a, cc = torch.empty(b * chunks, c, **f32), torch.empty(b * chunks, c, **f32)
        wrap_triton(_backward_kernel)[(b * chunks, triton.cdiv(c, block_c))](
            wave, wt, norm_weight, norm_bias, mean, rstd, grad, dw, q, a, cc, s, frames, c, stride, CHUNK, eps,
            K=k, KP=kp, PREC=_precision(), PER_FRAME=per_frame, BLOCK_C=block_c)
        if per_frame:
            total, d_norm_weight, d_norm_bias = dw.sum(0), a.sum(0), cc.sum(0)
        else:
            p, q = dw.view(b, chunks, c, kp).sum(1), q.view(b, chunks, c, kp).sum(1)
            s2 = a.view(b, chunks, c).sum(1)
            total = _group_weight_grad(wave, k, stride, frames, p, q, s2, rstd, norm_weight)
            d_norm_weight, d_norm_bias = s2.sum(0), p[..., k].sum(0)
        return total[:, :k].contiguous(), total[:, k].contiguous(), d_norm_weight, d_norm_bias


def _group_weight_grad(wave: Tensor, k: int, stride: int, frames: int, p: Tensor, q: Tensor, s2: Tensor,
                       rstd: Tensor, norm_weight: Tensor) -> Tensor:
    """The packed weight's gradient (C, KP) under group norm, from the backward kernel's sums per
    utterance: p = sum_t du (x) taps, q = sum_t xhat (x) taps (b, C, KP), s2 = sum_t du * xhat (b, C).
    Group norm's input gradient is dy = rstd * gamma * (du - mean_t du - xhat * mean_t(du * xhat));
    summed against the taps: rstd * gamma * (p - mean_t(du) * m - mean_t(du * xhat) * q), with
    m = sum_t taps per utterance (p's bias column is sum_t du). The conv bias' column comes out 0:
    the norm removes a constant."""
    b, kp = p.shape[0], p.shape[-1]
    m = torch.zeros(b, kp, device=p.device, dtype=torch.float32)
    if frames:
        m[:, :k] = wave[:, :(frames - 1) * stride + k].unfold(1, k, stride).sum(1, dtype=torch.float64).float()
        m[:, k] = frames
    s1 = p[..., k]
    dy_taps = p - (s1 / frames)[..., None] * m[:, None, :] - (s2 / frames)[..., None] * q
    return ((rstd * norm_weight.float())[..., None] * dy_taps).sum(0)
