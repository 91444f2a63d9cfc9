"""How the model is spread over several training processes: DDP (replicated) or FSDP2 (sharded).

``ddp`` keeps a full copy of weights, gradients and optimizer state on every rank and
all-reduces gradients. ``fsdp`` (PyTorch FSDP2, ``fully_shard``) splits all three across the
ranks, one unit per Transformer layer plus the root, and gathers a layer's weights only while
it runs, so a model several times one GPU's memory trains (XLS-R 1B on 2 H100s, 2B on 8).

Checkpoints do not depend on the strategy: under ``fsdp`` the full model and optimizer state
are gathered to rank 0's CPU and written in the same format as a single process writes
(optimizer state keyed by parameter index), so a run can resume under another strategy.
"""

from __future__ import annotations

import contextlib
import warnings
import weakref

import torch
import torch.distributed as dist
from torch import nn

from w2v.train.config import ALLREDUCE_DTYPES, DDP_REDUCERS, STRATEGIES
from w2v.train.distributed import DistInfo



def _layers(model: nn.Module) -> nn.ModuleList:
    """The Transformer blocks of a wav2vec 2.0 model (pre-training or CTC)."""
    return model.wav2vec2.encoder.layers


FLAT_BUCKET_MB = 512.0  # `Replicated`'s buffers: one all-reduce for all of BASE's 380 MB of gradients


def ddp_settings(tcfg) -> dict:
    """The keyword arguments of :func:`wrap` that a TrainConfig's DDP settings give (none for fsdp)."""
    if tcfg.strategy != "ddp":
        return {}
    out = {"allreduce_dtype": tcfg.allreduce_dtype, "reducer": tcfg.ddp_reducer}
    if tcfg.ddp_bucket_mb is not None:
        out["bucket_cap_mb"] = tcfg.ddp_bucket_mb
    if tcfg.ddp_reducer == "buckets":
        out["gradient_as_bucket_view"] = tcfg.ddp_bucket_view
    return out


def wrap(model: nn.Module, strategy: str, info: DistInfo, dev: torch.device, bf16: bool,
         find_unused: bool, allreduce_dtype: str = "fp32", reducer: str = "buckets", **ddp_options) -> nn.Module:
    """``model`` ready for ``info.world_size`` processes (unchanged in one process).

    Call after loading any checkpoint into ``model`` and before building the optimizer (FSDP
    replaces the parameters by shards). Rank 0's weights are the ones every rank starts from.
    ``find_unused``: some parameters may get no gradient in a step (e.g. a frozen Transformer's
    in fine-tuning), so DDP must look for them every step. LayerDrop's dropped blocks need no
    such search: under DDP they are tied into the output at weight zero (every parameter gets
    a gradient; `TransformerEncoder.dropped_blocks` "skip" becomes "tie").
    ``allreduce_dtype`` (DDP only): "bf16" sends the gradient buckets as bfloat16 (half the bytes;
    each rank's share is rounded to bf16 before the sum, as fairseq's fp16 training sends fp16
    gradients), "fp32" as they are.
    ``reducer`` (DDP only): "buckets" is torch's DistributedDataParallel, ``ddp_options`` going to
    it (e.g. ``bucket_cap_mb``, ``gradient_as_bucket_view``); "flat" is :class:`Replicated`,
    which all-reduces the gradients in a few large buffers (``bucket_cap_mb``, default
    FLAT_BUCKET_MB; the encoder's launched during the backward unless ``overlap`` is False) and
    needs neither ``find_unused`` nor LayerDrop's ties.
    """
    if allreduce_dtype not in ALLREDUCE_DTYPES:
        raise ValueError(f"allreduce_dtype {allreduce_dtype!r}; expected one of {ALLREDUCE_DTYPES}")
    if reducer not in DDP_REDUCERS:
        raise ValueError(f"reducer {reducer!r}; expected one of {DDP_REDUCERS}")
    if not info.enabled:
        return model
    if strategy == "ddp":
        check_ddp_options(reducer, ddp_options)
        if reducer == "flat":
            return Replicated(model, allreduce_dtype, ddp_options.get("bucket_cap_mb", FLAT_BUCKET_MB),
                              ddp_options.get("overlap", True))
        from torch.nn.parallel import DistributedDataParallel

        from w2v.models.accel import set_module_flags
        from w2v.models.components import TransformerEncoder

        # after this no encoder leaves a dropped block unused (accel.layerdrop_leaves_parameters_unused)
        set_module_flags(model, TransformerEncoder, lambda m: m.dropped_blocks == "skip", dropped_blocks="tie")
        ddp = DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None,
                                      find_unused_parameters=find_unused, **ddp_options)
        if allreduce_dtype == "bf16":
            ddp.register_comm_hook(None, _bf16_allreduce)
        return ddp
    if strategy != "fsdp":
        raise ValueError(f"unknown strategy {strategy!r}; expected one of {STRATEGIES}")
    ddp_only = sorted([*ddp_options, *(["allreduce_dtype"] if allreduce_dtype != "fp32" else []),
                       *(["reducer"] if reducer != "buckets" else [])])
    if ddp_only:
        raise ValueError(f"{ddp_only} are DDP settings; fsdp reduces gradients in fp32 (its own way)")
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    _from_rank0(model)  # DDP does this itself; fully_shard does not
    mesh = init_device_mesh(dev.type, (info.world_size,))
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 \
        else MixedPrecisionPolicy()
    # The model returns views (e.g. transposed logits); nothing modifies them in place, which is
    # what FSDP2's warning about views is about.
    warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module .* returned a view tensor")
    for layer in _layers(model):
        fully_shard(layer, mesh=mesh, mp_policy=mp)
    fully_shard(model, mesh=mesh, mp_policy=mp)
    return model


