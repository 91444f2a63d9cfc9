"""bench/shard_step.py: one sharded pre-training step over 2 CPU processes reports memory and time per rank."""

from __future__ import annotations

import gzip
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
# The ranks of these runs are CPU processes over gloo, also on a machine with one GPU
CPU_ONLY = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}


def test_shard_step_reports_every_rank():
    r = subprocess.run([sys.executable, str(ROOT / "bench/shard_step.py"), "--preset", "tiny", "--ranks", "2",
                        "--batch", "2", "--seconds", "1.5", "--steps", "2"],
                       capture_output=True, text=True, timeout=180, cwd=ROOT, env=CPU_ONLY)
    assert r.returncode == 0, r.stderr[-4000:]
    assert "returned a view tensor" not in r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["strategy"] == "fsdp" and out["world_size"] == 2 and out["activation_checkpointing"] is True
    assert [x["rank"] for x in out["ranks"]] == [0, 1]
    for rank in out["ranks"]:
        assert rank["peak_rss_gib"] > 0.05  # a Python process with torch loaded
        assert len(rank["step_s"]) == 2 and all(t > 0 for t in rank["step_s"])
        assert all(0 < loss < 100 for loss in rank["loss"])
    assert out["ranks"][0]["loss"] != out["ranks"][1]["loss"]  # each rank trained on its own audio
    # weights, gradients and AdamW state split over 2 ranks: 8 bytes per parameter each
    assert abs(out["state_gib_per_rank_estimate"] - 8 * out["params_m"] * 1e6 / 2**30) < 0.01
    assert out["step_s"] == max(x["step_s"][-1] for x in out["ranks"])  # 2 steps: the median of the last one


