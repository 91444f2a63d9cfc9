"""w2v beside Hugging Face transformers on one GPU: pre-training, CTC fine-tuning, inference.

Same preset (ours mapped to `transformers.Wav2Vec2Config` by `to_hf_config`, so dropouts and
layerdrop match), same random audio and batch, bf16 autocast and SDPA attention in both,
fused AdamW in both, in one process. Unit: seconds of 16 kHz audio per wall-clock second,
timed over whole steps after warm-up (host work included). The peer gets its masks and
negatives drawn once, outside the timed steps, as in `../shared/bench/hf_w2v2_pretrain.py`;
ours draws them every step.

Also printed: FLOPs per step (torch.utils.flop_counter, eager), achieved TFLOP/s and share of
the bf16 matrix-product ceiling measured in the same run, peak memory, the time of each compile,
the loss of our bf16 step beside an fp32 reference, a per-component timing of our pre-training
step, a lever ablation (what each speed change buys), the positional convolution's and
self-attention's alternatives timed alone. The data pipeline is `w2v.bench.data`, the training
loop end to end `w2v.bench.loop`.

    python bench/gpu_speed.py --out bench.json            # everything, on a GPU
    python bench/gpu_speed.py --sizes tiny --samples 32000 --steps 1 --warmup 1   # CPU smoke run
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import time
from dataclasses import dataclass, field
from datetime import date
from typing import Callable

import torch

from w2v.models import Wav2Vec2ForCTC, Wav2Vec2ForPreTraining, load_model_config
from w2v.models.components import ConvFeatureEncoder, ConvPositionalEmbedding, conv_output_lengths
from w2v.models.accel import (cast_linear_weights, compile_model, default_cpp_wrapper, release_dropped_grads,
                              set_activation_checkpointing, set_module_flags, step_begins, triton_available,
                              use_cpp_wrapper, use_fused_qkv, use_gelu_epilogue, use_matmul_convolutions, use_stack_cuda_graphs,
                              use_triton_first_layer, use_triton_positional_conv)
from w2v.train.losses import ctc_loss, pretraining_loss

SAMPLE_RATE = 16000
VOCAB = 32
LABELS = 200
DROPOUTS = ("dropout", "attention_dropout", "activation_dropout", "dropout_input", "dropout_features", "layerdrop")


@dataclass
class Measure:
    """One timed configuration."""

    audio_s_per_s: float
    step_ms: float
    peak_gib: float | None = None
    tflop_per_step: float | None = None
    losses: list[float] = field(default_factory=list)
    windows: list[float] = field(default_factory=list)  # audio-s/s of each timed window (`timed`)

    def tflops(self) -> float | None:
        return None if self.tflop_per_step is None else self.tflop_per_step / (self.step_ms / 1e3)


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def matmul_ceiling(dev: torch.device, n: int = 8192, reps: int = 10) -> float:
    """bf16 matrix-product TFLOP/s on random data (the ceiling the shares refer to)."""
    if dev.type != "cuda":
        n = 1024
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    a, b = torch.randn(n, n, device=dev, dtype=dtype), torch.randn(n, n, device=dev, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(dev)
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(dev)
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e12


def count_flops(w: "Workload", step: Callable[[], object]) -> float:
    """TFLOP of one step. Under no_grad rather than inference_mode: the flop counter cannot read
    a weight-norm parametrization inside inference_mode."""
    from torch.utils.flop_counter import FlopCounterMode

    def product_flops(bias_shape, a_shape, b_shape, out_shape=None, **kwargs) -> int:
        return 2 * a_shape[0] * a_shape[1] * b_shape[1]

    # the GELU epilogue's product (`use_gelu_epilogue`), which the counter's table lacks
    fc = FlopCounterMode(display=False, custom_mapping={torch.ops.aten._addmm_activation: product_flops})
    w.inference = torch.no_grad
    try:
        with fc:
            step()
    finally:
        w.inference = torch.inference_mode
    return fc.get_total_flops() / 1e12


def timed(step: Callable[[], object], dev: torch.device, steps: int, warmup: int, audio_s: float,
          flops: float | None = None, windows: int = 1) -> Measure:
    """``warmup`` untimed steps, then ``windows`` timed windows of ``steps`` steps each: the
    window of median throughput, with every window's throughput in `Measure.windows`. One
    configuration's windows on one H100 spread by up to 19% (BENCHMARKS.md, thirteenth session),
    so a single window can land on a slow moment of the host."""
    for _ in range(warmup):
        step()
    measures = []
    for _ in range(windows):
        sync(dev)
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        losses = []
        t0 = time.perf_counter()
        for _ in range(steps):
            loss = step()
            if loss is not None:
                losses.append(loss.detach())
        sync(dev)
        dt = (time.perf_counter() - t0) / steps
        peak = torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else None
        measures.append(Measure(audio_s / dt, dt * 1e3, peak, flops, [float(x) for x in losses]))
    median = sorted(measures, key=lambda m: m.audio_s_per_s)[(len(measures) - 1) // 2]
    median.windows = [round(m.audio_s_per_s, 1) for m in measures]
    return median


class Workload:
    """Builds ours and the peer for one (workload, size) and makes their step functions."""

    def __init__(self, kind: str, preset: str, batch: int, samples: int, dev: torch.device, cycle: int = 10):
        self.kind, self.preset, self.batch, self.samples, self.dev = kind, preset, batch, samples, dev
        self.cycle = cycle  # our LayerDrop draws repeat every `cycle` steps (layerdrop_seed)
        overrides = {"mask_prob": 0.05} if kind == "finetune" else {}
        self.cfg = load_model_config(preset, **overrides)
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(batch, samples, generator=g).to(dev)
        self.lengths = torch.full((batch,), samples)  # on the CPU, as the training loop passes them
        self.labels = torch.randint(1, VOCAB, (batch, LABELS), generator=g).to(dev)
        self.label_lengths = torch.full((batch,), LABELS, device=dev)
        self.amp = dict(device_type=dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda")
        self.audio_s = batch * samples / SAMPLE_RATE
        self.step_no = 0
        self.inference = torch.inference_mode  # FLOP counting swaps in no_grad (see count_flops)

    # --- ours ---
    def ours(self) -> torch.nn.Module:
        if self.kind == "pretrain":
            m = Wav2Vec2ForPreTraining(self.cfg)
        else:
            m = Wav2Vec2ForCTC(self.cfg, VOCAB)
            m.freeze_feature_encoder()
        return m.to(self.dev).train(self.kind != "infer")

    def ours_step(self, model, opt, lengths=None) -> Callable[[], torch.Tensor | None]:
        lengths = self.lengths if lengths is None else lengths

        def infer():
            logits, _ = model(self.x, lengths)
            logits.argmax(-1)

        encoder = model.wav2vec2.encoder

        def loss():
            self.step_no += 1
            g = torch.Generator().manual_seed(self.step_no)
            encoder.layerdrop_generator = torch.Generator().manual_seed(self.layerdrop_seed())
            if self.kind == "pretrain":
                return pretraining_loss(model(self.x, lengths, generator=g), sync=False)[0]
            logits, flens = model(self.x, lengths, apply_mask=True, generator=g)
            return ctc_loss(logits, flens, self.labels, self.label_lengths)

        return self._step(opt, infer, loss, lambda: release_dropped_grads(model))

    def layerdrop_seed(self) -> int:
        """The seed of this step's LayerDrop draws: they repeat every `cycle` steps, so that the
        warm-up (`compiled_warmup`) compiles every graph the timed steps run (a graph per
        number of blocks) and the timed steps (`cycle` of them) draw each pattern once."""
        return self.step_no % self.cycle

    @property
    def draws_layerdrop(self) -> bool:
        return _draws_layerdrop(self.kind, self.cfg.layerdrop)

    def blocks_dropped_per_step(self, model: torch.nn.Module) -> float:
        """Mean number of blocks our LayerDrop drops over one cycle of its draws (``model``'s
        encoder drawing them again, from the same seeds)."""
        encoder = model.wav2vec2.encoder
        return sum(encoder.layerdrop_keeps(torch.Generator().manual_seed(seed)).count(False)
                   for seed in range(self.cycle)) / self.cycle

    def _step(self, opt, infer: Callable[[], None], loss: Callable[[], torch.Tensor],
              after_backward: Callable[[], None] = lambda: None) -> Callable[[], torch.Tensor | None]:
        """One timed step, the same for ours and the peer: the forward alone (inference), or
        forward + backward + optimizer step under bf16 autocast."""
        def step():
            step_begins()  # CUDA graphs (reduce-overhead, the stack's): the last step's outputs may be overwritten
            if self.kind == "infer":
                with self.inference(), torch.autocast(**self.amp):
                    infer()
                return None
            with torch.autocast(**self.amp):
                value = loss()
            value.backward()
            after_backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            return value

        return step

    # --- the peer ---
    def peer(self) -> torch.nn.Module:
        from transformers import Wav2Vec2ForCTC as HFCTC
        from transformers import Wav2Vec2ForPreTraining as HFPre

        from w2v.interop.hf_config import to_hf_config

        hc = to_hf_config(self.cfg, vocab_size=VOCAB if self.kind != "pretrain" else None)
        hc._attn_implementation = "sdpa"
        if self.kind == "pretrain":
            m = HFPre(hc)
            m.set_gumbel_temperature(2.0)
        else:
            m = HFCTC(hc)
            m.freeze_feature_encoder()
        return m.to(self.dev).train(self.kind != "infer")

    def peer_step(self, model, opt) -> Callable[[], torch.Tensor | None]:
        if self.kind == "pretrain":
            from transformers.models.wav2vec2.modeling_wav2vec2 import (
                _compute_mask_indices,
                _sample_negative_indices,
            )

            frames = int(model._get_feat_extract_output_lengths(torch.tensor(self.samples)))
            mask = _compute_mask_indices((self.batch, frames), self.cfg.mask_prob, self.cfg.mask_length, min_masks=2)
            neg = _sample_negative_indices((self.batch, frames), self.cfg.num_negatives, mask_time_indices=mask)
            mask = torch.tensor(mask, device=self.dev, dtype=torch.bool)
            neg = torch.tensor(neg, device=self.dev, dtype=torch.long)

        def infer():
            model(self.x).logits.argmax(-1)

        def loss():
            if self.kind == "pretrain":
                return model(self.x, mask_time_indices=mask, sampled_negative_indices=neg).loss
            logits = model(self.x).logits
            flens = torch.full((self.batch,), logits.shape[1], device=self.dev)
            return ctc_loss(logits, flens, self.labels, self.label_lengths)

        return self._step(opt, infer, loss)


def optimizer(model: torch.nn.Module, dev: torch.device, fused: bool = True) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    kw = {"fused": True} if fused and dev.type == "cuda" else {"foreach": True}
    return torch.optim.AdamW(params, lr=1e-5, **kw)


def free(dev: torch.device) -> None:
    """Memory and compiled code of the last model. Compiled code is cached per function and
    guarded on the model instance, so without the reset each new model's graphs pile up on the
    same functions until dynamo's cache limit (8) is hit and it silently runs them eager: later
    workloads of a run were then timed (partly) uncompiled."""
    import gc

    torch._dynamo.reset()
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()


def compile_ours(w: Workload, model: torch.nn.Module, a) -> None:
    """`compile_model` as the command line asks: its mode (CUDA graphs mark each step's start,
    see `Workload._step`) and, with --dynamic, a dynamic batch size (as the training loop's
    graphs run once a batch of another size came by)."""
    if a.dynamic:
        torch._dynamo.mark_dynamic(w.x, 0)
    compile_model(model, mode=a.compile_mode, cpp_wrapper={"on": True, "off": False}.get(a.cpp_wrapper))


def use_triton(a) -> bool:
    """Whether this run uses (and times) the Triton kernels: `--triton`, on a GPU by default."""
    return a.triton in ("on", "posconv", "first-layer") or (
        a.triton == "auto" and a.device.type == "cuda" and triton_available())


def warm_up_s(step: Callable[[], object], dev: torch.device, steps: int = 1) -> float:
    """Seconds of the first ``steps`` steps after a (re)compile: the compilation, mostly. With
    LayerDrop, the whole warm-up (`compiled_warmup`): a graph is compiled for each number of
    blocks run, as each first comes, and the very first step may run none of the stack's graphs
    (its lever once read 0.0 s)."""
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(dev)
    return round(time.perf_counter() - t0, 1)


def _timed_compiled(step: Callable[[], object], w: "Workload", a, flops: float | None) -> tuple[float, Measure]:
    """A step just (re)compiled: the seconds of its warm-up (`warm_up_s` over `compiled_warmup`:
    the compiles, mostly), then its timed windows."""
    return warm_up_s(step, w.dev, compiled_warmup(w, a)), timed(step, w.dev, a.steps, 0, w.audio_s, flops, a.windows)


def _lever(row: dict, name: str, switch_on, model, step, w: Workload, a, flops, best,
           switch_off: Callable[[torch.nn.Module], object] | None = None):
    """Switch a lever on ``model``, time ``step`` with it and record it in ``row``; returns the
    faster of it and ``best``. A lever slower than ``best`` is switched back off (``switch_off``)
    before the next is timed, so each lever is timed on top of the fastest model so far. A lever
    that fails (a kernel that does not compile on this GPU, say) is recorded as ``<name>_error``
    and ``best`` returned, so the row keeps what was measured before it."""
    try:
        switch_on(model)
        row[f"{name}_compile_s"], m = _timed_compiled(step, w, a, flops)
    except Exception as e:  # noqa: BLE001 - any failure of the lever: report it, keep the row
        row[f"{name}_error"] = f"{type(e).__name__}: {str(e)[:400]}"
        row[name] = False
        print(json.dumps({"lever": name, "workload": w.kind, "size": w.preset, "error": row[f"{name}_error"]}),
              flush=True)
        return best
    row[f"ours_{name}_audio_s_per_s"] = round(m.audio_s_per_s, 1)
    row[f"ours_{name}_windows"] = m.windows
    print(json.dumps({"lever": name, "workload": w.kind, "size": w.preset, "compile_s": row[f"{name}_compile_s"],
                      "audio_s_per_s": row[f"ours_{name}_audio_s_per_s"]}), flush=True)  # kept if a later lever fails
    faster = m if m.audio_s_per_s > best.audio_s_per_s else best
    row[name] = faster is m
    if not row[name] and switch_off is not None:
        switch_off(model)
    return faster


LEVERS = ("matmul_conv", "triton_first_layer", "triton_posconv", "layerdrop_skip", "fused_qkv", "strided_windows",
          "stack_cuda_graphs", "inference_weights", "gelu_epilogue", "autotune")  # in the order timed


@dataclass
class Lever:
    """One speed switch the bench times on its own (`compare`), with how to switch it off: the
    model the lever table starts from has it off."""

    name: str
    on: Callable[[torch.nn.Module], object]
    off: Callable[[torch.nn.Module], object]


def _set_all(kind: type, attr: str, value: object) -> Callable[[torch.nn.Module], None]:
    return lambda model: set_module_flags(model, kind, **{attr: value})


def _once_compiled(switch: Callable[[torch.nn.Module, bool], object], enabled: bool) -> Callable[[torch.nn.Module], None]:
    """``switch(model, enabled)`` for a lever of the compiled stack: nothing before `compile_model`
    (`compare` sets its levers once before compiling and again after)."""
    def apply(model: torch.nn.Module) -> None:
        if model.wav2vec2.encoder.compiled_stack is not None:
            switch(model, enabled)

    return apply


def _recompiled(autotune: bool) -> Callable[[torch.nn.Module], None]:
    """The autotune lever: `compile_model` again with or without `AUTOTUNE_OPTIONS`, keeping the
    stack's CUDA graphs, LayerDrop's skips and the launcher as they are (nothing before the first
    compile)."""
    def apply(model: torch.nn.Module) -> None:
        if model.wav2vec2.encoder.autotune != autotune:
            _compile_again(model, autotune=autotune)

    return apply


def _compile_again(model: torch.nn.Module, reset: bool = False, **changes) -> None:
    """`compile_model` again, as before but for ``changes``: the stack's CUDA graphs, LayerDrop's
    skips, autotuning and the launcher kept (nothing before the first compile). ``reset``: every
    compiled graph and recorded CUDA graph dropped first (parameters that changed storage)."""
    encoder = model.wav2vec2.encoder
    if encoder.compiled_stack is None:
        return
    if reset:
        torch._dynamo.reset()
    kept = dict(autotune=encoder.autotune, cuda_graphs=encoder.cuda_graphs, dropped_blocks=encoder.dropped_blocks,
                cpp_wrapper=bool(torch._inductor.config.cpp_wrapper),
                fused_qkv=any(getattr(m, "fused_qkv", False) for m in model.modules()))
    compile_model(model, **{**kept, **changes})


def _compiled_afresh(switch: Callable[[torch.nn.Module, bool], object], enabled: bool
                     ) -> Callable[[torch.nn.Module], None]:
    """``switch(model, enabled)``, then a compiled model compiled again from scratch (the stack's
    recorded CUDA graphs hold the kernels chosen before, and the parameters' old addresses)."""
    def apply(model: torch.nn.Module) -> None:
        switch(model, enabled)
        _compile_again(model, reset=True)

    return apply


def _inference_weights() -> Lever:
    """The inference-weights lever: `cast_linear_weights` to bf16, and back to the float32 weights
    it kept (casting back would not restore them); the parameters change storage, so a compiled
    model is compiled again from scratch."""
    kept: dict[str, torch.Tensor] = {}

    def switch(model: torch.nn.Module, enabled: bool) -> None:
        linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
        if enabled:
            if not kept:  # the float32 weights, once (the only ones the cast touches)
                kept.update({f"{i}.{n}": p.detach().clone() for i, m in enumerate(linear)
                             for n, p in m.named_parameters()})
            cast_linear_weights(model, torch.bfloat16)
            return
        for i, m in enumerate(linear):
            m.float()
            with torch.no_grad():
                for n, p in m.named_parameters():
                    p.copy_(kept[f"{i}.{n}"])

    return Lever("inference_weights", _compiled_afresh(switch, True), _compiled_afresh(switch, False))


def _draws_layerdrop(kind: str, layerdrop: float) -> bool:
    """Whether our steps of this workload draw LayerDrop (training with a rate above 0)."""
    return kind != "infer" and layerdrop > 0


def _all_levers(a, kind: str = "pretrain", layerdrop: float = 0.0) -> list[Lever]:
    """Every lever that applies to this run, in the order `compare` times them."""
    from w2v.models.components import TransformerEncoder

    levers = [Lever("matmul_conv", lambda m: use_matmul_convolutions(m, triton=False),
                    lambda m: use_matmul_convolutions(m, False))]
    if use_triton(a):  # the first layer's kernels, then the positional conv's (in training too)
        if a.triton != "posconv":
            levers.append(Lever("triton_first_layer", use_triton_first_layer,
                                lambda m: use_triton_first_layer(m, False)))
        if a.triton != "first-layer":
            levers.append(Lever("triton_posconv", use_triton_positional_conv,
                                lambda m: use_triton_positional_conv(m, False)))
    if _draws_layerdrop(kind, layerdrop) and a.compile:  # the compiled stack's LayerDrop
        levers.append(Lever("layerdrop_skip", _set_all(TransformerEncoder, "dropped_blocks", "skip"),
                            _set_all(TransformerEncoder, "dropped_blocks", "discard")))
    levers.append(Lever("fused_qkv", use_fused_qkv, lambda m: use_fused_qkv(m, False)))
    if kind == "infer":  # the conv windows as strided views (forwards without autograd)
        levers.append(Lever("strided_windows", _set_all(ConvFeatureEncoder, "strided_windows", True),
                            _set_all(ConvFeatureEncoder, "strided_windows", False)))
    # the one-graph stack replayed as CUDA graphs (none on the CPU; the training settings refuse it
    # for fine-tuning, whose batches come in many lengths, so its row does without)
    if a.compile and a.device.type == "cuda" and kind != "finetune":
        levers.append(Lever("stack_cuda_graphs", _once_compiled(use_stack_cuda_graphs, True),
                            _once_compiled(use_stack_cuda_graphs, False)))
    if kind == "infer" and a.device.type == "cuda":  # the products' weights in bf16 once, not at every forward
        levers.append(_inference_weights())
        levers.append(Lever("gelu_epilogue", _compiled_afresh(use_gelu_epilogue, True),
                            _compiled_afresh(use_gelu_epilogue, False)))
    if a.autotune and a.compile and a.compile_mode is None:  # last: it recompiles every graph, minutes
        levers.append(Lever("autotune", _recompiled(True), _recompiled(False)))
    return levers


def _levers(a, kind: str = "pretrain", layerdrop: float = 0.0) -> tuple[list[Lever], list[Lever]]:
    """(timed, fixed): the levers `compare` times, cumulatively, in order (with --matmul-conv;
    --levers picks some), and those it switches on before the first compile instead."""
    if not a.matmul_conv:
        return [], []
    levers = _all_levers(a, kind, layerdrop)
    if a.levers == "all":
        return levers, []
    names = [n for n in a.levers.split(",") if n]
    unknown = set(names) - set(LEVERS)
    if unknown:
        raise SystemExit(f"--levers: unknown {sorted(unknown)}")
    return [lv for lv in levers if lv.name in names], [lv for lv in levers if lv.name not in names]


def compiled_warmup(w: "Workload", a) -> int:
    """Warm-up steps of a compiled configuration: `--warmup` + 3, and with LayerDrop a whole cycle
    of its draws (`Workload.layerdrop_seed`), so that every graph the timed steps need (one
    per number of blocks run) is compiled before they start."""
    return a.warmup + 3 + (w.cycle if _draws_layerdrop(w.kind, w.cfg.layerdrop) else 0)


def _seeded(build: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    """A model built from seed 0 (ours and the peer start from the same generator state)."""
    torch.manual_seed(0)
    return build()


def _timed_eager(w: Workload, a, model: torch.nn.Module, make_step) -> tuple:
    """``model``'s optimizer and step, the step's FLOPs (after a first step) and its eager timing."""
    opt = optimizer(model, w.dev)
    step = make_step(model, opt)
    step()
    flops = count_flops(w, step)
    return opt, step, flops, timed(step, w.dev, a.steps, a.warmup, w.audio_s, flops, a.windows)


def compare(w: Workload, a, use_compile: bool) -> dict:
    """Ours and the peer on one workload: throughput, FLOPs, memory."""
    dev = w.dev
    row = {"workload": w.kind, "size": w.preset, "batch": w.batch, "seconds": w.samples / SAMPLE_RATE}
    model = _seeded(w.ours)
    timed_levers, fixed = _levers(a, w.kind, w.cfg.layerdrop)

    def start(m: torch.nn.Module) -> None:  # the levers' starting point: the timed ones off, the others on
        for lv in timed_levers:
            lv.off(m)
        for lv in fixed:
            lv.on(m)

    start(model)
    opt, step, flops, eager = _timed_eager(w, a, model, w.ours_step)
    ours = eager
    if use_compile:
        compile_ours(w, model, a)
        start(model)  # compile_model's defaults (LayerDrop skipped) back to the starting point
        row["compile_s"], compiled = _timed_compiled(step, w, a, flops)
        row["cpp_wrapper"] = bool(torch._inductor.config.cpp_wrapper)  # the launcher the graphs got (reduce-overhead: off)
        row["ours_eager_audio_s_per_s"] = round(eager.audio_s_per_s, 1)
        row["ours_compiled_audio_s_per_s"] = round(compiled.audio_s_per_s, 1)
        ours = compiled if compiled.audio_s_per_s > eager.audio_s_per_s else eager
        use_compile = ours is compiled
    row["levers_fixed"] = [lv.name for lv in fixed]
    for lv in timed_levers:
        ours = _lever(row, lv.name, lv.on, model, step, w, a, flops, ours, lv.off)
        if f"{lv.name}_error" in row:
            break  # the model is left with the failed lever on: later levers would time a broken step
    if w.draws_layerdrop:
        row["layerdrop_blocks_dropped_per_step"] = w.blocks_dropped_per_step(model)
    if w.kind == "infer":
        row["logits_rel_err_vs_fp32"] = inference_errors(w, model)
    del model, opt, step
    free(dev)
    *_, peer = _timed_eager(w, a, _seeded(w.peer), w.peer_step)
    free(dev)
    for name, m in (("ours", ours), ("peer", peer)):
        row[name] = {"audio_s_per_s": round(m.audio_s_per_s, 1), "step_ms": round(m.step_ms, 2),
                     "tflop_per_step": round(m.tflop_per_step, 3), "tflops": round(m.tflops(), 1),
                     "share_of_ceiling": round(m.tflops() / a.ceiling, 3),
                     "peak_gib": None if m.peak_gib is None else round(m.peak_gib, 2), "windows": m.windows}
        if m.losses:
            row[name]["loss_first_last"] = [round(m.losses[0], 4), round(m.losses[-1], 4)]
            row[name]["loss_finite"] = all(math.isfinite(v) for v in m.losses)
    row["ratio"] = round(ours.audio_s_per_s / peer.audio_s_per_s, 2)
    row["compiled"] = use_compile
    return row


def inference_errors(w: Workload, model: torch.nn.Module) -> dict:
    """The inference logits' error relative to float32 (the same weights and audio, eager, no
    TF32): ``model`` as timed (`compare`'s fastest levers) and, for scale, the unchanged model
    eager under bf16 autocast. Speed never buys wrong numbers: the first should be no larger than
    the second."""
    fresh = _seeded(w.ours)  # the weights `compare` built its model from

    def logits(m: torch.nn.Module, bf16: bool) -> torch.Tensor:
        step_begins()
        with w.inference(), torch.autocast(**dict(w.amp, enabled=bf16 and w.amp["enabled"])):
            return m(w.x, w.lengths)[0].float().clone()

    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        ref = logits(fresh, False)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    out = {name: round(float((logits(m, True) - ref).norm() / ref.norm()), 5)
           for name, m in (("ours", model), ("bf16_eager", fresh))}
    del fresh
    return out


def ablation(a, preset: str, batch: int) -> list[dict]:
    """Pre-training throughput as each speed change is switched on, cumulatively."""
    import w2v.models.wav2vec2 as w2v_mod

    dev = a.device
    w = Workload("pretrain", preset, batch, a.samples, dev, a.steps)
    original_gen = w2v_mod.device_generator
    original_logits = Wav2Vec2ForPreTraining.sampled_contrastive_logits

    def gathered(self, predictions, positives, picks, extra=None):
        negatives = positives[picks]
        if extra is not None:
            negatives = torch.cat([negatives, extra])
        return self.contrastive_logits(predictions, positives, negatives)

    levers = [
        ("last session: masks/negatives/Gumbel noise drawn on the host, masked attention, "
         "gathered negatives, foreach AdamW", dict(host=True, mask=True, gather=True, fused=False)),
        ("+ masks, negatives and Gumbel noise on the device (one host sync)",
         dict(host=False, mask=True, gather=True, fused=False)),
        ("+ no attention mask for unpadded batches (flash attention)",
         dict(host=False, mask=False, gather=True, fused=False)),
        ("+ N x N similarity instead of gathered negatives", dict(host=False, mask=False, gather=False, fused=False)),
        ("+ fused AdamW", dict(host=False, mask=False, gather=False, fused=True)),
        ("+ cuDNN autotuning (cudnn.benchmark)", dict(host=False, mask=False, gather=False, fused=True, bench=True)),
    ]
    if a.compile:
        levers.append(("+ torch.compile (conv stack, Transformer blocks)",
                       dict(host=False, mask=False, gather=False, fused=True, bench=True,
                            compile=True)))
        levers.append(("+ activation checkpointing (memory for speed)",
                       dict(host=False, mask=False, gather=False, fused=True, bench=True,
                            compile=True, ckpt=True)))
    rows = []
    try:
        for name, lv in levers:
            w2v_mod.device_generator = (lambda g, d: g) if lv["host"] else original_gen
            Wav2Vec2ForPreTraining.sampled_contrastive_logits = gathered if lv["gather"] else original_logits
            torch.backends.cudnn.benchmark = lv.get("bench", False)
            torch.manual_seed(0)
            model = w.ours()
            if lv.get("compile"):
                compile_model(model)
            if lv.get("ckpt"):
                set_activation_checkpointing(model)
            opt = optimizer(model, dev, fused=lv["fused"])
            lengths = w.lengths.to(dev) if lv["mask"] else w.lengths
            m = timed(w.ours_step(model, opt, lengths), dev, a.steps,
                      compiled_warmup(w, a) if lv.get("compile") else a.warmup, w.audio_s)
            rows.append({"lever": name, "audio_s_per_s": round(m.audio_s_per_s, 1), "step_ms": round(m.step_ms, 2),
                         "peak_gib": None if m.peak_gib is None else round(m.peak_gib, 2), "windows": m.windows})
            del model, opt
            free(dev)
    finally:
        torch.backends.cudnn.benchmark = False
        w2v_mod.device_generator = original_gen
        Wav2Vec2ForPreTraining.sampled_contrastive_logits = original_logits
    return rows


COMMUNICATION = "communication (NCCL)"
KERNEL_CLASSES = (
    (COMMUNICATION, ("nccl",)),
    ("attention (flash/SDPA)", ("flash", "fmha", "attention", "sdpa")),
    ("optimizer (AdamW)", ("adam", "multi_tensor")),
    ("convolutions (cuDNN)", ("conv", "cudnn", "fprop", "dgrad", "wgrad", "implicit", "winograd")),
    ("matrix products (cuBLAS/CUTLASS)", ("gemm", "cutlass", "nvjet", "cublas")),
    ("fused by inductor (Triton)", ("triton",)),
    ("indexing, gather/scatter, sort", ("index", "scatter", "gather", "sort", "nonzero", "cub::")),
    ("copies", ("memcpy", "memset", "copy")),
)


def classify(name: str) -> str:
    low = name.lower()
    for label, keys in KERNEL_CLASSES:
        if any(k in low for k in keys):
            return label
    return "other (norms, softmax, dropout, elementwise)"


def trace(a, kind: str, preset: str, batch: int, use_compile: bool, steps: int = 5) -> dict:
    """Where our step's device time goes (kernel classes, top kernels) and how much of the wall
    time the device is busy at all (the rest is host work and synchronisation)."""
    from torch.profiler import ProfilerActivity, profile

    dev = a.device
    w = Workload(kind, preset, batch, a.samples, dev, steps)
    torch.manual_seed(0)
    model = w.ours()
    if use_compile:
        compile_ours(w, model, a)
    timed_levers, fixed = _levers(a, kind, w.cfg.layerdrop)
    for lv in timed_levers + fixed:  # all of `compare`'s levers, the Triton kernels in training steps too
        lv.on(model)
    step = w.ours_step(model, optimizer(model, dev))
    for _ in range(compiled_warmup(w, a)):
        step()
    sync(dev)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with profile(activities=activities) as prof:
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        sync(dev)
        wall = (time.perf_counter() - t0) / steps * 1e3
    summary = {**kernel_summary(prof, steps), **host_summary(prof, steps)}
    return {"workload": kind, "size": preset, "batch": batch, "compiled": use_compile, "matmul_conv": a.matmul_conv,
            "triton": a.matmul_conv and use_triton(a), "compile_mode": a.compile_mode,
            "wall_ms_per_step": round(wall, 2), **summary}


def kernel_summary(prof, steps: int, top: int = 30) -> dict:
    """Device time per step of a `torch.profiler` run over `steps` steps: busy total, by kernel
    class, and the `top` kernels (also used by bench/shard_step.py for each rank). Kernels and
    copies only: the profiler also puts the ranges that `record_function` marks (AdamW's step,
    DDP's forward, NCCL's collectives) on the device's timeline, spanning kernels counted
    already and the gaps between them. With collectives in the profile, their time alone on the
    device (``nccl_exposed``: the step waits on it, or on a slower rank) and beside other kernels
    (``nccl_hidden``: overlapped)."""
    from torch.autograd import DeviceType

    by_class: dict[str, float] = {}
    by_name: dict[str, float] = {}
    spans, compute, comm = [], [], []
    for e in prof.events():
        if e.device_type != DeviceType.CUDA or getattr(e, "is_user_annotation", False):
            continue
        ms = e.time_range.elapsed_us() / 1e3 / steps
        label = classify(e.name)
        by_class[label] = by_class.get(label, 0.0) + ms
        by_name[e.name] = by_name.get(e.name, 0.0) + ms
        spans.append((e.time_range.start, e.time_range.end))
        (comm if label == COMMUNICATION else compute).append(spans[-1])
    heaviest = sorted(by_name.items(), key=lambda kv: -kv[1])[:top]
    per_step = lambda us: round(us / 1e3 / steps, 2)  # noqa: E731
    busy = covered_us(spans)
    out = {"device_busy_ms_per_step": round(sum(by_class.values()), 2),
           "device_any_busy_ms_per_step": per_step(busy),
           "classes_ms": {k: round(v, 2) for k, v in sorted(by_class.items(), key=lambda kv: -kv[1])},
           "top_kernels_ms": [[n[:120], round(v, 2)] for n, v in heaviest]}
    if comm:  # collectives: how much of their time no other kernel ran beside them
        exposed = busy - covered_us(compute)
        out["nccl_exposed_ms_per_step"] = per_step(exposed)  # on the step's critical path (or waiting for a rank)
        out["nccl_hidden_ms_per_step"] = per_step(covered_us(comm) - exposed)
    return out


# host calls that wait for the device (cudaStreamSynchronize, cudaDeviceSynchronize, ...)
WAITS = ("Synchronize", "cudaMemcpy", "aten::item", "aten::_local_scalar_dense")


def host_summary(prof, steps: int, top: int = 15) -> dict:
    """Host time per step of a `torch.profiler` run: the `top` host events by self time (CUDA
    runtime calls among them: a ``cudaStreamSynchronize`` or ``cudaMemcpy`` here is the host
    waiting for the device), and the calls that wait for the device, in ms per step."""
    by_name: dict[str, float] = {}
    for e in prof.key_averages():
        if e.self_cpu_time_total > 0:
            by_name[e.key] = by_name.get(e.key, 0.0) + e.self_cpu_time_total / 1e3 / steps
    waits = {k: round(v, 2) for k, v in by_name.items() if any(w in k for w in WAITS)}
    heaviest = sorted(by_name.items(), key=lambda kv: -kv[1])[:top]
    return {"host_top_self_ms": [[n[:120], round(v, 2)] for n, v in heaviest], "host_waits_ms": waits}


def covered_us(spans: list[tuple[int, int]]) -> int:
    """Length of the union of (start, end) intervals: time with at least one kernel running
    (kernels of several streams overlap, e.g. NCCL's all-reduce beside the backward)."""
    total, reached = 0, None
    for s0, s1 in sorted(spans):
        begin = s0 if reached is None else max(s0, reached)  # what earlier spans did not cover
        if s1 > begin:
            total += s1 - begin
            reached = s1
    return total


def posconv(a, preset: str, batch: int) -> dict:
    """The positional convolution alone (forward + backward, bf16): cuDNN's grouped kernels on
    the preset's groups, groups padded to 64 channels (the default on CUDA), and batched matrix
    products over tap windows (`--matmul-conv`), eager and compiled; with Triton (`--triton`) also
    the Triton kernels that read the taps in place, eager and compiled."""
    dev = a.device
    cfg = load_model_config(preset)
    frames = int(conv_output_lengths(torch.tensor([a.samples]), cfg.conv_feature_layers)[0])
    torch.manual_seed(0)
    pos = ConvPositionalEmbedding(cfg.encoder_embed_dim, cfg.conv_pos, cfg.conv_pos_groups).to(dev)
    x = torch.randn(batch, frames, cfg.encoder_embed_dim, device=dev, requires_grad=True,
                    dtype=torch.bfloat16 if dev.type == "cuda" else torch.float32)
    out = {}
    ref = None
    as_matmul = pos.as_matmul
    paths = [("cudnn_grouped", False, False), ("groups_padded_to_64", True, False),
             ("matmul_windows", True, True), ("matmul_windows_compiled", True, True)]
    if use_triton(a):
        paths += [("triton_taps", True, True), ("triton_taps_compiled", True, True)]
    for name, padded, matmul in paths:
        last: list[torch.Tensor] = []
        ConvPositionalEmbedding.pad_groups_on_cuda = padded
        pos.matmul = matmul
        use_triton_positional_conv(pos, name.startswith("triton"))
        pos.as_matmul = torch.compile(as_matmul) if name.endswith("compiled") else as_matmul

        def run():
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                y = pos(x)
            y.float().square().mean().backward()
            last[:] = [y.detach().float()]

        run()
        y = last[0]
        ref = y if ref is None else ref
        m = timed(run, dev, max(a.steps, 10), a.warmup, 0.0)
        out[name] = {"ms": round(m.step_ms, 3), "rel_err": round(float((y - ref).norm() / ref.norm()), 5),
                     "peak_gib": None if m.peak_gib is None else round(m.peak_gib, 2)}
    ConvPositionalEmbedding.pad_groups_on_cuda = True
    pos.matmul, pos.triton, pos.as_matmul = False, False, as_matmul
    return {"size": preset, "batch": batch, "frames": frames, **out}


def first_layer(a, preset: str, batch: int) -> dict:
    """The conv encoder's first layer alone (conv, norm, GELU; bf16 autocast): forward, and
    forward + backward (the weight, bias and norm gradients), as the unfused matrix product
    (`components._few_taps_layer`), eager and compiled, and with Triton (`--triton`) as the fused
    kernels (`w2v.models.triton_first_layer`)."""
    from w2v.models.components import _ConvLayer, _few_taps_layer

    dev = a.device
    cfg = load_model_config(preset)
    dim, kernel, stride = cfg.conv_feature_layers[0]
    norm = "layer" if cfg.extractor_mode == "layer_norm" else "group"
    torch.manual_seed(0)
    layer = _ConvLayer(1, dim, kernel, stride, cfg.conv_bias, norm).to(dev)
    wave = torch.randn(batch, a.samples, 1, device=dev)
    frames = (a.samples - kernel) // stride + 1
    amp = dict(device_type=dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda")
    grad = torch.randn(batch, frames, dim, device=dev, dtype=torch.bfloat16 if dev.type == "cuda" else torch.float32)
    paths = [("unfused", False, False), ("unfused_compiled", False, True)]
    if use_triton(a):
        from w2v.models import triton_first_layer

        triton_first_layer.register()  # the layer alone: no encoder to switch
        paths.append(("fused_triton", True, False))
    out, ref = {}, None
    for name, fused, compiled in paths:
        fn = torch.compile(_few_taps_layer) if compiled else _few_taps_layer
        last: list[torch.Tensor] = []

        def forward():
            with torch.inference_mode(), torch.autocast(**amp):
                fn(layer, wave, frames, fused)

        def train():
            with torch.autocast(**amp):
                y = fn(layer, wave, frames, fused)
            y.backward(grad)
            last[:] = [y.detach().float(), layer.conv.weight.grad.flatten().clone()]
            layer.zero_grad(set_to_none=True)

        train()
        forward()
        fwd = timed(forward, dev, max(a.steps, 10), a.warmup, 0.0)
        both = timed(train, dev, max(a.steps, 10), a.warmup, 0.0)
        ref = last if ref is None else ref
        out[name] = {"forward_ms": round(fwd.step_ms, 3), "train_ms": round(both.step_ms, 3),
                     "rel_err": round(float((last[0] - ref[0]).norm() / ref[0].norm()), 5),
                     "weight_grad_rel_err": round(float((last[1] - ref[1]).norm() / ref[1].norm()), 5)}
    return {"size": preset, "batch": batch, "frames": frames, "norm": norm, **out}


def attention(a, preset: str, batch: int, infer_batch: int | None = None) -> dict:
    """Self-attention alone as the preset trains it (bf16, no padding mask, its attention
    dropout), forward + backward, through each of SDPA's backends that accepts it; and as it
    decodes (`infer_batch` utterances, no dropout, no autograd), forward alone, with each
    backend's output beside the first one's that ran."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    dev = a.device
    cfg = load_model_config(preset)
    frames = int(conv_output_lengths(torch.tensor([a.samples]), cfg.conv_feature_layers)[0])
    heads, dim = cfg.encoder_attention_heads, cfg.encoder_embed_dim
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    g = torch.Generator(device=dev).manual_seed(0)

    def inputs(n: int, grad: bool):  # laid out as the model's projections leave them: (batch, frames, heads, dim)
        return [torch.randn(n, frames, heads, dim // heads, device=dev, dtype=dtype, generator=g,
                            requires_grad=grad).transpose(1, 2) for _ in range(3)]

    q, k, v = inputs(batch, True)
    infer_batch = infer_batch or batch
    qi, ki, vi = inputs(infer_batch, False)
    out = {"size": preset, "batch": batch, "infer_batch": infer_batch, "frames": frames, "heads": heads,
           "dropout": cfg.attention_dropout}
    ref = None
    for name in ("CUDNN_ATTENTION", "FLASH_ATTENTION", "EFFICIENT_ATTENTION", "MATH"):
        backend = getattr(SDPBackend, name)

        def train():
            with sdpa_kernel(backend):
                y = torch.nn.functional.scaled_dot_product_attention(q, k, v, dropout_p=cfg.attention_dropout)
            y.backward(torch.ones_like(y))

        @torch.no_grad()
        def infer():
            with sdpa_kernel(backend):
                return torch.nn.functional.scaled_dot_product_attention(qi, ki, vi)

        r = {}
        for mode, run in (("ms", train), ("infer_ms", infer)):
            try:
                y = run()
            except RuntimeError as e:  # the backend does not take these inputs here
                r[mode] = f"unavailable: {str(e).splitlines()[0][:100]}"
                continue
            r[mode] = round(timed(lambda: (run(), None)[1], dev, max(a.steps, 20), a.warmup, 0.0).step_ms, 3)
            if mode == "infer_ms":
                ref = y.float() if ref is None else ref
                r["infer_rel_err"] = round(float((y.float() - ref).norm() / ref.norm()), 5)
        out[name.lower()] = r if isinstance(r["ms"], float) or isinstance(r["infer_ms"], float) else r["ms"]
    return out


def precision_check(a, preset: str, batch: int, steps: int) -> dict:
    """Our bf16 training beside fp32 from the same weights, data, masks and noise (no dropout)."""
    dev = a.device
    w = Workload("pretrain", preset, batch, a.samples, dev)
    w.cfg = w.cfg.replace(**{k: 0.0 for k in DROPOUTS})
    torch.manual_seed(0)
    ref = w.ours()
    low = copy.deepcopy(ref)
    curves = {}
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    for name, model, bf16 in (("bf16", low, True), ("fp32", ref, False)):
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        opt = torch.optim.AdamW(model.parameters(), lr=2e-4)
        amp = dict(w.amp, enabled=bf16 and dev.type == "cuda")
        losses = []
        for i in range(steps):
            model.set_num_updates(i)
            with torch.autocast(**amp):
                loss, stats = pretraining_loss(model(w.x, w.lengths, generator=torch.Generator().manual_seed(i)))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(stats["loss"])
        curves[name] = losses
        del opt
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    rel = [abs(b - f) / max(abs(f), 1e-12) for b, f in zip(curves["bf16"], curves["fp32"])]
    del ref, low
    free(dev)
    return {"size": preset, "batch": batch, "steps": steps, "bf16": [round(v, 4) for v in curves["bf16"]],
            "fp32": [round(v, 4) for v in curves["fp32"]], "rel_diff_step0": round(rel[0], 5),
            "max_rel_diff": round(max(rel), 5), "tolerance_step0": a.tol_step0, "tolerance_curve": a.tol_curve,
            "passed": rel[0] <= a.tol_step0 and max(rel) <= a.tol_curve
            and all(math.isfinite(v) for v in curves["bf16"])}


def parse_map(text: str) -> dict[str, int]:
    """'base=8,large_lv60=6' -> {'base': 8, 'large_lv60': 6}; a bare number applies to all."""
    if "=" not in text:
        return {"*": int(text)}
    return {k: int(v) for k, v in (item.split("=") for item in text.split(","))}


def pick(table: dict[str, int], size: str) -> int:
    return table.get(size, table.get("*", 8))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="base,large_lv60", help="model presets")
    p.add_argument("--workloads", default="pretrain,finetune,infer")
    p.add_argument("--samples", type=int, default=250_000, help="samples per utterance (15.6 s)")
    p.add_argument("--batch-pretrain", default="base=8,large_lv60=6,large=6")
    p.add_argument("--batch-finetune", default="base=8,large_lv60=6,large=6")
    p.add_argument("--batch-infer", default="16")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--windows", type=int, default=3,
                   help="timed windows of --steps steps per configuration in the table; the median one is kept")
    p.add_argument("--compile", action="store_true", help="torch.compile our hot blocks (w2v.models.accel)")
    p.add_argument("--compile-mode", default=None,
                   help="torch.compile mode for --compile (e.g. reduce-overhead: CUDA graphs; default: inductor's)")
    p.add_argument("--dynamic", action="store_true",
                   help="compile with a dynamic batch size (the training loop's graphs after its first smaller batch)")
    p.add_argument("--matmul-conv", action="store_true",
                   help="also time ours with the convolutions as matrix products (keeps the faster)")
    p.add_argument("--triton", default="auto", choices=("auto", "on", "off", "posconv", "first-layer"),
                   help="with --matmul-conv: also time ours with the first conv layer's Triton kernels, then with the "
                        "positional conv's (keeps the fastest; --trace and --posconv use them too); auto: on a GPU "
                        "where Triton is installed; posconv / first-layer: that one alone")
    p.add_argument("--levers", default="all",
                   help=f"with --matmul-conv: the levers to time, comma-separated ({', '.join(LEVERS)}); the others "
                        "that apply are on from the start")
    p.add_argument("--autotune", action="store_true",
                   help="with --compile: also compile with inductor's autotuning (w2v.models.accel.AUTOTUNE_OPTIONS; "
                        "minutes of compiling): the last lever timed, or on from the start when --levers leaves it out")
    p.add_argument("--no-compare", action="store_true", help="skip the ours-vs-peer table")
    p.add_argument("--ablation", default="", help="presets to run the lever ablation on (pre-training)")
    p.add_argument("--trace", default="", help="workload:preset pairs to profile, e.g. pretrain:base,infer:base")
    p.add_argument("--posconv", default="", help="presets: time the positional convolution's two paths")
    p.add_argument("--first-layer", default="",
                   help="presets: time the first conv layer unfused (eager, compiled) and as the fused Triton kernels")
    p.add_argument("--attention", default="", help="presets: time self-attention through each SDPA backend")
    p.add_argument("--cpp-wrapper", default="auto", choices=("auto", "on", "off"),
                   help="launch compiled kernels from C++ (auto: on a GPU; w2v.models.accel.use_cpp_wrapper), "
                        "the model's graphs and the paths timed alone (--posconv, --first-layer, --attention)")
    p.add_argument("--repeats", type=int, default=1, help="run the lever ablation this many times (spread)")
    p.add_argument("--cudnn-benchmark", action="store_true",
                   help="let cuDNN time its algorithms (ours and the peer alike); the ablation measures it")
    p.add_argument("--precision", default="", help="presets for the bf16-vs-fp32 loss check")
    p.add_argument("--precision-steps", type=int, default=8)
    p.add_argument("--tol-step0", type=float, default=0.01, help="relative loss difference allowed at step 0")
    p.add_argument("--tol-curve", type=float, default=0.05, help="... and over the short training curve")
    p.add_argument("--out", default=None, help="write all results as JSON here")
    return p


def main(argv: list[str] | None = None) -> dict:
    a = build_parser().parse_args(argv)
    a.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    # Every preset, batch and mode is its own graph; keep them all compiled.
    torch._dynamo.config.cache_size_limit = 64
    if hasattr(torch._dynamo.config, "recompile_limit"):
        torch._dynamo.config.recompile_limit = 64
    dev = a.device
    card = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"{platform.processor() or 'cpu'} CPU"
    a.ceiling = matmul_ceiling(dev)
    sizes = [s for s in a.sizes.split(",") if s]
    batches = {"pretrain": parse_map(a.batch_pretrain), "finetune": parse_map(a.batch_finetune),
               "infer": parse_map(a.batch_infer)}
    import transformers

    res = {"card": card, "date": date.today().isoformat(), "torch": torch.__version__,
           "transformers": transformers.__version__, "matmul_ceiling_tflops": round(a.ceiling, 1), "rows": []}
    print(json.dumps({k: v for k, v in res.items() if k != "rows"}), flush=True)
    torch.backends.cudnn.benchmark = False
    for key, fn in (("ablation", lambda s: [ablation(a, s, pick(batches["pretrain"], s)) for _ in range(a.repeats)]),):
        for size in [s for s in getattr(a, key).split(",") if s]:
            r = fn(size)
            res.setdefault(key, []).append({"size": size, "result": r})
            print(json.dumps({key: size, "result": r}), flush=True)
    torch.backends.cudnn.benchmark = a.cudnn_benchmark
    res["cudnn_benchmark"] = a.cudnn_benchmark
    res["compile_mode"] = a.compile_mode
    res["dynamic_batch"] = a.dynamic
    res["cpp_wrapper"] = a.cpp_wrapper
    if not a.no_compare:
        for kind in [k for k in a.workloads.split(",") if k]:
            for size in sizes:
                row = compare(Workload(kind, size, pick(batches[kind], size), a.samples, dev, a.steps), a, a.compile)
                res["rows"].append(row)
                print(json.dumps(row), flush=True)
    # the paths alone compile with the launcher the model's graphs use (compile_model's default)
    use_cpp_wrapper({"on": True, "off": False}.get(a.cpp_wrapper, default_cpp_wrapper(dev.type == "cuda")))
    for key, fn in (("trace", lambda s: trace(a, s.split(":")[0], s.split(":")[1],
                                              pick(batches[s.split(":")[0]], s.split(":")[1]), a.compile)),
                    ("posconv", lambda s: posconv(a, s, pick(batches["pretrain"], s))),
                    ("first_layer", lambda s: first_layer(a, s, pick(batches["pretrain"], s))),
                    ("attention", lambda s: attention(a, s, pick(batches["pretrain"], s), pick(batches["infer"], s))),
                    ("precision", lambda s: precision_check(a, s, pick(batches["pretrain"], s), a.precision_steps))):
        for size in [s for s in getattr(a, key).split(",") if s]:
            r = fn(size)
            free(dev)
            res.setdefault(key, []).append(r)
            print(json.dumps({key: size, "result": r}), flush=True)
    if a.out:
        from w2v.io import write_json

        write_json(a.out, res)
    print(table(res))
    return res


def table(res: dict) -> str:
    """The BENCHMARKS.md table."""
    lines = ["| workload | size | ours | peer | ratio | card | date |", "|---|---|---:|---:|---:|---|---|"]
    for r in res["rows"]:
        lines.append(f"| {r['workload']} | {r['size']} (batch {r['batch']}) | {r['ours']['audio_s_per_s']:,.0f} | "
                     f"{r['peer']['audio_s_per_s']:,.0f} | {r['ratio']:.2f} | {res['card']} | {res['date']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
