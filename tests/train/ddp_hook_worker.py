"""Run under torchrun (2 CPU processes on gloo, or a process per GPU on NCCL) by test_sharding.py: DDP's gradient all-reduce as
`sharding.wrap` sets it up, on a small linear model and different data on each rank.

Arguments: OUT_DIR [cuda] (cuda: a GPU per rank, NCCL). Each rank writes rank_K.json: its own gradients, their mean over the ranks (an fp32 all-reduce), the gradients DDP leaves after an "fp32" and after a "bf16"
all-reduce (each from a fresh wrapper of the same model, the one before deleted, as
bench/shard_step.py --interleave does), and how many buckets the first wrapper's counting
communication hook saw before and after the others ran; then the same through
`sharding.Replicated` (reducer "flat", fp32 and bf16), and what its reduction does with a
gradient that is not contiguous and with parameters that have none.
"""

from __future__ import annotations

import gc
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from w2v.train import distributed, sharding

out = Path(sys.argv[1])
torch.set_num_threads(1)
info = distributed.dist_info()
dev = distributed.init(info, torch.device(sys.argv[2] if len(sys.argv) > 2 else "cpu"), 120.0)
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Tanh(), torch.nn.Linear(64, 1)).to(dev)
x = torch.randn(16, 64, generator=torch.Generator().manual_seed(1 + info.rank)).to(dev)


def grads(m: torch.nn.Module) -> list[torch.Tensor]:
    for p in model.parameters():
        p.grad = None
    m(x).square().mean().backward()
    return [p.grad.detach().clone() for p in model.parameters()]


own = grads(model)
plain = [g.clone() for g in own]
for g in plain:
    dist.all_reduce(g)
    g /= info.world_size
counted = []


def counting(state, bucket):  # the plain all-reduce, counted
    counted.append(bucket.index())
    return dist.all_reduce(bucket.buffer().div_(info.world_size), async_op=True).get_future().then(
        lambda fut: fut.value()[0])


first = sharding.wrap(model, "ddp", info, dev, False, find_unused=False)
first.register_comm_hook(None, counting)
via_first = grads(first)
seen_by_first = len(counted)
del first  # its reducer's autograd hooks go with it
gc.collect()
results = {}
for dtype in ("fp32", "bf16"):
    ddp = sharding.wrap(model, "ddp", info, dev, False, find_unused=False, allreduce_dtype=dtype)
    results[dtype] = grads(ddp)
    del ddp
    gc.collect()
# sharding.Replicated (reducer "flat"): the mean after the backward, in buffers of ~10 KB (several)
for name, dtype in (("flat", "fp32"), ("flat_bf16", "bf16")):
    rep = sharding.wrap(model, "ddp", info, dev, False, find_unused=False, reducer="flat", allreduce_dtype=dtype,
                        bucket_cap_mb=0.01)
    for p in model.parameters():
        p.grad = None
    with sharding.gradient_sync(rep, True):
        rep(x).square().mean().backward()
    results[name] = [p.grad.detach().clone() for p in model.parameters()]
    buckets = len(rep.buckets())
# a gradient that is not contiguous keeps its layout; the others become views of the buffers
weight = model[0].weight
weight.grad = own[0].t().contiguous().t()
model[2].weight.grad = own[2].clone()
model[0].bias.grad = model[2].bias.grad = None  # no gradient: left out, and left None
rep.allreduce_dtype = "fp32"
rep.reduce_gradients()
layout = {"weight_strides": list(weight.grad.stride()), "weight": weight.grad.reshape(-1).tolist(),
          "untouched": [model[0].bias.grad is None, model[2].bias.grad is None],
          "view_of_buffer": model[2].weight.grad._base is not None}
# ranks with gradients for different parameters: an error on every rank, not a hang
rep = sharding.wrap(model, "ddp", info, dev, False, find_unused=False, reducer="flat")
for p in model.parameters():
    p.grad = torch.zeros_like(p)
if info.rank == 1:
    model[2].bias.grad = None
try:
    rep.reduce_gradients()
    mismatch = None
except RuntimeError as e:
    mismatch = str(e)
# overlap: the encoder's share launched in the backward of a forward through the wrapper only;
# its hook on the encoder goes with the wrapper, as DDP's hooks do


class Holder(torch.nn.Module):  # a wav2vec 2.0-shaped model: something before the encoder
    def __init__(self):
        super().__init__()
        self.front = torch.nn.Linear(4, 4)
        self.wav2vec2 = torch.nn.Module()
        self.wav2vec2.encoder = torch.nn.Linear(4, 4)

    def forward(self, v):  # the encoder twice: launched from the first call's input only
        return self.wav2vec2.encoder(self.wav2vec2.encoder(self.front(v)))


holder = Holder().to(dev)
rep = sharding.wrap(holder, "ddp", info, dev, False, find_unused=False, reducer="flat")
rep.checked = True  # as after a first update
nccl_mean = rep.average  # NCCL takes the mean in the all-reduce; gloo sums, then the buffer is divided
v = torch.randn(3, 4, generator=torch.Generator().manual_seed(5 + info.rank)).to(dev)
holder(v).square().sum().backward()  # the model itself, not the wrapper: nothing launched
overlap = {"raw_forward_launches": rep.early_launches}
expected = [p.grad.clone() for p in holder.parameters()]
for g in expected:
    dist.all_reduce(g)
    g /= info.world_size
for p in holder.parameters():
    p.grad = None
with sharding.gradient_sync(rep, True):
    rep(v).square().sum().backward()
overlap["launches"] = rep.early_launches
# the encoder's share (launched early) and the front's (after the backward): both the mean
overlap["mean"] = all(torch.allclose(p.grad, g, rtol=1e-6, atol=1e-7) for p, g in zip(holder.parameters(), expected))
hooks = [len(holder.wav2vec2.encoder._forward_pre_hooks)]
del rep
gc.collect()
hooks.append(len(holder.wav2vec2.encoder._forward_pre_hooks))
flat = lambda gs: torch.cat([g.reshape(-1) for g in gs]).tolist()  # noqa: E731
(out / f"rank_{info.rank}.json").write_text(json.dumps({
    "own": flat(own), "mean": flat(plain), "first": flat(via_first), "fp32": flat(results["fp32"]), "bf16": flat(results["bf16"]),
    "flat": flat(results["flat"]), "flat_bf16": flat(results["flat_bf16"]), "flat_buckets": buckets,
    "flat_layout": layout, "flat_mismatch": mismatch, "flat_nccl_mean": nccl_mean, "encoder_hooks": hooks, "overlap": overlap, "counted_first": seen_by_first, "counted_after": len(counted)}))
distributed.shutdown()
