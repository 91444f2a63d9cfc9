"""Run under torchrun (2 CPU processes, gloo) by test_sharding.py: DDP's gradient all-reduce as
`sharding.wrap` sets it up, on a small linear model and different data on each rank.

Arguments: OUT_DIR. Each rank writes rank_K.json: its own gradients, their mean over the ranks (an fp32 all-reduce), the gradients DDP leaves after an "fp32" and after a "bf16"
all-reduce (each from a fresh wrapper of the same model, the one before deleted, as
bench/shard_step.py --interleave does), and how many buckets the first wrapper's counting
communication hook saw before and after the others ran.
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
dev = distributed.init(info, torch.device("cpu"), 120.0)
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Tanh(), torch.nn.Linear(64, 1))
x = torch.randn(16, 64, generator=torch.Generator().manual_seed(1 + info.rank))


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
flat = lambda gs: torch.cat([g.reshape(-1) for g in gs]).tolist()  # noqa: E731
(out / f"rank_{info.rank}.json").write_text(json.dumps({
    "own": flat(own), "mean": flat(plain), "first": flat(via_first), "fp32": flat(results["fp32"]), "bf16": flat(results["bf16"]),
    "counted_first": seen_by_first, "counted_after": len(counted)}))
distributed.shutdown()