FLAT_OPTIONS = ("bucket_cap_mb", "overlap")  # what `Replicated` takes; torch's DDP takes the rest


def check_ddp_options(reducer: str, options) -> None:
    """ValueError for DDP settings the reducer does not take (bench/shard_step.py checks its
    variants with it before starting any rank)."""
    if reducer == "flat" and set(options) - set(FLAT_OPTIONS):
        raise ValueError(f"gradient_as_bucket_view and static_graph are settings of torch's DDP (reducer buckets), "
                         f"and reducer flat takes only {' and '.join(FLAT_OPTIONS)}: got "
                         f"{sorted(set(options) - set(FLAT_OPTIONS))}")
    if reducer != "flat" and "overlap" in options:
        raise ValueError("overlap is a setting of reducer=flat (the encoder's all-reduce launched during the backward)")


@torch.no_grad()
def _from_rank0(model: nn.Module) -> None:
    """Rank 0's weights and buffers on every rank."""
    for t in [*model.parameters(), *model.buffers()]:
        dist.broadcast(t.data, src=0)


class Replicated(nn.Module):
    """Data parallelism without torch's DDP reducer: every rank holds the whole model (rank 0's
    weights, broadcast here) and, by the end of the backward of an update's last batch
    (:func:`gradient_sync`), the gradients' mean over the ranks replaces each rank's own.

    The gradients that exist are copied into a few flat buffers of up to ``bucket_mb`` each (in
    parameter order; the copy of one buffer overlaps the all-reduce of the one before), each
    buffer is all-reduced once (NCCL averages in the all-reduce; other backends sum, then
    divide the buffer once; "bf16" sends a bfloat16 copy, as `_bf16_allreduce`), and the
    parameters' gradients become views of the buffers (copied back where a gradient is not
    contiguous, keeping its layout). Against torch's reducer this takes no hook per parameter
    in the backward, no division per gradient and no small buckets.

    ``overlap``: a wav2vec 2.0-style model's Transformer encoder (``wav2vec2.encoder``: the
    positional convolution and the blocks, nearly all the weights) has all its gradients once
    the gradient of its input exists; a hook on that input launches their all-reduce then, and
    it runs while the backward goes on through the feature projection and the conv feature
    encoder. (A compiled model's whole-graph stack hands every block's gradient over at once,
    so torch's per-parameter buckets overlap little more than this.) The rest follows after the
    backward.

    Parameters without a gradient (a frozen Transformer, LayerDrop's dropped blocks) are left
    out and keep none, so AdamW leaves them as one process would. Every rank must leave out the
    same ones, as a shared LayerDrop generator (`share_layerdrop`) and the same schedule do;
    the first reduction checks it.
    """

    def __init__(self, module: nn.Module, allreduce_dtype: str = "fp32", bucket_mb: float = FLAT_BUCKET_MB,
                 overlap: bool = True):
        super().__init__()
        if allreduce_dtype not in ALLREDUCE_DTYPES:
            raise ValueError(f"allreduce_dtype {allreduce_dtype!r}; expected one of {ALLREDUCE_DTYPES}")
        if not bucket_mb > 0:
            raise ValueError(f"bucket_mb {bucket_mb!r}: the size of the flat buffers in MB, > 0")
        self.module = module
        self.allreduce_dtype = allreduce_dtype
        self.bucket_bytes = int(bucket_mb * 2**20)
        self.average = dist.get_backend() == "nccl"  # NCCL takes the mean itself; others sum, then divide
        self.checked = False  # the first reduction compares the ranks' gradient sets (and launches none early)
        self.syncing = True  # gradient_sync: this batch's backward ends the update
        self._forwarding = self._armed = False
        self.early_launches = 0
        self._early: list = []  # all-reduces launched during the backward: (bucket, flat, wire, work)
        self.encoder = getattr(getattr(module, "wav2vec2", None), "encoder", None) if overlap else None
        if self.encoder is not None:  # the hook goes with this wrapper (a later one, or none, may follow)
            me = weakref.ref(self)
            handle = self.encoder.register_forward_pre_hook(lambda m, args: me() and me()._arm(m, args))
            weakref.finalize(self, handle.remove)
        _from_rank0(module)

    def forward(self, *args, **kwargs):
        self._forwarding = True  # only forwards through this wrapper arm the overlap's hook
        self._armed = False
        try:
            return self.module(*args, **kwargs)
        finally:
            self._forwarding = False

    def buckets(self, params=None) -> list[list[nn.Parameter]]:
        """``params`` (default: all with a gradient), in order, in groups of one dtype and up to ``bucket_mb``."""
        out, size = [], 0
        for p in self.module.parameters() if params is None else params:
            if p.grad is None:
                continue
            nbytes = p.grad.numel() * p.grad.element_size()
            if not out or size + nbytes > self.bucket_bytes or out[-1][0].grad.dtype != p.grad.dtype:
                out.append([])
                size = 0
            out[-1].append(p)
            size += nbytes
        return out

    def _arm(self, encoder: nn.Module, args: tuple) -> None:
        """Forward pre-hook of the encoder: in a backward that all-reduces, launch the encoder's
        share when the gradient of its input is computed (all its parameters' are in by then)."""
        x = args[0] if args else None
        # the first call only: should a model run its encoder twice, the first call's input is the
        # last to get its gradient, when both calls' parameter gradients are in
        if self._forwarding and not self._armed and self.syncing and self.checked and torch.is_grad_enabled() \
                and isinstance(x, torch.Tensor) and x.requires_grad:
            self._armed = True
            x.register_hook(self._launch_early)

    @torch.no_grad()
    def _launch_early(self, grad: torch.Tensor) -> None:
        self._early += self._launch(self.buckets(self.encoder.parameters()))
        self.early_launches += 1

    def _launch(self, buckets: list[list[nn.Parameter]]) -> list:
        op = dist.ReduceOp.AVG if self.average else dist.ReduceOp.SUM
        pending = []
        for bucket in buckets:
            flat = torch.cat([p.grad.reshape(-1) for p in bucket])
            wire = flat.to(torch.bfloat16) if self.allreduce_dtype == "bf16" else flat
            pending.append((bucket, flat, wire, dist.all_reduce(wire, op=op, async_op=True)))
        return pending

    def _check_same_gradients(self, buckets: list[list[nn.Parameter]]) -> None:
        """Once: every rank has gradients for the same parameters (a clear error, not a hang)."""
        names = {p: n for n, p in self.module.named_parameters()}
        mine = [names[p] for bucket in buckets for p in bucket]
        signature = torch.tensor([len(mine), sum(p.numel() for bucket in buckets for p in bucket)],
                                 dtype=torch.float64, device=next(iter(names)).device)
        seen = [torch.zeros_like(signature) for _ in range(dist.get_world_size())]
        dist.all_gather(seen, signature)
        if any(not torch.equal(t, signature) for t in seen):
            raise RuntimeError(
                f"rank {dist.get_rank()}: the ranks have gradients for different parameters "
                f"(parameters, values per rank: {[t.tolist() for t in seen]}); this rank's: {mine[:8]}"
                f"{' ...' if len(mine) > 8 else ''}. Every rank must run the same parameters: LayerDrop "
                "from one generator (sharding.share_layerdrop), the same freezing schedule")
        self.checked = True

    @torch.no_grad()
    def reduce_gradients(self) -> None:
        """Every rank's gradients replaced by their mean over the ranks (a collective): those the
        backward launched early, and the rest now."""
        early = {p for bucket, *_ in self._early for p in bucket}
        buckets = self.buckets([p for p in self.module.parameters() if p not in early])
        if not self.checked:  # ranks that disagree would all-reduce buffers of different sizes
            self._check_same_gradients(buckets)
        pending, self._early = self._early + self._launch(buckets), []
        world = dist.get_world_size()
        for bucket, flat, wire, work in pending:
            work.wait()  # on a GPU: the compute stream waits, not the host
            if not self.average:
                wire.div_(world)
            if wire is not flat:
                flat.copy_(wire)
            offset = 0
            for p in bucket:
                n = p.grad.numel()
                mean = flat[offset:offset + n].view(p.grad.shape)
                if p.grad.is_contiguous():
                    p.grad = mean
                else:
                    p.grad.copy_(mean)
                offset += n


