"""Several training processes (DDP, gloo on CPU): equal shares, rank 0 writes, a failed rank ends the job."""

from __future__ import annotations

import json

import pytest
import torch
from lhotse import load_manifest

from reliability.helpers import ddp_worker, run, tiny_data, tiny_recipe, w2v_cmd
from synth import write_tiny_cuts
from w2v.data.batching import BatchPlan
from w2v.train.distributed import shard_batches

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed missing")


@pytest.mark.parametrize("n_batches,world", [(7, 2), (6, 3), (1, 2), (5, 4)])
def test_every_rank_gets_the_same_number_of_batches(n_batches, world):
    batches = [[i] for i in range(n_batches)]
    shares = [shard_batches(batches, r, world) for r in range(world)]
    assert len({len(s) for s in shares}) == 1  # no rank runs out first and hangs the all-reduce
    assert len(shares[0]) == -(-n_batches // world)
    assert {b[0] for s in shares for b in s} == set(range(n_batches))  # the remainder wraps, nothing dropped
    assert shard_batches(batches, 0, 1) == batches


@pytest.fixture(scope="module")
def two_rank_run(tmp_path_factory):
    """An uninterrupted 2-process pre-training on 7 cuts (an odd number of batches per epoch)."""
    tmp = tmp_path_factory.mktemp("ddp")
    cuts = write_tiny_cuts(tmp / "a", n=7)
    r = ddp_worker(cuts, tmp / "out", tmp / "rec")
    assert r.returncode == 0, r.stderr[-4000:]
    return cuts, tmp / "out", tmp / "rec"


def test_two_processes_train_identically_and_only_rank0_writes(two_rank_run):
    _, out, rec = two_rank_run
    seen = [json.loads((rec / f"rank_{k}.json").read_text()) for k in (0, 1)]
    assert seen[0]["all_batches"] % 2 == 1  # uneven: the case that hangs DDP without padding
    assert seen[0]["batches_per_epoch"] == seen[1]["batches_per_epoch"]
    assert seen[1]["writes"] == []
    # the defaults: the flat reducer (no torch DDP) with its own buffer size, fp32 on the wire, the
    # encoder's share launched during the backward
    assert seen[0]["flat_reducer"] == {"args": ["fp32", 512.0, True]} and "ddp_bucket_cap_mb" not in seen[0]
    assert any(w.endswith("model.pt") for w in seen[0]["writes"])
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint_00000002.pt",
                                                                      "checkpoint_00000004.pt"]
    w0, w1 = (torch.load(rec / f"weights_{k}.pt", weights_only=True) for k in (0, 1))
    for k in w0:
        assert torch.isfinite(w0[k].float()).all(), k
        assert torch.equal(w0[k], w1[k]), k
    ck = torch.load(out / "checkpoints/checkpoint_00000004.pt", weights_only=True)
    assert ck["world_size"] == 2 and len(ck["rng"]) == 2  # each rank's RNG state, for an exact resume
    assert not torch.equal(ck["rng"][0]["torch"], ck["rng"][1]["torch"])
    final = torch.load(out / "model.pt", weights_only=True)["model"]
    assert all(torch.equal(final[k], w0[k]) for k in w0)


def test_ddp_settings_reach_the_wrapper_and_bf16_gradients_keep_the_ranks_equal(tmp_path):
    """Training's `allreduce_dtype: bf16` and `ddp_bucket_mb` reach either reducer (torch's DDP
    with `ddp_reducer: buckets`); the ranks, each summing the same bf16 shares, still end with
    the same weights."""
    cuts = write_tiny_cuts(tmp_path / "a", n=7)
    for reducer in ("buckets", "flat"):
        rec = tmp_path / f"rec_{reducer}"
        r = ddp_worker(cuts, tmp_path / reducer, rec, allreduce_dtype="bf16", ddp_bucket_mb=1.5, ddp_reducer=reducer)
        assert r.returncode == 0, r.stderr[-4000:]
        seen = [json.loads((rec / f"rank_{k}.json").read_text()) for k in (0, 1)]
        for rank in seen:
            if reducer == "buckets":
                assert rank["ddp_bucket_cap_mb"] == 1.5 and rank["comm_hooks"] == ["_bf16_allreduce"]
            else:
                assert rank["flat_reducer"] == {"args": ["bf16", 1.5, True]} and "ddp_bucket_cap_mb" not in rank
        w0, w1 = (torch.load(rec / f"weights_{k}.pt", weights_only=True) for k in (0, 1))
        for k in w0:
            assert torch.isfinite(w0[k].float()).all() and torch.equal(w0[k], w1[k]), k


