"""w2v.train.sharding: how the model is compiled for each strategy, and LayerDrop shared by ranks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from w2v.models import Wav2Vec2ForPreTraining, load_model_config
from w2v.train import sharding
from w2v.train.distributed import DistInfo


@pytest.mark.parametrize("strategy,world,per_block,one_graph,split", [
    ("ddp", 1, False, True, True),     # one process: nothing changes
    ("ddp", 2, False, True, False),    # DDP: one graph, not split at gradient buckets
    ("ddp", 2, True, False, False),
    ("fsdp", 2, False, False, True),   # FSDP gathers each block in its own call
    ("fsdp", 1, False, True, True),
])
def test_compile_for_picks_graphs_by_strategy(strategy, world, per_block, one_graph, split):
    model = Wav2Vec2ForPreTraining(load_model_config("tiny"))
    with torch._dynamo.config.patch(optimize_ddp=True):  # torch's default, restored after
        sharding.compile_for(model, strategy, DistInfo(rank=0, world_size=world), per_block=per_block)
        assert torch._dynamo.config.optimize_ddp == split
    assert (model.wav2vec2.encoder.compiled_stack is not None) == one_graph
    assert model.static_head  # the pre-training head compiled with static shapes


def test_cuda_graphs_in_one_process_only():
    model = Wav2Vec2ForPreTraining(load_model_config("tiny"))
    sharding.compile_for(model, "ddp", DistInfo(), cuda_graphs=True)  # lazily: nothing compiled yet
    assert model.wav2vec2.encoder.cuda_graphs
    for strategy, world, per_block in (("ddp", 2, False), ("fsdp", 2, False), ("ddp", 1, True)):
        with pytest.raises(ValueError, match="cuda_graphs"):
            sharding.compile_for(Wav2Vec2ForPreTraining(load_model_config("tiny")), strategy,
                                 DistInfo(rank=0, world_size=world), per_block=per_block, cuda_graphs=True)
    torch._inductor.config.cpp_wrapper = False


def test_share_layerdrop_reaches_through_a_wrapper():
    model = Wav2Vec2ForPreTraining(load_model_config("tiny"))
    g = torch.Generator().manual_seed(3)
    wrapper = torch.nn.Module()
    wrapper.module = model  # what DDP looks like from outside
    sharding.share_layerdrop(wrapper, g)
    assert model.wav2vec2.encoder.layerdrop_generator is g
    sharding.share_layerdrop(torch.nn.Linear(2, 2), g)  # no encoder: nothing to do


def test_more_ranks_than_visible_gpus_is_a_clear_error(monkeypatch):
    """torchrun started with more processes per node than GPUs: say so, before touching a GPU."""
    from w2v.train import distributed

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(RuntimeError, match="LOCAL_RANK 1 needs GPU 1, but 1 GPU\\(s\\) are visible.*nproc-per-node 1"):
        distributed.init(DistInfo(rank=1, world_size=2, local_rank=1), torch.device("cuda"), 60.0)


def test_a_loaded_optimizer_state_keeps_how_the_optimizer_computes():
    """A run resumed from a checkpoint written by a non-fused AdamW (FSDP's, another torch's)
    stays fused, so it can still skip a non-finite step on the device."""
    from w2v.train import sharding
    from w2v.train.distributed import DistInfo
    from w2v.train.optim import update

    model = torch.nn.Linear(3, 2)
    written = torch.optim.AdamW(model.parameters(), lr=0.1, foreach=True)
    model(torch.randn(4, 3)).sum().backward()
    written.step()
    opt = torch.optim.AdamW(model.parameters(), lr=0.1, fused=True)
    sharding.load_optimizer_state(model, opt, written.state_dict())
    assert opt.param_groups[0]["fused"] and not opt.param_groups[0]["foreach"]
    assert float(opt.state[model.weight]["step"]) == 1  # the state itself is the written one
    assert torch.equal(opt.state[model.weight]["exp_avg"], written.state[model.weight]["exp_avg"])
    for p in model.parameters():
        p.grad = torch.full_like(p, float("nan"))
    _, _, skipped = update(opt, torch.tensor(1.0), torch.tensor(float("nan")), {}, DistInfo())
    assert skipped and float(opt.state[model.weight]["step"]) == 1


def _two_ranks(worker: str, tmp_path: Path, *args: str, gpus: bool = False) -> subprocess.CompletedProcess:
    """tests/train/``worker`` under torchrun as 2 CPU processes (gloo), writing into ``tmp_path``;
    ``gpus``: a process per GPU (NCCL) instead, the worker told so by its last argument "cuda"."""
    root = Path(__file__).resolve().parents[2]
    tmp_path.mkdir(parents=True, exist_ok=True)
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(root / "tests/train" / worker), str(tmp_path), *args, *(["cuda"] if gpus else [])],
                          capture_output=True, text=True, timeout=300, cwd=root,
                          env=os.environ if gpus else {**os.environ, "CUDA_VISIBLE_DEVICES": ""})


TWO_GPUS = [pytest.param(False, id="gloo"), pytest.param(True, id="nccl", marks=pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.device_count() < 2, reason="needs 2 GPUs"))]


@pytest.mark.parametrize("path", ["compiled", "eager"])
def test_ddp_skips_dropped_blocks_and_ties_their_parameters_in(tmp_path, path):
    """Under DDP the Transformer skips LayerDrop's dropped blocks (as one process does: in the
    compiled stack, or block by block with activation checkpointing) and ties their parameters
    into the output at weight zero: DDP, not searching for unused parameters, finds every
    gradient ready, the dropped blocks stay untouched by the update, and both ranks end with
    the same weights. Without the tie the same DDP fails at the next update."""
    r = _two_ranks("layerdrop_ddp_worker.py", tmp_path / "tie", path)
    assert r.returncode == 0, r.stderr[-4000:]
    seen = [json.loads((tmp_path / f"tie/rank_{k}.json").read_text()) for k in (0, 1)]
    assert seen[0]["dropped_blocks"] == "tie" and not seen[0]["find_unused"]
    assert seen[0]["dropped"] == seen[1]["dropped"]  # one LayerDrop generator for all ranks
    assert any(seen[0]["dropped"]) and any(len(d) > 1 for d in seen[0]["dropped"])  # one graph, and per-block calls
    assert seen[0]["changed"] == [[]] * 4  # a dropped block's weights are not updated
    w0, w1 = (torch.load(tmp_path / f"tie/weights_{k}.pt", weights_only=True) for k in (0, 1))
    assert all(torch.equal(w0[k], w1[k]) for k in w0)

    r = _two_ranks("layerdrop_ddp_worker.py", tmp_path / "skip", path, "skip-unsearched")
    assert r.returncode != 0 and "find_unused_parameters" in r.stderr


@pytest.mark.parametrize("gpus", TWO_GPUS)
def test_ddp_all_reduces_gradients_in_fp32_or_bf16_and_a_deleted_wrapper_leaves_no_hooks(tmp_path, gpus):
    """`sharding.wrap(allreduce_dtype=...)`: "fp32" leaves every rank the exact mean gradient,
    "bf16" the mean to bfloat16's precision (half the bytes on the wire); a wrapper deleted
    before the next is made no longer reduces (bench/shard_step.py --interleave relies on it).
    On 2 GPUs the same through NCCL, which takes the flat reducer's mean itself (ReduceOp.AVG)."""
    r = _two_ranks("ddp_hook_worker.py", tmp_path, gpus=gpus)
    assert r.returncode == 0, r.stderr[-4000:]
    seen = [json.loads((tmp_path / f"rank_{k}.json").read_text()) for k in (0, 1)]
    mean = torch.tensor(seen[0]["mean"])
    assert mean.abs().max() > 1e-3  # a gradient to compare
    # each rank's share rounded to bfloat16 (8 significant bits), then the sum rounded again
    bound = 2**-8 * (torch.tensor(seen[0]["own"]).abs() + torch.tensor(seen[1]["own"]).abs()) / 2 + 2**-8 * mean.abs()
    for rank in seen:
        assert torch.allclose(torch.tensor(rank["first"]), mean, rtol=1e-5, atol=1e-7)
        assert torch.allclose(torch.tensor(rank["fp32"]), mean, rtol=1e-5, atol=1e-7)
        bf16 = torch.tensor(rank["bf16"])
        assert ((bf16 - mean).abs() <= bound + 1e-9).all()
        assert not torch.equal(bf16, mean)  # rounded on the wire
        assert rank["counted_first"] >= 1 and rank["counted_after"] == rank["counted_first"]
    assert seen[0]["bf16"] == seen[1]["bf16"] and seen[0]["fp32"] == seen[1]["fp32"]
    # reducer "flat" (sharding.Replicated): the same mean after the backward, in several buffers
    for rank in seen:
        assert rank["flat_buckets"] == 2  # ~10 KB buffers: the 16 KB weight alone, then the other 516 B
        assert torch.allclose(torch.tensor(rank["flat"]), mean, rtol=1e-5, atol=1e-7)
        flat_bf16 = torch.tensor(rank["flat_bf16"])
        assert ((flat_bf16 - mean).abs() <= bound + 1e-9).all() and not torch.equal(flat_bf16, mean)
        layout = rank["flat_layout"]
        assert layout["weight_strides"] == [1, 64]  # the transposed layout it came with
        assert torch.allclose(torch.tensor(layout["weight"]), mean[:64 * 64], rtol=1e-5, atol=1e-7)
        assert layout["untouched"] == [True, True] and layout["view_of_buffer"]
    assert seen[0]["flat"] == seen[1]["flat"] and seen[0]["flat_layout"] == seen[1]["flat_layout"]
    assert seen[0]["flat_nccl_mean"] is gpus and seen[1]["flat_nccl_mean"] is gpus
    assert seen[0]["encoder_hooks"] == [1, 0]  # overlap's hook on the encoder, gone with its wrapper
    # launched once, in the backward of the forward through the wrapper, not of the model's own
    assert seen[0]["overlap"] == {"raw_forward_launches": 0, "launches": 1, "mean": True}
    for k, rank in enumerate(seen):  # one rank without a gradient the other has
        assert rank["flat_mismatch"].startswith(f"rank {k}: the ranks have gradients for different parameters")
        assert "[[4.0, 4225.0], [3.0, 4224.0]]" in rank["flat_mismatch"]