def _bf16_allreduce(group, bucket):  # no annotations: DDP compares them to its own types, which postponed ones are not
    """DDP communication hook (a `dist.GradBucket` in, a future of its tensor out): the bucket's
    mean over the ranks, sent as bfloat16 (any backend that sums bfloat16: NCCL and gloo) and
    written back into the fp32 bucket. Two passes over the bucket besides the all-reduce (torch's
    bf16_compress_hook takes three, and refuses gloo)."""
    group = group or dist.group.WORLD
    buffer = bucket.buffer()
    scale = 1.0 / dist.get_world_size(group)
    work = dist.all_reduce(buffer.to(torch.bfloat16), group=group, async_op=True)  # the sum; bf16 has fp32's range
    # the mean written back in the pass that copies it into the bucket
    return work.get_future().then(lambda fut: torch.mul(fut.value()[0], scale, out=buffer))


def compile_for(model: nn.Module, strategy: str, info: DistInfo, per_block: bool = False,
                cuda_graphs: bool = False) -> nn.Module:
    """``accel.compile_model`` as ``strategy`` over ``info.world_size`` processes needs it (call
    before :func:`wrap`).

    - The Transformer blocks run as one graph, except under FSDP over several processes (FSDP
      gathers a block's sharded weights in hooks of the block's own call, which the one graph
      calls past) or when ``per_block`` asks for a graph per block.
    - Under DDP, without dynamo's DDPOptimizer: it splits each graph at DDP's gradient buckets
      so that all-reduces overlap the backward, but on BASE pre-training over 2 H100s the split
      graphs cost more than the overlap saved (52-76 ms a step split, 44-46 ms whole; one GPU
      38-42 ms; BENCHMARKS.md). The all-reduce of the whole gradient takes 1.3 ms there.
    - LayerDrop's dropped blocks are skipped; under DDP (`wrap`) their parameters are tied into
      the output at weight zero (every parameter gets a gradient, so DDP need not search for
      unused ones every step; `TransformerEncoder.dropped_blocks`). Computing them and
      discarding their output instead, as this did before, cost DDP the dropped blocks' compute
      (5% of BASE's blocks on average, 20% of LARGE's at its LayerDrop of 0.2).
    - ``cuda_graphs`` (the one-graph stack replayed as CUDA graphs, `accel.use_stack_cuda_graphs`)
      in one process only: it was measured on one GPU, not yet under DDP, and FSDP has no one graph.
    """
    from w2v.models.accel import compile_model

    if cuda_graphs and (info.enabled or per_block):
        raise ValueError("cuda_graphs: the Transformer stack as CUDA graphs runs in one process with the stack as "
                         "one graph; switch it off for several processes (ddp, fsdp) or per-block graphs")

    if info.enabled and strategy == "ddp":
        torch._dynamo.config.optimize_ddp = False
    return compile_model(model, one_graph=not (per_block or (info.enabled and strategy == "fsdp")),
                         cuda_graphs=cuda_graphs)


