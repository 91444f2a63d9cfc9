"""Speed options that change how a wav2vec 2.0 model runs, not what it computes (the
exceptions are named at the end).

- `compile_model`: `torch.compile` the feature encoder's convolution stack, the
  Transformer blocks as one graph (per-block graphs cost so much host time per call that
  the step was host-bound; LayerDrop's dropped blocks skipped, a graph per number of blocks run)
  and, for pre-training, the contrastive head with static shapes. Inductor
  fuses the fp32 group/layer norms, GELUs and dtype casts around the convolutions and the
  norms, dropouts and residuals around the matrix products. Shapes that change (fine-tuning
  buckets) recompile, then switch to dynamic shapes (the training loop pads a layer-norm model's
  padded batches to whole hops, `components.padding_hop`, so the conv stack keeps one graph);
  crops of one length compile once.
- `use_matmul_convolutions`: the conv feature encoder and the positional convolution
  channels-last as matrix products; where Triton is installed, on a GPU, the first conv layer
  as fused Triton kernels (`use_triton_first_layer`: in training for group norm, without
  autograd for either norm) and the positional convolution's products as Triton kernels in
  forwards without autograd (`use_triton_positional_conv`).
- `set_activation_checkpointing`: recompute each Transformer block during backward instead of
  keeping its activations (LARGE and above: larger batches fit; costs one more forward).
- `use_cpp_wrapper` (through `compile_model`, on for GPU models): compiled graphs launch their
  kernels from generated C++ rather than Python, which kept the GPU waiting for the host.
- `use_stack_cuda_graphs` (`compile_model(cuda_graphs=True)`): the compiled Transformer stack
  replayed as CUDA graphs (forward and backward), so its ~500 kernels a training step cost one
  launch each way; the caller marks each step's start (`step_begins`).
- `use_fused_qkv` (on in `compile_model`): each attention's query, key and value as one product.
- `compile_model(autotune=True)`: inductor's autotuning of products and fused kernels (slow to
  compile; no faster on an H100).
- `use_gelu_epilogue` (forwards on a GPU without autograd): each feed-forward network's first
  product and GELU as one cuBLASLt call (its GELU is the tanh form: within 5e-4 of erf's).
- `cast_linear_weights` (inference under autocast only): the linear layers' weights cast once,
  not at every forward; the same outputs.

All leave parameter names, state dicts and the CPU path untouched, except that
`cast_linear_weights` changes those weights' dtype, and `use_gelu_epilogue` computes the erf GELU
in its tanh form on a GPU.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from w2v.models.components import DROPPED_BLOCKS
from w2v.models.wav2vec2 import Wav2Vec2ForPreTraining, Wav2Vec2Model


def _encoder(model: nn.Module) -> Wav2Vec2Model:
    encoder = model if isinstance(model, Wav2Vec2Model) else getattr(model, "wav2vec2", None)
    if not isinstance(encoder, Wav2Vec2Model):
        raise ValueError(f"expected a wav2vec 2.0 model, got {type(model).__name__}")
    return encoder


def use_cpp_wrapper(enabled: bool) -> None:
    """Launch compiled kernels from generated C++ instead of a generated Python function, for
    every graph compiled from now on in this process (inductor's `cpp_wrapper`). The Python
    launcher costs ~10-30 us of host time per kernel: a BASE pre-training step launches about a
    thousand, and on an H100 its host time (39 ms) exceeded its GPU time (28 ms). Process-wide
    because inductor's per-call option failed on the pre-training head's graph (torch 2.11:
    "CudaKernelParamCache not populated")."""
    torch._inductor.config.cpp_wrapper = enabled


def default_cpp_wrapper(on_gpu: bool) -> bool:
    """`compile_model`'s launcher when none is asked for: C++ for a model on a GPU, unless an
    explicit TORCHINDUCTOR_CPP_WRAPPER=0/1 in the environment says otherwise."""
    env = os.environ.get("TORCHINDUCTOR_CPP_WRAPPER")
    return env == "1" if env is not None else on_gpu


# Inductor's options for `compile_model(autotune=True)`: matrix products chosen by timing cuBLAS
# against Triton templates that take their neighbours (bias, GELU, residual) into their epilogue,
# and the fused kernels' block sizes tuned by coordinate descent. Slow to compile (every product's
# shape is timed), so off by default.
AUTOTUNE_OPTIONS = {"max_autotune": True, "coordinate_descent_tuning": True}


def _method(obj: object, name: str):
    """``obj``'s own method ``name`` as its class defines it, whatever an earlier `compile_model`
    put in its place on the instance (so that compiling again starts from the code, not from
    the last compiled wrapper)."""
    return getattr(type(obj), name).__get__(obj)


def _compiled(fn, mode: str | None, options: dict | None):
    return torch.compile(fn, mode=mode) if options is None else torch.compile(fn, options=options)


def compile_model(model: nn.Module, mode: str | None = None, one_graph: bool = True,
                  cpp_wrapper: bool | None = None, dropped_blocks: str | None = None,
                  cuda_graphs: bool = False, autotune: bool = False, fused_qkv: bool = True) -> nn.Module:
    """Compile the hot blocks of `model` in place (and return it): the conv stack, and the
    Transformer blocks as one graph (`TransformerEncoder.run_stack`) and each on its own (for
    hidden states and activation checkpointing, and for FSDP: `one_graph=False`, since FSDP
    gathers a block's sharded weights in hooks of the block's own call, which the one graph
    calls past). Blocks LayerDrop drops are skipped by the one graph (a graph per number of
    blocks run); `dropped_blocks` (`TransformerEncoder.dropped_blocks`; None keeps the model's,
    "skip" unless `sharding.wrap` made it "tie"): "skip" leaves their parameters without
    gradient, "tie" (DDP: no parameter left unused) gives them zero gradients, "discard"
    computes the blocks and discards their output. `cpp_wrapper` (`use_cpp_wrapper`; None:
    on for a model on a GPU, unless TORCHINDUCTOR_CPP_WRAPPER says otherwise) launches the kernels
    from C++; it makes the first compile slower (BASE pre-training ~45 s on an H100 with a warm
    cache); `mode="reduce-overhead"` (CUDA graphs for every graph) switches it off, since inductor
    records no CUDA graph for a graph launched from C++. `cuda_graphs` replays the one-graph stack
    alone as CUDA graphs (`use_stack_cuda_graphs`); the other graphs keep the C++ launcher.
    `autotune` compiles every graph with `AUTOTUNE_OPTIONS` (products timed against Triton
    templates with fused epilogues; minutes more of compiling). Compiling again starts afresh
    from the model's own methods (another mode, launcher or `autotune`). `fused_qkv`
    (`use_fused_qkv`) computes each attention's query, key and value as one product."""
    if autotune and mode is not None:
        raise ValueError(f"compile_model: autotune sets inductor's options, which exclude mode={mode!r}")
    if dropped_blocks is not None and dropped_blocks not in DROPPED_BLOCKS:
        raise ValueError(f"compile_model: dropped_blocks={dropped_blocks!r}; expected one of {DROPPED_BLOCKS}")
    if cuda_graphs and not one_graph:
        raise ValueError("compile_model: cuda_graphs needs the Transformer stack as one graph (one_graph=True)")
    if mode == "reduce-overhead":  # CUDA graphs for every graph: inductor records none for C++-launched code
        if cpp_wrapper:
            raise ValueError("compile_model: mode='reduce-overhead' (CUDA graphs) and cpp_wrapper=True exclude each "
                             "other (inductor records no CUDA graph for a graph launched from C++)")
        cpp_wrapper = False
    if cpp_wrapper is None:
        cpp_wrapper = default_cpp_wrapper(any(p.is_cuda for p in model.parameters()))
    use_cpp_wrapper(cpp_wrapper)
    enc = _encoder(model)
    use_fused_qkv(model, fused_qkv)
    fe = enc.feature_extractor
    options = dict(AUTOTUNE_OPTIONS) if autotune else None
    fe.convolve = _compiled(_method(fe, "convolve"), mode, options)
    if one_graph:
        enc.encoder.compiled_stack = _compiled(enc.encoder.run_stack, mode, options)
        enc.encoder.cuda_graphs = False  # a plain stack again, whatever an earlier compile_model made it
        if dropped_blocks is not None:
            enc.encoder.dropped_blocks = dropped_blocks
    enc.encoder.autotune = autotune
    pos = enc.encoder.pos_conv_embed
    pos.as_matmul = _compiled(_method(pos, "as_matmul"), mode, options)  # the tap windows as one Triton copy
    for layer in enc.encoder.layers:
        layer.compile(**({"mode": mode} if options is None else {"options": options}))
    if isinstance(model, Wav2Vec2ForPreTraining):
        # Everything after the Transformer as one graph of static shapes: the general head's
        # `nonzero` (the masked frames) synchronised with the host, and its ~60 small eager
        # kernels took 5 ms of an H100's BASE step.
        model.static_head = True
        model.static_logits = _compiled(_method(model, "static_logits"), mode, options)
    if cuda_graphs:
        use_stack_cuda_graphs(model)
    return model


# Inductor's CUDA graph trees for the stack's graphs. They keep the Python launcher: inductor
# records no CUDA graph for a graph with the C++ wrapper (torch 2.11: "skipping cudagraphs due to
# cpp wrapper enabled"), and a replay launches nothing per kernel anyway. Not
# `triton.cudagraph_skip_dynamic_graphs`: on torch 2.11 it cut the stack's static graph into 23
# partitions (every cast of a parameter counted as a "dynamic shape op"), whose recordings were
# redone every step ("static input data pointer changed"): 450 ms a BASE step instead of 28.
# A graph of dynamic shapes (batches of several lengths) records one CUDA graph per shape it meets,
# so the training settings refuse `cuda_graphs` for fine-tuning.
STACK_CUDA_GRAPH_OPTIONS = {"triton.cudagraphs": True, "cpp_wrapper": False}


def use_stack_cuda_graphs(model: nn.Module, enabled: bool = True) -> nn.Module:
    """Replay `compile_model`'s one-graph Transformer stack as CUDA graphs (``enabled``) or launch
    its kernels one by one again (in place; returns ``model``). On a GPU only (elsewhere inductor
    records nothing and the stack runs as compiled). A CUDA graph per graph of the stack: one for
    all blocks, and with LayerDrop's skips one per set of blocks run (recorded the first time each
    comes, ~12 for BASE at layerdrop 0.05), forward and backward each.

    The replays reuse their output memory, so the caller marks each training step's (or each
    forward's) start with `step_begins()`; what a step kept of the last step's stack outputs is
    then invalid, and torch raises on its use. A graph of another batch shape records its own
    graphs. Measured on H100s (BASE pre-training, batch 8 x 15.6 s, each pair on one machine):
    4,094 -> 4,944 and 4,024 -> 4,182 audio-s/s; memory 6.21 -> 5.85 GiB."""
    encoder = _encoder(model).encoder
    if encoder.compiled_stack is None:
        raise ValueError("use_stack_cuda_graphs: compile the model first (compile_model, with one_graph=True)")
    if encoder.cuda_graphs == enabled:
        return model
    # switched off: inductor's default mode, whatever mode compile_model was given
    options = dict(AUTOTUNE_OPTIONS) if encoder.autotune else {}
    if enabled:
        options.update(STACK_CUDA_GRAPH_OPTIONS)
    encoder.compiled_stack = torch.compile(encoder.run_stack, options=options or None)
    encoder.cuda_graphs = enabled
    return model


def step_begins() -> None:
    """Mark the start of a step for CUDA graphs (`use_stack_cuda_graphs`): outputs of earlier
    replays may now be overwritten. Costs nothing without them."""
    torch.compiler.cudagraph_mark_step_begin()


def layerdrop_leaves_parameters_unused(model: nn.Module) -> bool:
    """Whether LayerDrop can leave a block's parameters out of the autograd graph, so that DDP
    must look for unused parameters every step (a walk of the whole graph on the host): when
    the encoder trains with LayerDrop and skips the dropped blocks without tying their
    parameters in (`TransformerEncoder.dropped_blocks == "skip"`, which `sharding.wrap` turns
    into "tie" under DDP)."""
    from w2v.models.components import TransformerEncoder

    return any(m.layerdrop > 0 and m.dropped_blocks == "skip" for m in model.modules()
               if isinstance(m, TransformerEncoder))


def release_dropped_grads(model: nn.Module, update_ends: bool = True) -> None:
    """After backward: blocks LayerDrop dropped inside the compiled stack get no gradient, as
    if skipped (no-op for other models and paths). Every process must have dropped the same
    blocks (a shared LayerDrop generator), or their replicas would part. Accumulating over
    several batches: ``update_ends`` False but for the update's last batch
    (`TransformerEncoder.release_dropped_grads`)."""
    from w2v.models.components import TransformerEncoder

    for module in model.modules():
        if isinstance(module, TransformerEncoder):
            module.release_dropped_grads(update_ends)


def triton_available() -> bool:
    """Whether Triton is installed (it comes with PyTorch's CUDA wheels)."""
    import importlib.util

    return importlib.util.find_spec("triton") is not None


def use_matmul_convolutions(model: nn.Module, enabled: bool = True, triton: bool | None = None) -> nn.Module:
    """Run the conv feature encoder (`components._matmul_layer`) and the Transformer's grouped
    positional convolution (`components._GroupedConvAsMatmul`) channels-last as matrix
    products instead of cuDNN's Conv1d: same weights, same function. Any model with these
    modules (wav2vec 2.0, HuBERT, wav2vec 1.0's encoder) takes it. ``triton`` (None: wherever
    Triton is installed) also switches on, on a GPU in half precision, what was faster there on
    an H100: `use_triton_positional_conv` for forwards without autograd (slower in training
    steps), and `use_triton_first_layer`, in training for a first layer with group norm (BASE,
    LARGE, HuBERT; BASE pre-training 4,383 -> 4,728 audio-s/s) and in forwards without autograd
    for layer norm too (inference: BASE 16,521 -> 18,061, LARGE-LV60 8,670 -> 8,941). A
    layer-norm first layer trains unfused: LARGE-LV60's compiled pre-training step was slower
    with the kernels."""
    from w2v.models.components import ConvFeatureEncoder, ConvPositionalEmbedding

    for module in model.modules():
        if isinstance(module, (ConvFeatureEncoder, ConvPositionalEmbedding)):
            module.matmul = enabled
    use_triton = enabled and (triton_available() if triton is None else triton)
    use_triton_positional_conv(model, use_triton, training=False)
    use_triton_first_layer(model, use_triton, training_norms=("group",))
    return model


def set_module_flags(model: nn.Module, kind: type, when=None, **flags) -> nn.Module:
    """Set ``flags`` (attribute = value) on every module of ``model`` of type ``kind`` (for which
    ``when(module)`` holds, if given), in place: how each switch of this module reaches its
    modules."""
    for module in model.modules():
        if isinstance(module, kind) and (when is None or when(module)):
            for name, value in flags.items():
                setattr(module, name, value)
    return model


def _switch(model: nn.Module, kind: type, enabled: bool, register, **flags) -> nn.Module:
    if enabled:
        register()
    return set_module_flags(model, kind, triton=enabled, **flags)


def use_triton_positional_conv(model: nn.Module, enabled: bool = True, training: bool = True) -> nn.Module:
    """With `use_matmul_convolutions` on: the positional convolution's products (forward, input
    and weight gradients) as Triton kernels that read each tap from the input instead of
    copying the k-frame windows out (`w2v.models.triton_conv`), on a GPU in bf16/fp16; fp32 and
    the CPU keep the batched products. ``training=False`` keeps them to forwards without
    autograd (inference, validation). Needs Triton (an ImportError says so).

    Measured on an H100 (BENCHMARKS.md): alone, forward + backward compiled, BASE 1.33 ms against
    the windows' 2.49 and LARGE-LV60 1.26 against 2.56; in the compiled inference step faster
    (BASE 16,718 -> 17,962 audio-s/s, LARGE-LV60 8,598 -> 9,037), in the compiled pre-training
    step slower (BASE 4,346 -> 4,179, LARGE-LV60 2,003 -> 1,891), hence inference-only by
    default (`use_matmul_convolutions`)."""
    from w2v.models.components import ConvPositionalEmbedding

    def register():
        from w2v.models import triton_conv

        triton_conv.register()

    return _switch(model, ConvPositionalEmbedding, enabled, register, triton_training=training)


def use_triton_first_layer(model: nn.Module, enabled: bool = True,
                           training_norms: tuple[str, ...] = ("group", "layer")) -> nn.Module:
    """With `use_matmul_convolutions` on: the conv feature encoder's first layer (conv, group or
    layer norm, GELU) as fused Triton kernels that recompute the 10-tap product from the waveform
    instead of writing and re-reading its output (`w2v.models.triton_first_layer`), on a GPU
    under bf16/fp16 autocast; elsewhere the unfused layer. In forwards with autograd (training)
    only for a first layer with one of ``training_norms`` ("group": BASE, LARGE; "layer":
    LARGE-LV60, XLS-R). Needs Triton. `use_matmul_convolutions` switches it on (training: group
    norm only) where Triton is installed.

    Measured on an H100 (BENCHMARKS.md, `w2v bench --first-layer`), against the unfused layer
    compiled, forward + backward: BASE (batch 8) 2.46 / 4.38 ms, LARGE-LV60 (batch 6) 2.11 / 2.48.
    In the compiled steps: BASE pre-training 4,383 -> 4,728 audio-s/s, inference BASE 16,521 ->
    18,061 and LARGE-LV60 8,670 -> 8,941; LARGE-LV60 pre-training 1,891 -> 1,835 (tenth session,
    before the kernels were reworked; not measured since)."""
    from w2v.models.components import ConvFeatureEncoder

    def register():
        from w2v.models import triton_first_layer

        triton_first_layer.register()

    return _switch(model, ConvFeatureEncoder, enabled, register, triton_training_norms=tuple(training_norms))


def use_fused_qkv(model: nn.Module, enabled: bool = True) -> nn.Module:
    """Every self-attention's query, key and value projections as one product over their stacked
    weights (`components.SelfAttention`), in place; parameters and state dict unchanged. The
    input is read once instead of three times, and under autocast cast to half precision once
    (a compiled graph wrote three copies of each block's layer-norm output). On by default in
    `compile_model`. Measured on H100s, each in one run (BENCHMARKS.md): LARGE-LV60 pre-training
    2,329 -> 2,400 audio-s/s, inference 9,532 -> 9,785."""
    from w2v.models.components import SelfAttention

    return set_module_flags(model, SelfAttention, fused_qkv=enabled)


def use_gelu_epilogue(model: nn.Module, enabled: bool = True) -> nn.Module:
    """Every feed-forward network with a GELU activation (`components.FeedForward.gelu_epilogue`),
    in place: on a GPU without autograd, its first product, bias and GELU as one cuBLASLt call.
    In LARGE-LV60's compiled inference on an H100 the GELU was a separate pass over the 4096-wide
    activations: 1.8 ms of a 24 ms step. cuBLASLt's GELU is the tanh form (`gelu_new`, exact for
    models trained with it); for the erf form (`gelu`) it differs by at most 5e-4, a thirtieth
    of a bf16 step at that value, and as the product's output is no longer rounded to bf16 before the
    GELU, the result sits closer to float32's erf GELU than the unfused bf16 path (on an H100,
    relative errors 1.7e-3 against 2.6e-3 for that product). Training and CPU forwards are
    unchanged."""
    from w2v.models.components import FeedForward

    return set_module_flags(model, FeedForward, lambda m: isinstance(m.intermediate_act_fn, nn.GELU),
                            gelu_epilogue=enabled)


def cast_linear_weights(model: nn.Module, dtype: torch.dtype = torch.bfloat16) -> nn.Module:
    """For inference under autocast to ``dtype``: every ``nn.Linear``'s weight and bias cast to
    ``dtype`` once, in place, where autocast casts them again at every forward (in LARGE-LV60's
    compiled inference step, ~1 ms of an H100's 26 for the Transformer's weights alone; the step
    went from 9,938 to 10,332 audio-s/s, BENCHMARKS.md). Norms,
    convolutions and the positional convolution's weight norm keep their float32 parameters.
    Under autocast to ``dtype`` the outputs are the same, bit for bit: autocast's own cast of a
    float32 weight is this one. Not for training (the updates would be rounded to ``dtype``),
    nor for forwards without autocast (the products would see two dtypes); not undone by
    casting back (the dropped bits are gone)."""
    for module in model.modules():
        if isinstance(module, nn.Linear):
            module.to(dtype)
    return model


def set_activation_checkpointing(model: nn.Module, enabled: bool = True) -> nn.Module:
    """Recompute Transformer blocks in backward (training only)."""
    if not enabled and not isinstance(getattr(model, "wav2vec2", model), Wav2Vec2Model):
        return model  # other families have no such blocks: nothing to switch off
    _encoder(model).encoder.activation_checkpointing = enabled
    return model


__all__ = ["AUTOTUNE_OPTIONS", "cast_linear_weights", "compile_model", "default_cpp_wrapper", "use_cpp_wrapper",
           "use_gelu_epilogue",
           "layerdrop_leaves_parameters_unused", "use_stack_cuda_graphs", "step_begins", "STACK_CUDA_GRAPH_OPTIONS",
           "release_dropped_grads", "set_activation_checkpointing", "set_module_flags", "triton_available", "use_matmul_convolutions",
           "use_fused_qkv", "use_triton_first_layer", "use_triton_positional_conv"]
