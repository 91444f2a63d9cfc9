"""Building blocks of wav2vec 2.0 (Baevski et al. 2020, section 2).

Feature encoder (7 strided convolutions over the raw waveform), feature projection,
convolutional relative positional embedding and the Transformer context network, each its
own module so that wav2vec 1.0 / vq-wav2vec / wav2vec 2.0 can be assembled from the same
parts. Attribute names mirror Hugging Face's `modeling_wav2vec2.py` so that checkpoint
import is a rename table; the arithmetic (order of layer norms, residuals, dropouts)
matches fairseq and Hugging Face exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm
from torch.utils.checkpoint import checkpoint

from w2v.models.adapters import AttnAdapterLayer


class GradMultiply(torch.autograd.Function):
    """Identity forward, gradient scaled by `scale` backward (fairseq's feature_grad_mult)."""

    @staticmethod
    def forward(ctx, x: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        return grad * ctx.scale, None


def _activation(name: str) -> nn.Module:
    table = {"gelu": nn.GELU, "relu": nn.ReLU, "gelu_new": lambda: nn.GELU(approximate="tanh"), "swish": nn.SiLU}
    if name not in table:
        raise ValueError(f"unsupported activation_fn {name!r}; known: {sorted(table)}")
    return table[name]()


def conv_output_lengths(lengths: Tensor, layers: Sequence[tuple[int, int, int]]) -> Tensor:
    """Frames produced from `lengths` samples by unpadded strided convolutions.

    Each layer maps L -> floor((L - kernel) / stride) + 1; inputs shorter than the
    receptive field give 0 frames (never negative).
    """
    out = lengths.long()
    for _, kernel, stride in layers:
        out = torch.div(out - kernel, stride, rounding_mode="floor") + 1
        out = out.clamp(min=0)
    return out


def frame_lengths_on(features: Tensor, frame_lengths: Tensor | None) -> Tensor:
    """(batch,) frame lengths on `features`' device: every frame when None (unpadded). The copy of
    CPU lengths does not block: a small host-to-device copy is staged at once, and a blocking one
    would wait for the whole conv encoder (the GPU then idles while the host catches up)."""
    if frame_lengths is None:
        return torch.full((features.shape[0],), features.shape[1], dtype=torch.long, device=features.device)
    return frame_lengths.to(features.device, non_blocking=True)


def lengths_to_padding_mask(lengths: Tensor, max_len: int) -> Tensor:
    """(batch,) lengths -> (batch, max_len) bool, True at padding."""
    return torch.arange(max_len, device=lengths.device)[None, :] >= lengths[:, None]


class _ConvLayer(nn.Module):
    """Conv1d -> optional norm -> activation; `norm` is "group" (per-channel over time), "layer"
    (over channels, per frame), "group1" (one group: over channels and time, wav2vec 1.0) or None."""

    def __init__(self, in_dim: int, out_dim: int, kernel: int, stride: int, bias: bool, norm: str | None,
                 activation: str = "gelu"):
        super().__init__()
        self.conv = nn.Conv1d(in_dim, out_dim, kernel, stride=stride, bias=bias)
        self.norm_kind = norm
        if norm == "group":
            # One group per channel: normalises each channel over the whole (padded) time
            # axis, so this layer is not padding-invariant (same as fairseq/HF BASE).
            self.layer_norm = nn.GroupNorm(out_dim, out_dim, affine=True)
        elif norm == "group1":
            self.layer_norm = nn.GroupNorm(1, out_dim, affine=True)
        elif norm == "layer":
            self.layer_norm = nn.LayerNorm(out_dim, elementwise_affine=True)
        self.activation = _activation(activation)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        dtype = x.dtype
        if self.norm_kind in ("group", "group1"):
            x = self.layer_norm(x)
        elif self.norm_kind == "layer":
            x = self.layer_norm(x.transpose(1, 2)).transpose(1, 2)
        return self.activation(x).to(dtype)


def _matmul_taps(kernel: int, stride: int) -> list[int] | None:
    """A kernel as groups of taps, one group per input stride: whole strides, then at most a
    single extra tap (10/5 -> [5, 5], 3/2 -> [2, 1], 2/2 -> [2]); None for other shapes."""
    groups = [stride] * (kernel // stride) + ([1] if kernel % stride == 1 else [])
    return groups if sum(groups) == kernel and groups else None


def _matmul_layer(layer: "_ConvLayer", x: Tensor, use_triton: bool = False, strided: bool = True) -> Tensor:
    """One `_ConvLayer` on channels-last input (batch, time, C_in) -> (batch, frames, C_out).

    Output frame t reads input frames [t*s, t*s + k). Group j of the kernel's taps (`_matmul_taps`)
    reads s frames starting at (t + j)*s, which for all t is a reshape of a contiguous slice
    (s*C_in features per frame), or one frame, a strided slice. The convolution is then a
    sum of matrix products with the matching slices of the weight; no unfold, no transposes.
    Without autograd (and ``strided``) the reshaped slice is taken as a strided view of the input
    instead, which inductor does not copy. A layer with few input values per frame (the first)
    is one product over its copied windows instead (`_few_taps_layer`).
    """
    conv = layer.conv
    kernel, stride = conv.kernel_size[0], conv.stride[0]
    b, t_in, c_in = x.shape
    # a branch, not max(0, ...): under dynamic shapes seven nested symbolic maxima made inductor's
    # sympy simplification run for minutes (a compiled decode of batches of several lengths)
    frames = 0 if t_in < kernel else (t_in - kernel) // stride + 1
    if c_in * kernel <= _FEW_TAPS:
        return _few_taps_layer(layer, x, frames, use_triton)
    weight = conv.weight  # (C_out, C_in, k)
    out = None
    start = 0
    strided = strided and not torch.is_grad_enabled() and x.stride(2) == 1 and x.stride(1) == c_in
    for j, taps in enumerate(_matmul_taps(kernel, stride)):
        first = j * stride
        if taps == stride and strided:
            # Without autograd (``strided``), the same windows as a strided view: inductor copied
            # the sliced reshape's input out whenever its length was odd (LARGE-LV60 inference:
            # 0.5 ms of 26 a step on an H100)
            window = x[:, first:].as_strided((b, frames, stride * c_in), (x.stride(0), stride * c_in, 1))
        elif taps == stride:
            window = x[:, first:first + frames * stride].reshape(b, frames, stride * c_in)
        else:  # one tap
            window = x[:, first:first + (frames - 1) * stride + 1:stride] if frames else x[:, :0]
        w = weight[:, :, start:start + taps].transpose(1, 2).reshape(weight.shape[0], taps * c_in)
        if out is None:  # the bias in the first product's epilogue: under autocast the sum stays bf16
            out = F.linear(window, w, conv.bias)
        else:
            out = out + F.linear(window, w)
        start += taps
    return _norm_and_activation(layer, out)


# A first layer (one input channel, a kernel of 10) is two tap groups of 5: two matrix products of
# reduction 5, each output written and read back to be added (8 x 50k x 512 values per BASE batch).
# Its windows copied out (10 values per frame) make it one product.
_FEW_TAPS = 16


def _few_taps_layer(layer: "_ConvLayer", x: Tensor, frames: int, use_triton: bool = False) -> Tensor:
    """`_matmul_layer` for layers with at most `_FEW_TAPS` input values per output frame: one
    matrix product over the copied windows (batch, frames, C_in * k). With ``use_triton``, a
    first layer with a norm and GELU under half-precision autocast on a GPU runs as the fused
    kernels of `w2v.models.triton_first_layer` (`_FusedFirstLayer`) instead."""
    conv = layer.conv
    kernel, stride = conv.kernel_size[0], conv.stride[0]
    b, _, c_in = x.shape
    if (use_triton and x.is_cuda and c_in == 1 and torch.is_autocast_enabled("cuda")
            and layer.norm_kind in ("group", "layer") and _exact_gelu(layer.activation)):
        dtype = torch.get_autocast_dtype("cuda")
        if dtype in (torch.float16, torch.bfloat16):
            norm = layer.layer_norm
            return _FusedFirstLayer.apply(x[..., 0], conv.weight[:, 0], conv.bias, norm.weight, norm.bias, stride,
                                          layer.norm_kind == "layer", norm.eps, dtype)
    if frames:
        windows = x[:, :(frames - 1) * stride + kernel].unfold(1, kernel, stride)  # (b, frames, C_in, k) view
    else:
        windows = x.new_zeros(b, 0, c_in, kernel)
    out = F.linear(windows.reshape(b, frames, c_in * kernel), conv.weight.reshape(conv.weight.shape[0], -1), conv.bias)
    return _norm_and_activation(layer, out)


def _exact_gelu(activation: nn.Module) -> bool:
    return isinstance(activation, nn.GELU) and activation.approximate == "none"


class _FusedFirstLayer(torch.autograd.Function):
    """A first conv layer (one input channel) with its norm and GELU as the Triton kernels of
    `w2v.models.triton_first_layer`: the output in ``dtype``, gradients for the conv weight and
    bias and the norm's weight and bias (none for the waveform)."""

    @staticmethod
    def forward(ctx, wave: Tensor, weight: Tensor, bias: Tensor | None, norm_weight: Tensor, norm_bias: Tensor,
                stride: int, per_frame: bool, eps: float, dtype: torch.dtype) -> Tensor:
        y, mean, rstd = torch.ops.w2v.first_conv_layer(wave, weight, bias, norm_weight, norm_bias, stride, per_frame,
                                                       eps, dtype)
        ctx.save_for_backward(wave, weight, bias, norm_weight, norm_bias, mean, rstd)
        ctx.stride, ctx.per_frame, ctx.eps = stride, per_frame, eps
        return y

    @staticmethod
    def backward(ctx, grad: Tensor):
        wave, weight, bias, norm_weight, norm_bias, mean, rstd = ctx.saved_tensors
        grads = torch.ops.w2v.first_conv_layer_backward(grad, wave, weight, bias, norm_weight, norm_bias, mean, rstd,
                                                        ctx.stride, ctx.per_frame, ctx.eps)
        d_weight, d_bias, d_norm_weight, d_norm_bias = (g.to(p.dtype) if p is not None else None for g, p in
                                                        zip(grads, (weight, bias, norm_weight, norm_bias)))
        return None, d_weight, d_bias, d_norm_weight, d_norm_bias, None, None, None, None


def _norm_and_activation(layer: "_ConvLayer", out: Tensor) -> Tensor:
    """The norm (channels-last) and activation of `layer` on its conv output."""
    if layer.norm_kind in ("group", "group1"):
        # GroupNorm channels-last: per channel over time ("group") or over both ("group1"),
        # in at least fp32 (as GroupNorm under autocast)
        dims = (1,) if layer.norm_kind == "group" else (1, 2)
        y = out.float() if out.dtype in (torch.float16, torch.bfloat16) else out
        mean = y.mean(dims, keepdim=True)
        var = (y - mean).square().mean(dims, keepdim=True)
        out = ((y - mean) * torch.rsqrt(var + layer.layer_norm.eps) * layer.layer_norm.weight.to(y.dtype)
               + layer.layer_norm.bias.to(y.dtype)).to(out.dtype)
    elif layer.norm_kind == "layer":
        # autocast runs LayerNorm in fp32; the next convolution reads bf16 anyway, so the
        # activation's output is cast back here: one fused norm-GELU-cast kernel writes half the
        # bytes, and the next layer's tap slices read it without fp32 copies (LARGE-LV60, XLS-R)
        return layer.activation(layer.layer_norm(out)).to(out.dtype)
    return layer.activation(out)


class ConvFeatureEncoder(nn.Module):
    """Raw waveform -> latent speech representations z (paper's feature encoder f: X -> Z).

    Args:
        layers: (dim, kernel, stride) per convolution.
        mode: "default" (group norm in the first layer only, BASE/LARGE), "layer_norm"
            (layer norm in every layer, LARGE-LV60/XLS-R) or "wav2vec1" (single-group norm
            over channels and time and ReLU in every layer, Schneider et al. 2019).
        bias: whether the convolutions have a bias.
    """

    def __init__(self, layers: Sequence[tuple[int, int, int]], mode: str = "default", bias: bool = False):
        super().__init__()
        if mode not in ("default", "layer_norm", "wav2vec1"):
            raise ValueError(f"unknown extractor_mode {mode!r}")
        self.layers_spec = tuple(tuple(layer) for layer in layers)
        blocks = []
        in_dim = 1
        for i, (dim, kernel, stride) in enumerate(self.layers_spec):
            if mode == "wav2vec1":
                blocks.append(_ConvLayer(in_dim, dim, kernel, stride, bias, "group1", "relu"))
            else:
                norm = "layer" if mode == "layer_norm" else ("group" if i == 0 else None)
                blocks.append(_ConvLayer(in_dim, dim, kernel, stride, bias, norm))
            in_dim = dim
        self.conv_layers = nn.ModuleList(blocks)
        self.matmul = False  # channels-last matrix products instead of Conv1d (accel.use_matmul_convolutions)
        self.triton = False  # ... the first layer as fused Triton kernels on a GPU (accel.use_triton_first_layer)
        self.strided_windows = True  # ... without autograd, the windows as strided views (`_matmul_layer`)
        # ... in forwards with autograd too for a first layer with one of these norms
        self.triton_training_norms: tuple[str, ...] = ("group", "layer")

    @property
    def receptive_field(self) -> int:
        rf = 1
        for _, kernel, stride in reversed(self.layers_spec):
            rf = (rf - 1) * stride + kernel
        return rf

    @property
    def stride(self) -> int:
        return math.prod(stride for _, _, stride in self.layers_spec)

    def output_lengths(self, lengths: Tensor) -> Tensor:
        """(batch,) sample counts -> (batch,) frame counts."""
        return conv_output_lengths(lengths, self.layers_spec)

    def forward(self, waveforms: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """
        Args:
            waveforms: (batch, samples).
            lengths: (batch,) valid samples per utterance, or None when unpadded.

        Returns:
            features (batch, frames, channels) and (batch,) frame lengths (None if `lengths` is).
            Frames past an utterance's length are computed from padding and must be masked
            by the caller.
        """
        if waveforms.dim() != 2:
            raise ValueError(f"waveforms must be (batch, samples), got {tuple(waveforms.shape)}")
        x = self.convolve(waveforms)
        frame_lengths = None if lengths is None else self.output_lengths(lengths)
        return x, frame_lengths

    def uses_triton(self, layer: "_ConvLayer") -> bool:
        """Whether `layer` asks for the fused Triton kernels (the first layer takes them where
        they apply, `_few_taps_layer`): switched on, and either without autograd or with one of
        ``triton_training_norms``."""
        return self.triton and (not torch.is_grad_enabled() or layer.norm_kind in self.triton_training_norms)

    def convolve(self, waveforms: Tensor) -> Tensor:
        """(batch, samples) -> (batch, frames, channels): the layers alone, one graph for
        `torch.compile` (`w2v.models.accel`). With `matmul` set (and every layer's kernel
        made of whole strides plus at most one tap, as in every wav2vec encoder), the same
        convolutions run channels-last as matrix products (`_matmul_layer`)."""
        if self.matmul and all(_matmul_taps(k, s) for _, k, s in self.layers_spec):
            x = waveforms.unsqueeze(-1)
            for layer in self.conv_layers:
                x = _matmul_layer(layer, x, self.uses_triton(layer), self.strided_windows)
            return x
        x = waveforms.unsqueeze(1)
        for layer in self.conv_layers:
            x = layer(x)
        return x.transpose(1, 2)


def conv_feature_encoder(model: nn.Module) -> ConvFeatureEncoder | None:
    """The conv feature encoder inside ``model``, any family (``wav2vec2.feature_extractor`` of
    wav2vec 2.0 and HuBERT, ``upstream.wav2vec.feature_extractor.conv`` of a wav2vec 1.0 CTC
    model, ...), or None if it has none."""
    return next((m for m in model.modules() if isinstance(m, ConvFeatureEncoder)), None)


def padding_invariant(model: nn.Module) -> bool:
    """Whether ``model`` (any family) gives an utterance the same outputs alone as in a batch
    padded to a longer one.

    Group norm normalises over the time axis, padded frames included, so a model with one is
    not: wav2vec 1.0 and vq-wav2vec (norm "group1" in every conv layer, and group norm in their
    context network and k-means projection) and wav2vec 2.0 / HuBERT BASE-style encoders
    (``extractor_mode: default``, norm "group" in the first conv layer). Layer norm
    (``layer_norm`` mode, LARGE-LV60/XLS-R) is per frame and the Transformer masks padding.
    """
    return not any(isinstance(m, nn.GroupNorm) for m in model.modules())


def padding_hop(model: nn.Module) -> int:
    """The multiple of samples to pad a batch of ``model``'s to when it is padded anyway: for a
    padding-invariant model, a whole hop of its conv encoder (20 ms for wav2vec 2.0; the model
    masks the extra padding), so that every conv layer sees lengths of one parity and a compiled
    model keeps one graph of dynamic shapes for batches of every length, where each new pattern of
    odd and even lengths through the layers compiled the conv stack again; 1 for others (group
    norm over time would see the extra padding) and for models without a conv encoder."""
    encoder = conv_feature_encoder(model)
    return encoder.stride if encoder is not None and padding_invariant(model) else 1


class FeatureProjection(nn.Module):
    """LayerNorm(C) -> Linear(C, D) -> Dropout. Returns (projected, normalised conv features):
    the normalised features are the quantizer's input (fairseq `unmasked_features`)."""

    def __init__(self, in_dim: int, out_dim: int, dropout: float):
        super().__init__()
        self.layer_norm = nn.LayerNorm(in_dim, eps=1e-5)
        self.projection = nn.Linear(in_dim, out_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        normed = self.layer_norm(features)
        return self.dropout(self.projection(normed)), normed


def _tap_windows(x: Tensor, kernel: int, left: int, groups: int) -> Tensor:
    """(batch, frames, C) -> (batch * frames, groups, kernel * C/groups): for output frame t the
    input frames t - left .. t - left + kernel - 1 (zero outside), each group's taps contiguous
    and ordered (tap, channel), so that the copy reads whole channel rows."""
    b, t, c = x.shape
    xp = F.pad(x, (0, 0, left, kernel - 1 - left))
    win = xp.unfold(1, kernel, 1)  # (b, t, C, k), a view
    return win.reshape(b, t, groups, c // groups, kernel).transpose(-1, -2).reshape(b * t, groups, -1)


def _window_conv(x: Tensor, weight: Tensor, left: int) -> Tensor:
    """Grouped stride-1 convolution with `left` frames of zero padding on the left and
    kernel - 1 - left on the right (as many frames out as in), channels-last: x (batch, frames,
    C), weight (C, C/groups, k) in Conv1d's layout. One batched matrix product over the groups:
    (groups, batch*frames, k*C/g) @ (groups, k*C/g, C/g)."""
    b, t, c = x.shape
    cg, k = weight.shape[1], weight.shape[2]
    g = c // cg
    win = _tap_windows(x, k, left, g).transpose(0, 1)  # (g, M, k*cg), strided batches
    w = weight.reshape(g, cg, cg, k).transpose(2, 3).reshape(g, cg, k * cg)  # (g, out, k*in)
    return torch.bmm(win, w.transpose(1, 2)).transpose(0, 1).reshape(b, t, c)


def _window_conv_op(use_triton: bool):
    """`_window_conv`, or the Triton op computing the same (`w2v.models.triton_conv`)."""
    return torch.ops.w2v.window_conv if use_triton else _window_conv


class _GroupedConvAsMatmul(torch.autograd.Function):
    """`_window_conv` with a backward of the same kind: the input gradient is the same
    convolution of the output gradient with the kernel flipped, each group's in and out
    swapped and the padding mirrored; the weight gradient one batched product of the windows
    (recomputed, not kept: k times the input's memory) with the output gradient. (PyTorch's own
    backward of `unfold`, a scatter over overlapping windows, is what makes plain im2col slow.)
    With ``use_triton`` the same three products run as Triton kernels that read the taps from
    the input instead of copying the windows out (`w2v.models.triton_conv`)."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, left: int, use_triton: bool = False) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.left = left
        ctx.use_triton = use_triton
        return _window_conv_op(use_triton)(x, weight, left)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None, None]:
        x, weight = ctx.saved_tensors
        cg, k = weight.shape[1], weight.shape[2]
        g = weight.shape[0] // cg
        grad = grad.contiguous()
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            flipped = weight.reshape(g, cg, cg, k).transpose(1, 2).flip(-1).reshape(g * cg, cg, k)
            grad_x = _window_conv_op(ctx.use_triton)(grad, flipped, k - 1 - ctx.left)
        if ctx.needs_input_grad[1]:
            if ctx.use_triton:
                grad_w = torch.ops.w2v.window_conv_weight_grad(x, grad, g, k, ctx.left).to(weight.dtype)
            else:
                win = _tap_windows(x, k, ctx.left, g).transpose(0, 1)  # (g, M, k*cg)
                gy = grad.reshape(-1, g, cg).transpose(0, 1)  # (g, M, cg)
                grad_w = torch.bmm(gy.transpose(1, 2), win).reshape(g, cg, k, cg).transpose(2, 3).reshape(weight.shape)
        return grad_x, grad_w, None, None


class ConvPositionalEmbedding(nn.Module):
    """Relative positional information from a wide grouped convolution (paper section 2).

    Weight-normalised along the kernel axis (dim=2), as fairseq and HF, so imported
    checkpoints map `weight_g`/`weight_v` to `parametrizations.weight.original0/1`.
    """

    def __init__(self, dim: int, kernel: int, groups: int, dropout: float = 0.0):
        super().__init__()
        conv = nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=groups)
        # fairseq's init: the variance keeps the residual branch's scale (assumes dropout).
        nn.init.normal_(conv.weight, mean=0.0, std=math.sqrt(4.0 * (1.0 - dropout) / (kernel * dim)))
        nn.init.zeros_(conv.bias)
        self.conv = weight_norm(conv, name="weight", dim=2)
        # An even kernel with padding k//2 yields one extra frame; drop the last.
        self.num_pad_remove = 1 if kernel % 2 == 0 else 0
        self.activation = nn.GELU()
        # Batched matrix products over tap windows (`_GroupedConvAsMatmul`) instead of cuDNN's
        # grouped convolution (accel.use_matmul_convolutions); on a GPU in half precision those
        # products as Triton kernels without the windows (accel.use_triton_positional_conv), in
        # forwards without autograd unless triton_training is set too
        self.matmul = False
        self.triton = False
        self.triton_training = False

    # On CUDA, groups whose width is not a multiple of 64 channels are zero-padded to one:
    # cuDNN's grouped kernels for BASE's 48 channels per group took 15.7 ms forward + backward
    # on an H100 at 8 x 15.6 s, the padded 64-channel groups 3.3 ms (1.8x the FLOPs).
    pad_groups_on_cuda = True

    def forward(self, x: Tensor) -> Tensor:
        """(batch, frames, dim) -> (batch, frames, dim) positional term to add to x."""
        if self.matmul:
            return self.activation(self.as_matmul(x))
        width = x.shape[-1] // self.conv.groups
        if x.is_cuda and self.pad_groups_on_cuda and width % 64:
            return self.activation(self._padded_groups(x, -(-width // 64) * 64))
        y = self.conv(x.transpose(1, 2))
        if self.num_pad_remove:
            y = y[:, :, : -self.num_pad_remove]
        return self.activation(y).transpose(1, 2)

    def normalized_weight(self) -> Tensor:
        """g * v / ||v||, the norm over all but the kernel axis: what the parametrization
        computes, as plain reductions (its fused CUDA kernel for dim=2 took 0.85 ms forward +
        backward per BASE step on an H100)."""
        p = self.conv.parametrizations.weight
        g, v = p.original0, p.original1
        wide = v.float() if v.dtype in (torch.float16, torch.bfloat16) else v
        return v * (g / wide.square().sum((0, 1), keepdim=True).sqrt().to(v.dtype))

    def uses_triton(self, on_cuda: bool, dtype: torch.dtype) -> bool:
        """Whether `as_matmul` runs the Triton kernels: switched on, on a GPU, in half precision,
        and either without autograd (inference, validation) or with ``triton_training`` set."""
        return bool(self.triton and on_cuda and dtype in (torch.bfloat16, torch.float16)
                    and (self.triton_training or not torch.is_grad_enabled()))

    def as_matmul(self, x: Tensor) -> Tensor:
        """The convolution as `_GroupedConvAsMatmul` (as many frames out as in: the extra frame
        of an even kernel is never computed), in autocast's dtype where autocast is on."""
        kind = x.device.type
        dtype = torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else x.dtype
        with torch.autocast(kind, enabled=False):
            y = _GroupedConvAsMatmul.apply(x.to(dtype), self.normalized_weight().to(dtype), self.conv.padding[0],
                                           self.uses_triton(x.is_cuda, dtype))
            return y + self.conv.bias.to(dtype)

    def _padded_groups(self, x: Tensor, padded: int) -> Tensor:
        """The same convolution with every group zero-padded to `padded` channels (in and out)."""
        conv = self.conv
        b, t, d = x.shape
        g, k = conv.groups, conv.kernel_size[0]
        cg = d // g
        extra = padded - cg
        weight = F.pad(self.normalized_weight().view(g, cg, cg, k), (0, 0, 0, extra, 0, extra))
        weight = weight.reshape(g * padded, padded, k)
        bias = F.pad(conv.bias.view(g, cg), (0, extra)).reshape(-1)
        xp = F.pad(x.view(b, t, g, cg), (0, extra)).reshape(b, t, g * padded).transpose(1, 2)
        y = F.conv1d(xp, weight, bias, padding=conv.padding, groups=g)[:, :, : t + 2 * conv.padding[0] - k + 1
                                                                       - self.num_pad_remove]
        return y.reshape(b, g, padded, -1)[:, :, :cg].reshape(b, d, -1).transpose(1, 2)


class SelfAttention(nn.Module):
    """Multi-head self-attention through `scaled_dot_product_attention`.

    Padded keys are masked with a boolean mask, so their weight is exactly zero. With `fused_qkv`
    set (`accel.use_fused_qkv`), the query, key and value projections run as one product over
    their stacked weights (the parameters stay three ``nn.Linear``): one pass over the input
    instead of three, and one wider product.
    """

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.dropout = dropout
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.q_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        self.fused_qkv = False

    def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        """x (batch, frames, dim); attn_mask (batch, 1, 1, frames) bool, True = attend."""
        b, t, d = x.shape

        def heads(y: Tensor) -> Tensor:
            return y.view(b, t, self.heads, self.head_dim).transpose(1, 2)

        if self.fused_qkv:
            projections = (self.q_proj, self.k_proj, self.v_proj)
            qkv = F.linear(x, torch.cat([p.weight for p in projections]), torch.cat([p.bias for p in projections]))
            q, k, v = (heads(y) for y in qkv.split(d, dim=-1))
        else:
            q, k, v = heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x))
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
        )
        return self.out_proj(y.transpose(1, 2).reshape(b, t, d))


class FeedForward(nn.Module):
    """The Transformer block's position-wise feed-forward network.

    With `gelu_epilogue` set (`accel.use_gelu_epilogue`; GELU activations only), a forward on a
    GPU without autograd computes the first product, its bias and the GELU as one cuBLASLt call
    (`torch._addmm_activation`), in the dtype autocast gives the product: the product's output is
    written once, instead of written, read back and written again by a separate GELU pass.
    cuBLASLt's GELU is the tanh form, which is `gelu_new`'s own and within 5e-4 of the erf
    form's everywhere; training and CPU forwards keep the module's own activation.
    """

    def __init__(self, dim: int, ffn_dim: int, activation: str, activation_dropout: float, dropout: float):
        super().__init__()
        self.intermediate_dense = nn.Linear(dim, ffn_dim)
        self.intermediate_act_fn = _activation(activation)
        self.intermediate_dropout = nn.Dropout(activation_dropout)
        self.output_dense = nn.Linear(ffn_dim, dim)
        self.output_dropout = nn.Dropout(dropout)
        self.gelu_epilogue = False

    def forward(self, x: Tensor) -> Tensor:
        if self.gelu_epilogue and x.is_cuda and not torch.is_grad_enabled():
            h = _linear_gelu(x, self.intermediate_dense)
        else:
            h = self.intermediate_act_fn(self.intermediate_dense(x))
        return self.output_dropout(self.output_dense(self.intermediate_dropout(h)))


def _linear_gelu(x: Tensor, linear: nn.Linear) -> Tensor:
    """GELU (tanh form) of ``linear(x)`` as one cuBLASLt product with a bias-and-GELU epilogue, in
    the dtype ``linear`` computes in here (autocast's on the GPU when it is on)."""
    dtype = torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled("cuda") else x.dtype
    flat = x.reshape(-1, x.shape[-1]).to(dtype)
    y = torch._addmm_activation(linear.bias.to(dtype), flat, linear.weight.to(dtype).t(), use_gelu=True)
    return y.view(*x.shape[:-1], y.shape[-1])


class TransformerLayer(nn.Module):
    """One block; `layer_norm_first` picks pre-LN (LV60/XLS-R) or post-LN (BASE/LARGE)."""

    def __init__(
        self,
        dim: int,
        ffn_dim: int,
        heads: int,
        dropout: float,
        attention_dropout: float,
        activation_dropout: float,
        activation: str,
        layer_norm_first: bool,
        adapter_dim: int = 0,
    ):
        super().__init__()
        self.layer_norm_first = layer_norm_first
        self.attention = SelfAttention(dim, heads, attention_dropout)
        self.dropout = nn.Dropout(dropout)
        self.layer_norm = nn.LayerNorm(dim, eps=1e-5)
        self.feed_forward = FeedForward(dim, ffn_dim, activation, activation_dropout, dropout)
        self.final_layer_norm = nn.LayerNorm(dim, eps=1e-5)
        # MMS language adapter on the block's output (HF Wav2Vec2EncoderLayerStableLayerNorm,
        # fairseq TransformerSentenceEncoderWithAdapterLayer); absent, it has no state-dict keys.
        self.adapter_layer = AttnAdapterLayer(dim, adapter_dim) if adapter_dim > 0 else None

    def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        if self.layer_norm_first:
            x = x + self.dropout(self.attention(self.layer_norm(x), attn_mask))
            x = x + self.feed_forward(self.final_layer_norm(x))
        else:
            x = self.layer_norm(x + self.dropout(self.attention(x, attn_mask)))
            x = self.final_layer_norm(x + self.feed_forward(x))
        if self.adapter_layer is not None:
            x = x + self.adapter_layer(x)
        return x


DROPPED_BLOCKS = ("skip", "tie", "discard")  # TransformerEncoder.dropped_blocks


def zero_tie(params: list[nn.Parameter]) -> Tensor:
    """A scalar zero that depends on every tensor in `params`: added to an output, it gives each
    of them a gradient of zeros (and changes nothing else), for a few small kernels."""
    return torch.cat([p.reshape(-1)[:1].float() for p in params]).sum() * 0.0


class TransformerEncoder(nn.Module):
    """Context network g: positional conv, layer norm, Transformer blocks with LayerDrop.

    Post-LN (BASE): x + pos_conv(x) -> LayerNorm -> dropout -> layers.
    Pre-LN (LV60):  x + pos_conv(x) -> dropout -> layers -> LayerNorm.
    """

    def __init__(
        self,
        dim: int,
        ffn_dim: int,
        layers: int,
        heads: int,
        conv_pos: int,
        conv_pos_groups: int,
        dropout: float = 0.1,
        attention_dropout: float = 0.1,
        activation_dropout: float = 0.0,
        activation: str = "gelu",
        layer_norm_first: bool = False,
        layerdrop: float = 0.0,
        adapter_dim: int = 0,
    ):
        super().__init__()
        self.layer_norm_first = layer_norm_first
        self.layerdrop = layerdrop
        # Set by the training loop: recompute each block in backward (less memory, ~1/3 more
        # compute), and the generator of LayerDrop's draws (None: torch's global one; FSDP needs
        # every rank to skip the same blocks).
        self.activation_checkpointing = False
        self.layerdrop_generator: torch.Generator | None = None
        # Set by `accel.compile_model`: `run_stack` compiled, all blocks as one graph (one call
        # instead of one per block: the per-call overhead made the step host-bound). What
        # becomes of the blocks LayerDrop drops, `dropped_blocks` (DROPPED_BLOCKS; compile_model
        # and sharding.wrap set it):
        # - "skip": the graph runs the blocks kept, one graph per number of them down to
        #   `max_stack_skips` dropped, and each kept block's own compiled call beyond; the
        #   dropped blocks' parameters get no gradient.
        # - "tie" (DDP, which would otherwise have to search for unused parameters every step):
        #   skipped as "skip" does, and their parameters tied into the output at weight zero, so
        #   each gets a zero gradient and DDP's all-reduce finds every one ready.
        # - "discard": computed in the one graph and their output discarded.
        # The block-by-block path (hidden states, activation checkpointing, no compiled stack)
        # skips them under "skip" and ties them in otherwise. `sharding.wrap` turns "skip" into
        # "tie" under DDP. Under "tie" and "discard" `dropped_layers` names them, and
        # `release_dropped_grads` sets their gradients back to None after the all-reduce, as
        # skipping leaves them.
        self.compiled_stack = None
        self.cuda_graphs = False  # compiled_stack replayed as CUDA graphs (accel.use_stack_cuda_graphs)
        self.autotune = False  # compiled with accel.AUTOTUNE_OPTIONS (compile_model(autotune=True))
        self.dropped_blocks = "skip"
        self.max_stack_skips = 1
        self.dropped_layers: list[int] = []
        self._dropped_this_update: set[int] | None = None  # dropped in every batch so far (release_dropped_grads)
        self.pos_conv_embed = ConvPositionalEmbedding(dim, conv_pos, conv_pos_groups, dropout)
        self.layer_norm = nn.LayerNorm(dim, eps=1e-5)
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            TransformerLayer(
                dim, ffn_dim, heads, dropout, attention_dropout, activation_dropout, activation, layer_norm_first,
                adapter_dim,
            )
            for _ in range(layers)
        )

    def forward(
        self, x: Tensor, padding_mask: Tensor | None = None, output_hidden_states: bool = False
    ) -> tuple[Tensor, list[Tensor] | None]:
        """
        Args:
            x: (batch, frames, dim) projected (and possibly masked) features.
            padding_mask: (batch, frames) bool, True at padding.
            output_hidden_states: also return the hidden states, HF-style: the input of the
                first block, then each block's output (the last one after the final layer
                norm for pre-LN), i.e. `layers + 1` tensors.

        Returns:
            (batch, frames, dim) output and the hidden-state list (or None).
        """
        attn_mask = None
        if padding_mask is not None:
            # Padded frames must not reach the positional convolution: zero them, which is
            # what the conv's own zero padding does at the end of a cropped utterance.
            x = x.masked_fill(padding_mask.unsqueeze(-1), 0.0)
            keep = ~padding_mask
            # An all-padding row (input shorter than the receptive field) would give NaN.
            keep = keep | ~keep.any(dim=1, keepdim=True)
            attn_mask = keep[:, None, None, :]
        x = x + self.pos_conv_embed(x)
        if not self.layer_norm_first:
            x = self.layer_norm(x)
        x = self.dropout(x)
        hidden: list[Tensor] | None = [] if output_hidden_states else None
        checkpointing = self.activation_checkpointing and self.training and torch.is_grad_enabled()
        if self.compiled_stack is not None and hidden is None and not checkpointing:
            x = self._run_compiled(x, attn_mask, self.layerdrop_keeps())
            return (self.layer_norm(x) if self.layer_norm_first else x), None
        dropped = []
        for i, layer in enumerate(self.layers):
            if hidden is not None:
                hidden.append(x)
            if self._layerdrop_skips():
                dropped.append(i)
                continue
            if checkpointing:
                # non-reentrant, and the RNG state is restored for the recomputation: same dropout masks
                x = checkpoint(layer, x, attn_mask, use_reentrant=False, preserve_rng_state=True)
            else:
                x = layer(x, attn_mask)
        # block by block there is nothing to discard: "tie" and "discard" both tie the dropped in
        self.dropped_layers = [] if self.dropped_blocks == "skip" else dropped
        x = self._tie_in(x, self.dropped_layers)
        if self.layer_norm_first:
            x = self.layer_norm(x)
        if hidden is not None:
            hidden.append(x)
        return x, hidden

    def _layerdrop_skips(self) -> bool:
        """One LayerDrop draw: whether the next block is skipped."""
        return self._skips(self.layerdrop_generator)

    def _skips(self, generator: torch.Generator | None) -> bool:
        return self.training and self.layerdrop > 0 and bool(torch.rand((), generator=generator) < self.layerdrop)

    def layerdrop_keeps(self, generator: torch.Generator | None = None) -> list[bool]:
        """A forward's LayerDrop draws, one per block in order: whether it runs. From ``generator``
        when given (e.g. to count the blocks a seed drops), else `layerdrop_generator`."""
        if generator is None:
            return [not self._layerdrop_skips() for _ in self.layers]
        return [not self._skips(generator) for _ in self.layers]

    def _run_compiled(self, x: Tensor, attn_mask: Tensor | None, keeps: list[bool]) -> Tensor:
        """The blocks through `compiled_stack`, LayerDrop's `keeps` (one bool per block) applied
        as `dropped_blocks` says."""
        dropped = [i for i, kept in enumerate(keeps) if not kept]
        self.dropped_layers = [] if self.dropped_blocks == "skip" else dropped
        if not dropped:  # every block: the same graph in each mode
            return self.compiled_stack(x, attn_mask, None)
        if self.dropped_blocks == "discard":
            return self.compiled_stack(x, attn_mask, torch.tensor(keeps).to(x.device, non_blocking=True))
        kept = [layer for layer, k in zip(self.layers, keeps) if k]
        if len(dropped) <= self.max_stack_skips:  # a graph per number of blocks: their parameters are its inputs
            x = self.compiled_stack(x, attn_mask, None, kept)
        else:
            for layer in kept:  # rare (several dropped at once): each block's own compiled call
                x = layer(x, attn_mask)
        return self._tie_in(x, dropped) if self.dropped_blocks == "tie" else x

    def _tie_in(self, x: Tensor, dropped: list[int]) -> Tensor:
        """`x` with the trainable parameters of blocks `dropped` tied in at weight zero (`zero_tie`)."""
        params = [p for i in dropped for p in self.layers[i].parameters() if p.requires_grad]
        return x + zero_tie(params) if params else x

    def run_stack(self, x: Tensor, attn_mask: Tensor | None, keep: Tensor | None,
                  layers: list[nn.Module] | None = None) -> Tensor:
        """Blocks in turn, `layers` (default: all); `keep` (layers,) bool on x's device, None = all: a
        block with keep False passes its input through (its output is discarded, so its gradient
        is zero)."""
        for i, layer in enumerate(self.layers if layers is None else layers):
            y = layer.forward(x, attn_mask)  # .forward: traced here, not each block's own compiled call
            x = y if keep is None else torch.where(keep[i], y, x)
        return x

    def release_dropped_grads(self, update_ends: bool = True) -> None:
        """Gradients of the blocks LayerDrop dropped back to None (what skipping them leaves), so
        that AdamW leaves them untouched this update. Call after each backward; with gradients
        accumulated over several batches, ``update_ends`` False until the update's last: a block
        is released only if it was dropped in every batch of the update (otherwise its gradient
        is what the batches that ran it gave, the others' ties adding zero)."""
        dropped = set(self.dropped_layers)
        if self._dropped_this_update is not None:
            dropped &= self._dropped_this_update
        self.dropped_layers = []
        if not update_ends:
            self._dropped_this_update = dropped
            return
        self._dropped_this_update = None
        for i in sorted(dropped):
            for p in self.layers[i].parameters():
                p.grad = None


def init_bert_params(module: nn.Module) -> None:
    """BERT-style init used by fairseq's TransformerSentenceEncoder and HF: linear N(0, 0.02),
    zero biases, unit layer norms. Apply to the Transformer blocks only."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.LayerNorm, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def init_conv_feature_encoder(module: ConvFeatureEncoder) -> None:
    """Kaiming-normal convolutions (fairseq and HF)."""
    for m in module.modules():
        if isinstance(m, nn.Conv1d):
            nn.init.kaiming_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


__all__ = [
    "ConvFeatureEncoder",
    "ConvPositionalEmbedding",
    "FeatureProjection",
    "FeedForward",
    "GradMultiply",
    "SelfAttention",
    "TransformerEncoder",
    "TransformerLayer",
    "conv_feature_encoder",
    "conv_output_lengths",
    "frame_lengths_on",
    "init_bert_params",
    "init_conv_feature_encoder",
    "lengths_to_padding_mask",
    "padding_invariant",
]