def share_layerdrop(model: nn.Module, generator: torch.Generator) -> None:
    """Draw LayerDrop's dropped blocks from ``generator``, the same on every rank: FSDP's
    collectives need every rank to run the same blocks, and so does DDP with the compiled stack
    (``accel.release_dropped_grads`` runs after the all-reduce). No-op for models without it."""
    raw = getattr(model, "module", model)
    encoder = getattr(getattr(raw, "wav2vec2", None), "encoder", None)
    if encoder is not None and hasattr(encoder, "layerdrop_generator"):
        encoder.layerdrop_generator = generator


@contextlib.contextmanager
def gradient_sync(model: nn.Module, enabled: bool):
    """Run one batch's forward and backward in this context; ``enabled`` False (all batches of an
    update but its last, when gradients accumulate over several) keeps the gradients local:
    DDP all-reduces and FSDP reduce-scatters once per update, the last batch's backward carrying
    the sum of all; `Replicated` all-reduces when the last batch's backward is done. A no-op in
    one process and, but for `Replicated`, when ``enabled``."""
    if isinstance(model, Replicated):  # reduces during and after the backward of the update's last batch
        model.syncing = enabled
        yield
        if enabled:
            model.reduce_gradients()
    elif enabled:
        yield
    elif isinstance(model, nn.parallel.DistributedDataParallel):
        with model.no_sync():
            yield
    elif is_sharded(model):
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)
    else:
        yield


