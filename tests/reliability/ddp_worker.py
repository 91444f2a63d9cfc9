"""Run under torchrun by test_ddp.py: train, then record what this rank saw, wrote and ended with.

Arguments: CUTS OUT RECORD_DIR [KILL_AT]; with KILL_AT, rank 0 SIGKILLs itself right after
saving the checkpoint of that update (torchrun then stops the other rank). The environment
variable W2V_TEST_SETTINGS (JSON) overrides training settings, e.g. {"strategy": "fsdp"}.
"""

from __future__ import annotations

import builtins
import json
import logging
import os
import signal
import sys
from pathlib import Path

import torch

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[1] / "train")]

from test_loop import SMALL  # noqa: E402
from w2v.models import load_model_config  # noqa: E402
from w2v.train import checkpoint as ck  # noqa: E402
from w2v.train import distributed, sharding  # noqa: E402
from w2v.train.config import TrainConfig  # noqa: E402
from w2v.train.loop import train  # noqa: E402

cuts, out, record = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
logging.basicConfig(level=logging.INFO)
rank = int(os.environ["RANK"])
torch.set_num_threads(1)
seen: dict = {"batches_per_epoch": [], "writes": []}

real_shard, real_open, real_replace = distributed.shard_batches, builtins.open, os.replace


def shard(batches, r, w):
    mine = real_shard(batches, r, w)
    seen["batches_per_epoch"].append(len(mine))
    seen["all_batches"] = len(batches)
    return mine


def open_(file, mode="r", *a, **k):
    if any(c in mode for c in "wax+"):
        seen["writes"].append(str(file))
    return real_open(file, mode, *a, **k)


def replace(src, dst, *a, **k):
    seen["writes"].append(str(dst))
    return real_replace(src, dst, *a, **k)


modules = []
real_init = torch.nn.parallel.DistributedDataParallel.__init__


real_hook = torch.nn.parallel.DistributedDataParallel.register_comm_hook


def ddp_init(self, module, *a, **k):
    modules.append(module)
    seen["ddp_bucket_cap_mb"] = k.get("bucket_cap_mb")
    seen["ddp_bucket_view"] = k.get("gradient_as_bucket_view")
    real_init(self, module, *a, **k)


real_no_sync = torch.nn.parallel.DistributedDataParallel.no_sync


def no_sync(self):  # counted: the batches of an update before its last (update_freq)
    seen["no_sync"] = seen.get("no_sync", 0) + 1
    return real_no_sync(self)


def register_comm_hook(self, state, hook):
    seen.setdefault("comm_hooks", []).append(hook.__name__)
    real_hook(self, state, hook)


real_replicated, real_reduce = sharding.Replicated.__init__, sharding.Replicated.reduce_gradients


def replicated_init(self, module, *a, **k):  # ddp_reducer: flat
    modules.append(module)
    seen["flat_reducer"] = {"args": [*a], **k}
    real_replicated(self, module, *a, **k)


def reduce_gradients(self):  # counted: once per update; and the encoder's share launched during the backward
    seen["flat_reductions"] = seen.get("flat_reductions", 0) + 1
    seen["early_launches"] = self.early_launches
    real_reduce(self)


real_early = sharding.Replicated._launch_early


def launch_early(self, grad):  # launched while the backward has yet to reach the conv feature encoder
    pending = [p.grad is None for p in self.module.wav2vec2.feature_extractor.parameters()]
    seen.setdefault("conv_grads_pending_at_early_launch", []).append(all(pending))
    real_early(self, grad)


sharding.Replicated.__init__, sharding.Replicated.reduce_gradients = replicated_init, reduce_gradients
sharding.Replicated._launch_early = launch_early
distributed.shard_batches, builtins.open, os.replace = shard, open_, replace
if len(sys.argv) > 4:
    kill_at, real_save = int(sys.argv[4]), ck.CheckpointDir.save

    def save_then_die(self, state, num_updates, is_best=False):
        real_save(self, state, num_updates, is_best)
        if num_updates == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    ck.CheckpointDir.save = save_then_die
torch.nn.parallel.DistributedDataParallel.__init__ = ddp_init
torch.nn.parallel.DistributedDataParallel.register_comm_hook = register_comm_hook
torch.nn.parallel.DistributedDataParallel.no_sync = no_sync
tcfg = TrainConfig(task="pretrain", max_updates=4, lr=5e-4, warmup=1, max_duration=3.0, crop_seconds=1.0,
                   save_every=2, log_every=1, num_buckets=2, **json.loads(os.environ.get("W2V_TEST_SETTINGS", "{}")))
train(tcfg, cuts, out, load_model_config("tiny", **SMALL), device="cpu")
builtins.open, os.replace = real_open, real_replace
record.mkdir(parents=True, exist_ok=True)
if modules:  # DDP (either reducer): this rank's own copy of the weights
    torch.save(modules[0].state_dict(), record / f"weights_{rank}.pt")
(record / f"rank_{rank}.json").write_text(json.dumps(seen))
