"""Several training processes (DDP through ``torchrun``): who am I, how batches are shared out.

The training loop runs unchanged in one process or under ``torchrun``, which sets ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK``. Then the model is wrapped in DistributedDataParallel (NCCL
on CUDA, gloo on CPU), every rank takes an equal share of each epoch's batches (see
:func:`shard_batches`), and only rank 0 writes files. A rank that fails makes ``torchrun``
stop the others; a rank stuck waiting for a dead peer gives up after the process group's
timeout instead of hanging.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job (rank 0 of 1 when not launched by torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def step_seed(seed: int, update: int, rank: int = 0, micro: int = 0) -> int:
    """The seed of one batch's random draws (crops, masks, negatives, LayerDrop): batch ``micro``
    of update ``update`` on ``rank``, each combination its own (rank 0 for draws every rank must
    share, e.g. LayerDrop's)."""
    return seed * 1_000_003 + update + rank * 1_000_000_007 + micro * 1_000_000_000_039


def dist_info() -> DistInfo:
    """Read torchrun's environment variables."""
    env = os.environ
    return DistInfo(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))


def init(info: DistInfo, device: torch.device, timeout_s: float) -> torch.device:
    """Join the process group (when several ranks) and return this rank's device.

    On CUDA each rank takes GPU ``LOCAL_RANK``; on CPU all ranks use gloo.
    """
    if device.type == "cuda" and info.enabled:
        visible = torch.cuda.device_count()
        if info.local_rank >= visible:
            raise RuntimeError(f"rank {info.rank}: LOCAL_RANK {info.local_rank} needs GPU {info.local_rank}, but "
                               f"{visible} GPU(s) are visible on this node; start at most {visible} processes "
                               f"per node (torchrun --nproc-per-node {visible}, the recipe's gpus)")
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    if info.enabled and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=info.rank,
                                world_size=info.world_size, timeout=timedelta(seconds=timeout_s))
    return device


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard_batches(batches: list[list[int]], rank: int, world_size: int) -> list[list[int]]:
    """This rank's share of an epoch: every rank gets exactly ``ceil(len(batches) / world_size)``.

    The remainder is padded by wrapping around to the epoch's first batches (as PyTorch's
    ``DistributedSampler`` does), so no batch is dropped, a few are seen twice per epoch, and
    no rank waits in an all-reduce for a peer that has run out of data.
    """
    if world_size == 1:
        return batches
    per_rank = -(-len(batches) // world_size)
    padded = list(itertools.islice(itertools.cycle(batches), per_rank * world_size))
    return padded[rank::world_size]


def any_true(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """True on every rank if ``flag`` is true on any (so that all ranks take the same branch)."""
    if not info.enabled:
        return flag
    return bool(any_true_on_device(torch.tensor([1.0 if flag else 0.0], device=device), info).item() > 0)


def any_true_on_device(flag: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """``flag`` (a float tensor, nonzero for true) as its maximum over all ranks, in place and
    left on its device: the all-reduce is queued like a kernel, and the host does not wait."""
    if info.enabled:
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return flag


def gather(obj, info: DistInfo) -> list:
    """Every rank's ``obj``, in rank order (a one-item list in a single process)."""
    if not info.enabled:
        return [obj]
    out: list = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def launch(nproc: int, argv: list[str]) -> int:
    """Run ``python -m w2v.cli ARGV`` as ``nproc`` processes under torchrun; its exit status."""
    cmd = [sys.executable, "-m", "w2v.train.distributed", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "w2v.cli", *argv]
    return subprocess.run(cmd).returncode


def _torchrun(argv: list[str]) -> int:
    """torchrun, with its summary of failed ranks but without its own Python traceback."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    try:
        run(parse_args(argv))
    except ChildFailedError as e:
        print(e.format_msg(), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_torchrun(sys.argv[1:]))