def is_sharded(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def grad_norm(params: list[nn.Parameter], max_norm: float) -> torch.Tensor:
    """Clip gradients to ``max_norm``; the norm over all ranks' shards as a plain tensor."""
    from torch.distributed.tensor import DTensor

    norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
    return norm.full_tensor() if isinstance(norm, DTensor) else norm


def _full_options():
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True)


def model_state(model: nn.Module) -> dict:
    """The full state dict (on rank 0; empty on the others when sharded). A collective under FSDP."""
    if not is_sharded(model):
        return model.state_dict()
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(model, options=_full_options())


def _param_names(model: nn.Module, opt: torch.optim.Optimizer) -> list[str]:
    """The name of each optimizer parameter, in the optimizer's (index) order."""
    names = {id(p): n for n, p in model.named_parameters()}
    return [names[id(p)] for g in opt.param_groups for p in g["params"]]


def optimizer_state(model: nn.Module, opt: torch.optim.Optimizer) -> dict:
    """``opt.state_dict()`` as one process would have it (on rank 0). A collective under FSDP."""
    if not is_sharded(model):
        return opt.state_dict()
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    full = get_optimizer_state_dict(model, opt, options=_full_options())
    if not full:
        return {}
    index = {n: i for i, n in enumerate(_param_names(model, opt))}
    return {"state": {index[n]: s for n, s in full["state"].items()},
            "param_groups": [{**g, "params": [index[n] for n in g["params"]]} for g in full["param_groups"]]}


_HOW = ("fused", "foreach", "capturable", "differentiable")  # how an optimizer computes, not what


def load_optimizer_state(model: nn.Module, opt: torch.optim.Optimizer, sd: dict) -> None:
    """Load a state written by :func:`optimizer_state` (any strategy) into this rank's ``opt``.
    How ``opt`` computes (fused, foreach) stays as it was built, whatever the run that wrote the
    state used: those flags are part of a param group's state, and loading would adopt them."""
    how = [{k: g[k] for k in _HOW if k in g} for g in opt.param_groups]
    # into the state before loading: where the loaded step counts live follows these flags
    sd = {**sd, "param_groups": [{**g, **flags} for g, flags in zip(sd["param_groups"], how)]}
    if not is_sharded(model):
        opt.load_state_dict(sd)
    else:
        _load_sharded_optimizer_state(model, opt, sd)


def _load_sharded_optimizer_state(model: nn.Module, opt: torch.optim.Optimizer, sd: dict) -> None:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    names = _param_names(model, opt)
    if len(names) != sum(len(g["params"]) for g in sd["param_groups"]):
        raise ValueError(f"optimizer state has {sum(len(g['params']) for g in sd['param_groups'])} parameters, "
                         f"the model {len(names)}")
    named = {"state": {names[i]: s for i, s in sd["state"].items()},
             "param_groups": [{**g, "params": [names[i] for i in g["params"]]} for g in sd["param_groups"]]}
    set_optimizer_state_dict(model, opt, named, options=StateDictOptions(full_state_dict=True))