def test_shard_step_profiles_ddp_ranks_and_their_all_reduce(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "bench/shard_step.py"), "--preset", "tiny", "--ranks", "2",
                        "--batch", "1", "--seconds", "1", "--steps", "1", "--strategy", "ddp", "--profile", "1",
                        "--bucket-mb", "5", "--trace", str(tmp_path / "trace")],
                       capture_output=True, text=True, timeout=180, cwd=ROOT, env=CPU_ONLY)
    assert r.returncode == 0, r.stderr[-4000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["ddp_options"] == {"bucket_cap_mb": 5.0}
    for k in (0, 1):  # each rank's timeline, readable as a Chrome trace
        assert json.loads(gzip.decompress((tmp_path / f"trace/rank{k}.json.gz").read_bytes()))["traceEvents"]
    for rank in out["ranks"]:
        assert len(rank["step_s"]) == 1 and len(rank["loss"]) == 1  # the profiled step is not timed
        assert rank["profile"]["steps"] == 1 and rank["profile"]["wall_ms_per_step"] > 0
        # DDP's reducer all-reduces each 5 MB bucket
        assert rank["profile"]["allreduces_per_step"] >= math.ceil(out["params_m"] * 4 / 5)
        assert rank["profile"]["device_idle_ms_per_step"] == round(rank["profile"]["wall_ms_per_step"] - rank[
            "profile"]["device_any_busy_ms_per_step"], 2)
        assert abs(rank["allreduce"]["mb"] - out["params_m"] * 4) < 0.25  # the fp32 gradient (params_m rounded)


def test_shard_step_flat_reducer_all_reduces_its_buffers_once_per_step():
    """--reducer flat (training's ddp_reducer: flat): no DDP wrapper; the gradients all-reduced
    after the backward in buffers of --bucket-mb, one all-reduce each."""
    r = subprocess.run([sys.executable, str(ROOT / "bench/shard_step.py"), "--preset", "tiny", "--ranks", "2",
                        "--batch", "1", "--seconds", "1", "--steps", "2", "--strategy", "ddp", "--profile", "1",
                        "--reducer", "flat", "--bucket-mb", "0.5"],
                       capture_output=True, text=True, timeout=180, cwd=ROOT, env=CPU_ONLY)
    assert r.returncode == 0, r.stderr[-4000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["ddp_options"] == {"reducer": "flat", "bucket_cap_mb": 0.5} and out["ddp_find_unused"] is None
    buffers = math.ceil(out["params_m"] * 1e6 * 4 / 2**19)  # at least: 0.5 MiB each, some left part-full
    for rank in out["ranks"]:
        assert buffers <= rank["profile"]["allreduces_per_step"] <= 3 * buffers


@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.device_count() < 2, reason="needs 2 GPUs")
def test_shard_step_on_two_gpus_reports_cuda_memory():
    r = subprocess.run([sys.executable, str(ROOT / "bench/shard_step.py"), "--preset", "base", "--ranks", "2",
                        "--batch", "2", "--steps", "2"], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-4000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["precision"] == "bf16" and out["world_size"] == 2
    for rank in out["ranks"]:
        assert 0 < rank["peak_allocated_gib"] <= rank["peak_reserved_gib"]
        assert all(0 < loss < 1000 for loss in rank["loss"])


def test_shard_step_scaling_runs_one_rank_then_all_in_turn_and_reports_the_ratio():
    r = subprocess.run([sys.executable, str(ROOT / "bench/shard_step.py"), "--preset", "tiny", "--ranks", "2",
                        "--batch", "1", "--seconds", "1", "--steps", "3", "--strategy", "ddp", "--scaling",
                        "--repeat", "2", "--layerdrop", "0.5", "--no-activation-checkpointing"],
                       capture_output=True, text=True, timeout=300, cwd=ROOT, env=CPU_ONLY)
    assert r.returncode == 0, r.stderr[-4000:]
    lines = [json.loads(x) for x in r.stdout.strip().splitlines() if x.startswith("{")]
    *runs, summary = lines[-5:]
    assert [x["world_size"] for x in runs] == [1, 2, 1, 2]  # in turn
    # every run skips the same blocks at each step; DDP ties them in instead of searching for unused parameters
    assert runs[0]["layerdrop"] == 0.5 and sum(runs[0]["layerdrop_blocks_dropped"]) > 0
    assert all(x["layerdrop_blocks_dropped"] == runs[0]["layerdrop_blocks_dropped"] for x in runs)
    assert runs[1]["ddp_find_unused"] is False and runs[0]["ddp_find_unused"] is None
    ones, twos = [x["audio_s_per_s"] for x in runs[::2]], [x["audio_s_per_s"] for x in runs[1::2]]
    assert summary["world_size"] == 2 and summary["audio_s_per_s_one"] == sum(ones) / 2  # the median of two
    assert summary["scaling"] == round(sum(twos) / sum(ones), 3)
    assert summary["pairs"] == [round(t / o, 3) for o, t in zip(ones, twos)]
    assert summary["step_s_one"] == [x["step_s"] for x in runs[::2]]


def test_shard_step_scaling_refuses_a_single_rank_by_name():
    r = subprocess.run([sys.executable, str(ROOT / "bench/shard_step.py"), "--preset", "tiny", "--ranks", "1",
                        "--scaling"], capture_output=True, text=True, timeout=60, cwd=ROOT, env=CPU_ONLY)
    assert r.returncode != 0 and "--scaling: needs 2 or more ranks; this machine gives 1" in r.stderr
    r = subprocess.run([sys.executable, str(ROOT / "bench/shard_step.py"), "--repeat", "3"],
                       capture_output=True, text=True, timeout=60, cwd=ROOT, env=CPU_ONLY)
    assert r.returncode == 2 and "--repeat 3: a number of --scaling pairs" in r.stderr


def test_shard_step_interleave_times_ranks_alone_and_each_ddp_variant_in_rounds():
    """Each step an update of 2 batches (--update-freq 2: DDP all-reduces with the second)."""
    r = subprocess.run([sys.executable, str(ROOT / "bench/shard_step.py"), "--preset", "tiny", "--ranks", "2",
                        "--batch", "1", "--seconds", "1", "--steps", "4", "--strategy", "ddp", "--interleave", "3",
                        "--layerdrop", "0.5", "--no-activation-checkpointing", "--update-freq", "2",
                        "--variant", "gradient_sync=0,python_gc=0", "--variant", "allreduce_dtype=fp32,gc_interval=2",
                        "--variant", "allreduce_dtype=bf16,bucket_cap_mb=400,gradient_as_bucket_view=1",
                        "--variant", "reducer=flat,overlap=0", "--profile", "1"],
                       capture_output=True, text=True, timeout=300, cwd=ROOT, env=CPU_ONLY)
    assert r.returncode == 0, r.stderr[-4000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["interleave"] == 3 and out["world_size"] == 2 and sum(out["layerdrop_blocks_dropped"]) > 0
    assert [v["settings"] for v in out["variants"]] == [
        {"gradient_sync": False, "python_gc": False}, {"allreduce_dtype": "fp32", "gc_interval": 2},
        {"allreduce_dtype": "bf16", "bucket_cap_mb": 400.0, "gradient_as_bucket_view": True}, {"reducer": "flat", "overlap": False}]
    # --profile: the same steps alone and under the first variant, the DDP wrapper without its all-reduce
    for rank in out["profile_per_rank"]:
        assert rank["alone"]["steps"] == rank["ddp"]["steps"] == 1 and rank["ddp"]["wall_ms_per_step"] > 0
        assert rank["alone"]["allreduces_per_step"] == rank["ddp"]["allreduces_per_step"] == 0
    assert out["update_freq"] == 2 and len(out["layerdrop_blocks_dropped"]) == 4  # per step, both batches'
    assert out["alone_step_s"] > 0 and out["alone_audio_s_per_s"] == round(2 / out["alone_step_s"], 1)
    assert out["alone_step_s"] == min(out["alone_step_s_per_rank"]) and len(out["alone_step_s_per_rank"]) == 2
    assert all(p >= m for p, m in zip(out["alone_step_s_p90_per_rank"], out["alone_step_s_per_rank"]))
    for v in out["variants"]:
        assert v["scaling"] == round(2 * out["alone_step_s"] / v["step_s"], 3) > 0
        assert len(v["scaling_per_round"]) == 2  # the first round compiles: left out
        assert v["audio_s_per_s"] == round(2 * 2 / v["step_s"], 1) and v["step_s"] == max(v["step_s_per_rank"])
        assert all(p >= m for p, m in zip(v["step_s_p90_per_rank"], v["step_s_per_rank"]))
        # the same steps back to back, as training runs them: the slowest rank's window against the fastest alone
        window = max(v["window_step_s_per_rank"])
        assert v["window_scaling"] == pytest.approx(2 * min(out["alone_window_step_s_per_rank"]) / window, abs=2e-3)
        assert v["window_audio_s_per_s"] == pytest.approx(2 * 2 / window, abs=0.1) and len(
            v["window_scaling_per_round"]) == 2


@pytest.mark.parametrize("args,message", [
    (["--variant", "allreduce_dtype=bf16"], "--variant: only with --interleave"),
    (["--interleave", "2", "--variant", "bucket=4"], "'bucket=4' is not K=V with K one of"),
    (["--interleave", "2", "--variant", "static_graph=yes"], "static_graph takes 1/0 or true/false, not 'yes'"),
    (["--interleave", "2", "--variant", "gc_interval=-5"], "gc_interval='-5' is not a int >= 0"),
    (["--interleave", "2", "--variant", "reducer=ring"], "reducer is one of ('buckets', 'flat')"),
    (["--interleave", "2", "--variant", "overlap=0"], "overlap is a setting of reducer=flat"),
    (["--interleave", "2", "--variant", "reducer=flat,gradient_as_bucket_view=1"],
     "gradient_as_bucket_view and static_graph are settings of torch's DDP (reducer buckets)"),
    (["--gc-interval", "-1"], "--gc-interval -1: a number of steps, 0 (Python's automatic collection) or more"),
    (["--interleave", "2", "--variant", "allreduce_dtype=fp16"], "allreduce_dtype is one of ('fp32', 'bf16')"),
    (["--interleave", "1"], "--interleave 1: 2 or more rounds, with --strategy ddp"),
    (["--update-freq", "0"], "--update-freq 0: batches per update, 1 or more"),
    (["--strategy", "fsdp", "--allreduce-dtype", "bf16"], "DDP settings, not for --strategy fsdp"),
])
def test_shard_step_interleave_refuses_bad_settings_by_name(args, message):
    r = subprocess.run([sys.executable, str(ROOT / "bench/shard_step.py"), "--strategy", "ddp", *args],
                       capture_output=True, text=True, timeout=60, cwd=ROOT, env=CPU_ONLY)
    assert r.returncode == 2 and message in r.stderr, r.stderr[-2000:]