def test_flat_reducer_trains_the_model_torchs_ddp_trains_reducing_once_per_update(two_rank_run, tmp_path):
    """`ddp_reducer: flat` (sharding.Replicated, the default; the fixture's run): no DDP wrapper;
    flat buffers all-reduced by the end of each update's last backward, the encoder's launched
    during it; the ranks stay equal and end where torch's DDP (`ddp_reducer: buckets`) ends, with
    `update_freq: 2` too, one reduction per update."""
    cuts, _, rec_flat = two_rank_run
    for name, settings in (("buckets", {}), ("buckets2", {"update_freq": 2}), ("flat2", {"update_freq": 2})):
        reducer = "flat" if name.startswith("flat") else "buckets"
        r = ddp_worker(cuts, tmp_path / name, tmp_path / f"rec_{name}", ddp_reducer=reducer, **settings)
        assert r.returncode == 0, r.stderr[-4000:]
    for name, rec in (("flat", rec_flat), ("flat2", tmp_path / "rec_flat2")):
        seen = [json.loads((rec / f"rank_{k}.json").read_text()) for k in (0, 1)]
        for rank in seen:
            assert "ddp_bucket_cap_mb" not in rank and "no_sync" not in rank  # torch's DDP never built
            assert rank["flat_reducer"] == {"args": ["fp32", 512.0, True]} and rank["flat_reductions"] == 4
            # the encoder's share launched during the last batch's backward, from the second update on
            # (the first checks that the ranks agree)
            assert rank["early_launches"] == 3
            if name == "flat":  # each update starts without gradients: the conv encoder's are still to come
                assert rank["conv_grads_pending_at_early_launch"] == [True] * 3
        w0, w1 = (torch.load(rec / f"weights_{k}.pt", weights_only=True) for k in (0, 1))
        assert all(torch.equal(w0[k], w1[k]) for k in w0)
    for name, rec, ref_name in (("flat", rec_flat, "buckets"), ("flat2", tmp_path / "rec_flat2", "buckets2")):
        ref = torch.load(tmp_path / f"rec_{ref_name}/weights_0.pt", weights_only=True)
        flat = torch.load(rec / "weights_0.pt", weights_only=True)
        assert ref.keys() == flat.keys()
        for k in ref:
            torch.testing.assert_close(flat[k], ref[k], rtol=1e-5, atol=1e-6, msg=f"{name}: {k}")


def test_killed_two_process_run_resumes_bit_identical(two_rank_run, tmp_path):
    cuts, _, rec_ref = two_rank_run
    r = ddp_worker(cuts, tmp_path / "out", tmp_path / "rec", "2")  # rank 0 SIGKILLed after checkpoint 2
    assert r.returncode != 0 and not (tmp_path / "out/model.pt").exists()
    r = ddp_worker(cuts, tmp_path / "out", tmp_path / "rec")
    assert r.returncode == 0, r.stderr[-4000:]
    assert "resumed from" in r.stderr
    ref = torch.load(rec_ref / "weights_0.pt", weights_only=True)
    for k in (0, 1):
        got = torch.load(tmp_path / f"rec/weights_{k}.pt", weights_only=True)
        assert all(torch.equal(ref[n], got[n]) for n in ref), k


def test_cli_gpus_runs_torchrun_and_a_failing_rank_ends_the_job(tmp_path):
    cuts, _ = tiny_data(tmp_path, n=8)
    settings = dict(max_updates=4, lr=5e-4, warmup=1, max_duration=3.0, crop_seconds=1.0, save_every=2,
                    num_buckets=2, min_seconds=0.5)
    recipe = tiny_recipe(tmp_path, pretrain=settings, gpus=2)
    # break one file that only rank 1 reads in its first batch
    items = list(load_manifest(cuts))
    plan = BatchPlan([min(c.duration, 1.0) for c in items], 3.0, seed=1, num_buckets=2)
    first = [shard_batches(plan.epoch(0), r, 2)[0] for r in (0, 1)]
    victim = items[next(i for i in first[1] if i not in first[0])]
    victim_file = victim.recording.sources[0].source
    with open(victim_file, "r+b") as f:
        f.truncate(20)
    out = tmp_path / "exp"
    r = run(w2v_cmd("pretrain", recipe, cuts, out), timeout=180)  # gpus: 2 from the recipe
    assert r.returncode != 0
    err = r.stdout + r.stderr
    assert f"w2v pretrain: error (rank 1): cannot load audio of cut {victim.id}" in err, err[-4000:]
    assert "2 training processes under torchrun failed" in err
    assert "Traceback" not in err
    assert not (out / "model.pt").exists()
