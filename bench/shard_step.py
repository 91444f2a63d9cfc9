"""One pre-training step of a model sharded over every visible GPU (FSDP2): memory per rank, step time.

Started without torchrun, the script relaunches itself under torchrun with one process per
visible GPU (``--ranks`` on CPU, where the ranks use gloo). Each rank builds the preset with
the seed's weights, shards it as training does (``w2v.train.sharding``: one FSDP unit per
Transformer block plus the root, bf16 parameters with fp32 gradient reduction on CUDA),
and runs ``--steps`` full updates (forward, contrastive loss, backward, clipping, AdamW) on
random audio of ``--seconds`` per utterance, ``--batch`` utterances per rank. Rank 0 prints
one JSON line: per rank the peak memory (CUDA: allocated and reserved; CPU: resident set)
and each step's time, and beside them an estimate of the memory that weights, gradients and
AdamW state take per rank (16 bytes per parameter, divided by the ranks under fsdp).

    python bench/shard_step.py --preset xls_r_2b --batch 2 --steps 3           # all visible GPUs
    python bench/shard_step.py --preset xls_r_1b --batch 4 --strategy ddp        # compare: replicated
    python bench/shard_step.py --preset tiny --ranks 2 --batch 2 --seconds 2    # CPU, gloo
    python bench/shard_step.py --preset base --batch 8 --steps 24 --strategy ddp --compile --matmul-conv \
        --no-activation-checkpointing --scaling                                  # one GPU, then all: the ratio

``--scaling`` runs the same command on one rank and then on all of them, one after the other on
the same machine, and ends with one JSON line: both throughputs and their ratio.

``--interleave ROUNDS`` measures the same ratio in one job, where a shared machine's drift
(single steps here move by 10 ms+ from one minute to the next) hits both sides alike: each
round every rank runs ``--steps`` steps alone (no DDP: what one GPU does), then under DDP with
each ``--variant`` of its settings in turn; the first round compiles and is left out. One
compile serves every phase (the graphs are the same with and without DDP). Each phase is timed
step by step (a barrier before each DDP step, every step's own time) and then once more as a
window of steps back to back, as training runs them (``window_scaling``): the per-step barrier
lets one rank start its clock while the other is still leaving it. Medians of single steps hide
pauses that a window pays (Python's garbage collections: ``--gc-interval``, as training's
``gc_interval``). Variants may also say how their phase runs: ``gradient_sync=0`` (the DDP
wrapper with no all-reduce at all: what waiting for the other rank and the all-reduce cost),
``python_gc=0``, ``gc_interval=N``. ``--profile N`` then profiles N steps alone and N under the
first variant (``--trace DIR`` keeps both timelines).

    python bench/shard_step.py --preset base --batch 8 --steps 24 --strategy ddp --compile --matmul-conv \
        --no-activation-checkpointing --interleave 6 --variant allreduce_dtype=fp32 \
        --variant allreduce_dtype=bf16,bucket_cap_mb=400 --variant gradient_sync=0    # DDP settings side by side

``--update-freq K`` makes each step an update of K batches whose gradients accumulate (training's
``update_freq``, fairseq's ``--update-freq``): DDP all-reduces once per update, with its last batch.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from w2v.models import Wav2Vec2ForPreTraining, count_parameters, load_model_config  # noqa: E402
from w2v.models.accel import (  # noqa: E402
    release_dropped_grads,
    set_activation_checkpointing,
    use_matmul_convolutions,
)
from w2v.models.accel import set_module_flags  # noqa: E402
from w2v.models.components import TransformerEncoder  # noqa: E402
from w2v.train import distributed, sharding  # noqa: E402
from w2v.train.collect import ScheduledCollection  # noqa: E402
from w2v.train.config import TrainConfig  # noqa: E402
from w2v.train.losses import pretraining_loss  # noqa: E402

GIB = 2**30


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="tiny", help="conf/model preset or YAML file (xls_r_1b, xls_r_2b, ...)")
    p.add_argument("--batch", type=int, default=1, help="utterances per rank")
    p.add_argument("--seconds", type=float, default=15.625, help="seconds per utterance (the pre-training crop)")
    p.add_argument("--steps", type=int, default=1,
                   help="updates timed, each reported (the first includes warm-up; under fsdp with LayerDrop so does "
                        "the first with each number of dropped blocks, BENCHMARKS.md); step_s: median of the second half")
    p.add_argument("--strategy", choices=sharding.STRATEGIES, default="fsdp")
    p.add_argument("--layerdrop", type=float, default=None, help="LayerDrop rate instead of the preset's")
    p.add_argument("--no-activation-checkpointing", dest="checkpointing", action="store_false")
    p.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                   help="auto: bf16 on CUDA, fp32 on CPU")
    p.add_argument("--ranks", type=int, default=None, help="processes (default: visible GPUs; CPU: 2)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads per rank")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--compile", action="store_true",
                   help="torch.compile as training's `compile: true` (w2v.models.accel; one graph per block under fsdp)")
    p.add_argument("--matmul-conv", action="store_true", help="convolutions as matrix products (`matmul_conv: true`)")
    p.add_argument("--per-block", action="store_true",
                   help="with --compile: one compiled call per Transformer block instead of one graph for all")
    p.add_argument("--profile", type=int, default=0,
                   help="after the timed steps, profile this many more on every rank: device time by kernel "
                        "class (NCCL included), time with any kernel running, host time per step; with "
                        "--interleave, after the rounds, alone and under DDP with the first --variant")
    p.add_argument("--ddp-split", choices=("on", "off"), default=None,
                   help="ddp + --compile: dynamo's DDPOptimizer (graphs split at gradient buckets); default off, as training")
    p.add_argument("--update-freq", type=int, default=1, metavar="K",
                   help="each step an update of K batches, gradients accumulated (training's update_freq): "
                        "DDP all-reduces once per K batches")
    p.add_argument("--bucket-mb", type=float, default=None, help="ddp: gradient bucket size (DDP's default 25)")
    p.add_argument("--bucket-view", action="store_true", help="ddp: gradients as views into the buckets")
    p.add_argument("--allreduce-dtype", choices=sharding.ALLREDUCE_DTYPES, default="fp32",
                   help="ddp: the gradients' type on the wire (bf16: half the bytes)")
    p.add_argument("--trace", type=Path, default=None,
                   help="with --profile: each rank's timeline as a Chrome trace, DIR/rank<N>.json.gz")
    p.add_argument("--static-graph", action="store_true", help="ddp: the same parameters get gradients every step")
    p.add_argument("--reducer", choices=sharding.DDP_REDUCERS, default="buckets",
                   help="ddp: buckets (torch's DDP) or flat (sharding.Replicated: a few flat all-reduces, the "
                        "encoder's during the backward), as training's ddp_reducer; here buckets unless given (a "
                        "--variant without reducer= is torch's DDP), in training flat")
    p.add_argument("--no-host-sync", dest="host_sync", action="store_false",
                   help="steps without reading their loss on the host (training reads it every update: the "
                        "host waits for the device once a step); what the device idles for the host's sake")
    p.add_argument("--gc-interval", type=int, default=TrainConfig.gc_interval, metavar="N",
                   help="Python's garbage collection every N steps on every rank, as training's gc_interval "
                        "(0: Python's automatic collection); default %(default)s")
    p.add_argument("--scaling", action="store_true",
                   help="run on one rank, then on all (--ranks or every visible GPU), and report the throughput ratio")
    p.add_argument("--interleave", type=int, default=0, metavar="ROUNDS",
                   help="ddp: in one job, ROUNDS rounds (2 or more; the first compiles and is left out) of --steps "
                        "steps: every rank alone (as one GPU), then under DDP with each --variant in turn; "
                        "the scaling of each variant from the medians")
    p.add_argument("--variant", action="append", default=None, metavar="K=V[,K=V]",
                   help="with --interleave, repeatable: one variant's DDP settings (allreduce_dtype, bucket_cap_mb, "
                        "gradient_as_bucket_view, static_graph, reducer, overlap) and how its phase runs (gradient_sync=0: no "
                        "all-reduce, every batch under no_sync; python_gc=0: no garbage collection; gc_interval=N: "
                        "the phase's own collection schedule); default: the command's own flags")
    p.add_argument("--repeat", type=int, default=1,
                   help="with --scaling: that many (one rank, all ranks) pairs in turn; the ratio of the medians")
    a = p.parse_args(argv)
    if a.update_freq < 1:
        p.error(f"--update-freq {a.update_freq}: batches per update, 1 or more")
    if a.repeat < 1 or (a.repeat > 1 and not a.scaling):
        p.error(f"--repeat {a.repeat}: a number of --scaling pairs, 1 or more (and only with --scaling)")
    if a.interleave and (a.interleave < 2 or a.strategy != "ddp" or a.scaling):
        p.error(f"--interleave {a.interleave}: 2 or more rounds, with --strategy ddp, without --scaling")
    if a.strategy != "ddp" and (a.allreduce_dtype != "fp32" or a.bucket_mb is not None or a.bucket_view
                                or a.static_graph or a.reducer != "buckets"):
        p.error(f"--allreduce-dtype, --bucket-mb, --bucket-view, --static-graph, --reducer: DDP settings, not for "
                f"--strategy {a.strategy}")
    if a.gc_interval < 0:
        p.error(f"--gc-interval {a.gc_interval}: a number of steps, 0 (Python's automatic collection) or more")
    if a.variant and not a.interleave:
        p.error("--variant: only with --interleave")
    try:
        a.variants = [parse_variant(v) for v in a.variant or []]
    except ValueError as e:
        p.error(f"--variant: {e}")
    return a


def all_ranks(a: argparse.Namespace) -> int:
    """The ranks a run starts: ``--ranks``, else every visible GPU (CPU: 2)."""
    return a.ranks or (torch.cuda.device_count() if torch.cuda.is_available() else 2)


def relaunch(a: argparse.Namespace, nproc: int | None = None) -> tuple[int, dict | None]:
    """This script again, as ``nproc`` ranks (default `all_ranks`) under torchrun, its output passed
    through; returns its exit status and its result (the last JSON line rank 0 printed). One rank
    on a GPU machine sees the first visible GPU only."""
    nproc = nproc or all_ranks(a)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                       os.environ.get("PYTHONPATH", "")]))
    if nproc == 1 and torch.cuda.is_available():
        env["CUDA_VISIBLE_DEVICES"] = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0]
    cmd = [sys.executable, "-m", "w2v.train.distributed", "--standalone", f"--nproc_per_node={nproc}",
           str(Path(__file__).resolve()), *sys.argv[1:]]
    result = None
    with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True) as proc:
        for line in proc.stdout:  # passed through as it comes
            sys.stdout.write(line)
            sys.stdout.flush()
            if line.startswith("{"):
                result = line
    return proc.returncode, json.loads(result) if result else None


def scaling(a: argparse.Namespace) -> int:
    """One rank, then all of them, on this machine, ``--repeat`` times in turn (later runs compile
    from the warm inductor cache): the throughputs and their ratio, one JSON line. ``scaling`` is
    the ratio of the medians; ``pairs`` the ratio of each (one rank, all ranks) pair in turn."""
    n = all_ranks(a)
    if n < 2:
        raise SystemExit(f"shard_step.py --scaling: needs 2 or more ranks; this machine gives {n} "
                         "(--ranks N on a CPU)")
    runs: dict[int, list[dict]] = {1: [], n: []}
    for _ in range(a.repeat):
        for nproc in (1, n):
            rc, result = relaunch(a, nproc)
            if rc or result is None:
                raise SystemExit(f"shard_step.py --scaling: the run on {nproc} rank(s) failed (exit status {rc})")
            runs[nproc].append(result)
    one = statistics.median(r["audio_s_per_s"] for r in runs[1])
    many = statistics.median(r["audio_s_per_s"] for r in runs[n])
    print(json.dumps({"scaling": round(many / one, 3), "world_size": n, "audio_s_per_s_one": one,
                      "audio_s_per_s_all": many, "step_s_one": [r["step_s"] for r in runs[1]],
                      "step_s_all": [r["step_s"] for r in runs[n]],
                      "pairs": [round(m["audio_s_per_s"] / o["audio_s_per_s"], 3) for o, m in zip(runs[1], runs[n])],
                      "preset": a.preset, "strategy": a.strategy, "batch_per_rank": a.batch,
                      "device": runs[n][0]["device"]}), flush=True)
    return 0


def peak_memory(dev: torch.device) -> dict:
    if dev.type == "cuda":
        return {"peak_allocated_gib": round(torch.cuda.max_memory_allocated(dev) / GIB, 3),
                "peak_reserved_gib": round(torch.cuda.max_memory_reserved(dev) / GIB, 3)}
    return {"peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB, 3)}


def profile_steps(step, first: int, count: int, dev: torch.device, info, trace: Path | None = None) -> dict:
    """`count` more steps under torch.profiler on this rank: wall and device time per step (idle:
    no kernel running; with DDP, NCCL's time alone on the device and beside other kernels), the
    all-reduces issued per step; the timeline to ``trace``/rank<N>.json.gz if given."""
    from torch.profiler import ProfilerActivity, profile

    from w2v.bench.gpu import kernel_summary

    if info.enabled:
        torch.distributed.barrier()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with profile(activities=activities) as prof:
        t0 = time.perf_counter()
        for number in range(first, first + count):
            step(number)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        wall = (time.perf_counter() - t0) / count * 1e3
    if trace is not None:
        trace.mkdir(parents=True, exist_ok=True)
        prof.export_chrome_trace(str(trace / f"rank{info.rank}.json.gz"))
    kernels = kernel_summary(prof, count, top=15)
    allreduces = sum(e.name == "c10d::allreduce_" for e in prof.events())  # host side: any backend
    return {"profile": {"steps": count, "wall_ms_per_step": round(wall, 2), "allreduces_per_step": allreduces / count,
                        "device_idle_ms_per_step": round(wall - kernels["device_any_busy_ms_per_step"], 2), **kernels}}


def allreduce_rate(numel: int, dev: torch.device, info) -> dict:
    """One all-reduce of a gradient-sized fp32 buffer, alone: what DDP's reduction costs at least."""
    buf = torch.ones(numel, device=dev)
    for _ in range(2):
        torch.distributed.all_reduce(buf)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    t0 = time.perf_counter()
    for _ in range(5):
        torch.distributed.all_reduce(buf)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    dt = (time.perf_counter() - t0) / 5
    n = info.world_size
    return {"mb": round(numel * 4 / 1e6, 1), "ms": round(dt * 1e3, 2),
            "bus_gb_s": round(numel * 4 * 2 * (n - 1) / n / dt / 1e9, 1)}


VARIANT_KEYS = {"allreduce_dtype": str, "bucket_cap_mb": float, "gradient_as_bucket_view": bool,
                "static_graph": bool, "reducer": str, "overlap": bool, "gradient_sync": bool, "python_gc": bool,
                "gc_interval": int}
# variant keys that are not DDP's settings but how the phase runs: gradient_sync=0 runs every batch
# under no_sync (the DDP wrapper without its all-reduce: what the wrapper alone costs a batch);
# python_gc=0 switches Python's garbage collection off for the phase, scheduled collections too
# (a collection on one rank makes the other wait at the all-reduce); gc_interval=N collects every
# N steps in the phase (0: Python's automatic collection) instead of as --gc-interval says
PHASE_KEYS = {"gradient_sync": True, "python_gc": True, "gc_interval": None}
WARM_STEPS = 2  # each phase's first steps, left out of its timing (DDP rebuilds its buckets at the second)


def parse_variant(text: str) -> dict:
    """``--variant`` ``K=V[,K=V...]`` (keys VARIANT_KEYS; booleans 1/0, true/false): DDP settings.
    ValueError says what is wrong."""
    settings = {}
    for item in filter(None, text.split(",")):
        key, sep, value = item.partition("=")
        if not sep or key not in VARIANT_KEYS:
            raise ValueError(f"{item!r} is not K=V with K one of {sorted(VARIANT_KEYS)}")
        kind = VARIANT_KEYS[key]
        if kind is bool:
            if value.lower() not in ("1", "0", "true", "false"):
                raise ValueError(f"{key} takes 1/0 or true/false, not {value!r}")
            settings[key] = value.lower() in ("1", "true")
        else:
            try:
                settings[key] = kind(value)
                if kind is int and settings[key] < 0:
                    raise ValueError
            except ValueError:
                raise ValueError(f"{key}={value!r} is not a {kind.__name__}{' >= 0' if kind is int else ''}") from None
    if settings.get("allreduce_dtype", "fp32") not in sharding.ALLREDUCE_DTYPES:
        raise ValueError(f"allreduce_dtype is one of {sharding.ALLREDUCE_DTYPES}")
    reducer = settings.get("reducer", "buckets")  # a variant without reducer= is torch's DDP
    if reducer not in sharding.DDP_REDUCERS:
        raise ValueError(f"reducer is one of {sharding.DDP_REDUCERS}")
    sharding.check_ddp_options(reducer,
                               [k for k in settings if k not in PHASE_KEYS and k not in ("allreduce_dtype", "reducer")])
    return settings


def command_variant(a: argparse.Namespace) -> dict:
    """The DDP settings the command's own flags give."""
    return {"allreduce_dtype": a.allreduce_dtype, **({"reducer": a.reducer} if a.reducer != "buckets" else {}),
            **{k: v for k, v in (("bucket_cap_mb", a.bucket_mb), ("gradient_as_bucket_view", a.bucket_view),
                                 ("static_graph", a.static_graph)) if v not in (None, False)}}


def interleaved(a: argparse.Namespace, raw, step, timed, window, collector, info, dev, bf16: bool) -> dict | None:
    """``--interleave`` rounds in this job: each round times every rank alone (no DDP, the
    dropped blocks skipped: what one GPU does, on every GPU at once), then each variant under
    DDP; the same steps (LayerDrop draws) in every phase. Round 1 compiles and is left out, and
    so are each phase's first WARM_STEPS steps (DDP rebuilds its buckets at the second). Alone: the
    fastest rank's median; DDP: the slowest rank's. Each phase is timed twice: step by step
    (a barrier before each DDP step), then as one window of steps back to back, as training
    runs them (``window_*``). Rank 0 gets the summary."""
    variants = a.variants or [command_variant(a)]
    phases = {"alone": []} | {i: [] for i in range(len(variants))}  # per round: this rank's step times
    windows = {k: [] for k in phases}  # per round: this rank's seconds per step, back to back

    def under_ddp(settings: dict, run):
        """``run(ddp, sync)``'s result, the model under DDP with ``settings`` (PHASE_KEYS among them
        say how the phase runs); the wrapper and its hooks gone afterwards, the model alone again."""
        phase = {k: settings.get(k, v) for k, v in PHASE_KEYS.items()}
        ddp = sharding.wrap(raw, "ddp", info, dev, bf16, find_unused=False,
                            **{k: v for k, v in settings.items() if k not in PHASE_KEYS})
        interval, automatic = collector.interval, gc.isenabled()
        if phase["gc_interval"] is not None:  # this phase's schedule
            collector.interval = phase["gc_interval"]
            (gc.disable if collector.interval else gc.enable)()
        if not phase["python_gc"]:
            gc.disable()
            collector.interval = 0
        try:
            return run(ddp, phase["gradient_sync"])
        finally:
            collector.interval = interval
            (gc.enable if automatic else gc.disable)()
            del ddp  # its reducer's hooks go with it
            gc.collect()
            set_module_flags(raw, TransformerEncoder, dropped_blocks="skip")  # alone again, as one GPU

    for _ in range(a.interleave):
        phases["alone"].append(timed(raw, barrier=False))
        windows["alone"].append(window(raw, barrier=False))
        for i, settings in enumerate(variants):
            steps, per_step = under_ddp(settings, lambda ddp, sync: (timed(ddp, barrier=True, sync=sync),
                                                                      window(ddp, barrier=True, sync=sync)))
            phases[i].append(steps)
            windows[i].append(per_step)
        if info.is_main:  # progress, and what a job cut off by its time limit still reports
            line = " ".join(f"{k}={statistics.median(v[-1][WARM_STEPS:] or v[-1]):.5f}/{windows[k][-1]:.5f}"
                            for k, v in phases.items())
            print(f"round {len(phases['alone'])}/{a.interleave} (rank 0, step/window s): {line}",
                  file=sys.stderr, flush=True)
    profiled = {}
    if a.profile:  # the same steps alone and under the first variant, each after WARM_STEPS (DDP's buckets)
        profiled["alone"] = profile_steps(lambda number: step(raw, number), WARM_STEPS, a.profile, dev, info,
                                          a.trace and a.trace / "alone")["profile"]

        def warm_then_profile(ddp, sync: bool) -> dict:
            for number in range(WARM_STEPS):
                step(ddp, number, sync)
            return profile_steps(lambda number: step(ddp, number, sync), WARM_STEPS, a.profile, dev, info,
                                 a.trace and a.trace / "ddp")["profile"]

        profiled["ddp"] = under_ddp(variants[0], warm_then_profile)
    mine = {k: [t[WARM_STEPS:] for t in rounds[1:]] for k, rounds in phases.items()}
    ranks = distributed.gather({"steps": mine, "windows": {k: w[1:] for k, w in windows.items()},
                                "profile": profiled}, info)
    if not info.is_main:
        return None
    profiles = [r["profile"] for r in ranks]
    ranks, windowed = [r["steps"] for r in ranks], [r["windows"] for r in ranks]

    def window_median(key, rnd=None) -> list[float]:  # each rank's median window (or one round's)
        return [statistics.median(w[key]) if rnd is None else w[key][rnd] for w in windowed]

    def median(key, rnd=None) -> list[float]:  # each rank's median over the counted steps (of one round)
        return [statistics.median(t for r in (m[key] if rnd is None else [m[key][rnd]]) for t in r) for m in ranks]

    def p90(key) -> list[float]:  # each rank's slow steps: how much a step waiting for the other rank can lose
        steps = [[t for r in m[key] for t in r] for m in ranks]
        return [round(statistics.quantiles(ts, n=10)[-1] if len(ts) > 1 else ts[0], 5) for ts in steps]

    n, audio = info.world_size, a.update_freq * a.batch * a.seconds
    alone, alone_window = min(median("alone")), min(window_median("alone"))
    rounds = range(a.interleave - 1)
    out = []
    for i, settings in enumerate(variants):
        step_s, window_s = max(median(i)), max(window_median(i))
        out.append({"settings": settings, "step_s": round(step_s, 5), "audio_s_per_s": round(n * audio / step_s, 1),
                    "step_s_per_rank": [round(t, 5) for t in median(i)], "step_s_p90_per_rank": p90(i),
                    "scaling": round(n * alone / step_s, 3),
                    "scaling_per_round": [round(n * min(median("alone", r)) / max(median(i, r)), 3) for r in rounds],
                    "window_step_s_per_rank": [round(t, 5) for t in window_median(i)],
                    "window_audio_s_per_s": round(n * audio / window_s, 1),
                    "window_scaling": round(n * alone_window / window_s, 3),
                    "window_scaling_per_round": [round(n * min(window_median("alone", r)) / max(window_median(i, r)), 3)
                                                 for r in rounds]})
    return {"interleave": a.interleave, "world_size": n, "alone_step_s": round(alone, 5),
            "alone_step_s_per_rank": [round(t, 5) for t in median("alone")], "alone_step_s_p90_per_rank": p90("alone"),
            "alone_audio_s_per_s": round(audio / alone, 1),
            "alone_window_step_s_per_rank": [round(t, 5) for t in window_median("alone")], "variants": out,
            **({"profile_per_rank": profiles} if a.profile else {})}


def run_rank(a: argparse.Namespace) -> None:
    torch.set_num_threads(a.threads)
    info = distributed.dist_info()
    dev = distributed.init(info, torch.device("cuda" if torch.cuda.is_available() else "cpu"), 1800.0)
    with ScheduledCollection(a.gc_interval) as collector:  # as training: every rank collects at the same step
        measure(a, info, dev, collector)
    # The model, its DDP wrapper and the optimizer went with measure's frame (their reference
    # cycles go here, nothing frozen by the collector any more), so this rank's process group ends
    # in destroy_process_group once every rank is done with it, not as the interpreter exits. (One
    # CI run saw a gloo rank abort at its end, "terminate called without an active exception",
    # with the DDP wrapper still alive.)
    gc.collect()
    if info.enabled:
        torch.distributed.barrier()
    distributed.shutdown()


def measure(a: argparse.Namespace, info, dev: torch.device, collector: ScheduledCollection) -> None:
    """This rank's share of the run (its steps, its timings, the profile; ``collector`` told of
    each update); rank 0 prints the report."""
    bf16 = a.precision == "bf16" or (a.precision == "auto" and dev.type == "cuda")
    cfg = load_model_config(a.preset, **({} if a.layerdrop is None else {"layerdrop": a.layerdrop}))
    torch.manual_seed(a.seed)
    model = Wav2Vec2ForPreTraining(cfg).to(dev).train()
    n_params = count_parameters(model)
    set_activation_checkpointing(model, a.checkpointing)
    use_matmul_convolutions(model, a.matmul_conv)
    if a.compile:  # as the training loop: before wrapping
        sharding.compile_for(model, a.strategy, info, per_block=a.per_block)
        torch._dynamo.config.cache_size_limit = 64  # a graph per number of blocks kept, per LayerDrop draw
    if a.ddp_split is not None:  # compiling is lazy: this holds from the first call on
        torch._dynamo.config.optimize_ddp = a.ddp_split == "on"
    raw = model
    settings = command_variant(a)
    if not a.interleave:
        model = sharding.wrap(model, a.strategy, info, dev, bf16, find_unused=False, **settings)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    samples = int(a.seconds * 16000)
    g = torch.Generator().manual_seed(a.seed + info.rank)
    wav = torch.randn(a.batch, samples, generator=g).to(dev)
    lengths = torch.full((a.batch,), samples, device=dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    losses = []

    def layerdrop(number: int, micro: int = 0) -> torch.Generator:
        """Step ``number``'s LayerDrop draws for its batch ``micro``, the same on every rank and for
        every number of ranks (so that --scaling's runs skip the same blocks), as training draws
        them per batch of an update."""
        return torch.Generator().manual_seed(distributed.step_seed(a.seed, number, micro=micro))

    # blocks LayerDrop drops at each timed step's batches (drawn again from the same seeds)
    dropped = [sum(raw.wav2vec2.encoder.layerdrop_keeps(layerdrop(number, micro)).count(False)
                   for micro in range(a.update_freq)) for number in range(a.steps)]

    def step(model, number: int, sync: bool = True) -> None:
        """One update; ``sync`` False: no all-reduce at all (every batch under DDP's no_sync)."""
        raw.set_num_updates(number)
        for micro in range(a.update_freq):  # as training's update_freq: one all-reduce, with the last batch
            last = micro == a.update_freq - 1
            with sharding.gradient_sync(model, last and sync):
                sharding.share_layerdrop(model, layerdrop(number, micro))
                with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
                    masks = torch.Generator().manual_seed(distributed.step_seed(0, number, micro=micro))
                    loss, _ = pretraining_loss(model(wav, lengths, generator=masks))
                (loss / a.update_freq if a.update_freq > 1 else loss).backward()
            release_dropped_grads(raw, update_ends=last)
        sharding.grad_norm(params, 10.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        # a host sync, as in training (its one per update); --no-host-sync: read when the phase ends
        losses.append(float(loss.detach()) if a.host_sync else loss.detach())
        collector.after_update()

    def timed(model, barrier: bool, sync: bool = True) -> list[float]:
        """``--steps`` steps (numbered from 0: the same LayerDrop draws each time), each timed."""
        times = []
        for number in range(a.steps):
            if barrier and info.enabled:
                torch.distributed.barrier()
            t0 = time.perf_counter()
            step(model, number, sync)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            times.append(round(time.perf_counter() - t0, 4))
        return times

    def window(model, barrier: bool, sync: bool = True) -> float:
        """``--steps`` steps back to back, as training runs them: no barrier or device sync between
        them but each step's loss read. Seconds per step on this rank (its clock starts after a
        barrier when ``barrier``; the ranks of a DDP job end together)."""
        if barrier and info.enabled:
            torch.distributed.barrier()
        t0 = time.perf_counter()
        for number in range(a.steps):
            step(model, number, sync)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        return (time.perf_counter() - t0) / a.steps

    common = {"preset": a.preset, "params_m": round(n_params / 1e6, 1), "strategy": a.strategy,
              "world_size": info.world_size, "batch_per_rank": a.batch, "update_freq": a.update_freq,
              "seconds": a.seconds,
              "precision": "bf16" if bf16 else "fp32", "activation_checkpointing": a.checkpointing,
              "compiled": a.compile, "matmul_conv": a.matmul_conv, "per_block": a.per_block,
              "gc_interval": a.gc_interval, "host_sync": a.host_sync,
              "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else
              f"{platform.processor() or 'cpu'}, {a.threads} thread(s) per rank",
              "torch": torch.__version__, "layerdrop": cfg.layerdrop, "layerdrop_blocks_dropped": dropped}
    if a.interleave:
        summary = interleaved(a, raw, step, timed, window, collector, info, dev, bf16)
        if summary is not None:
            print(json.dumps({**common, "steps": a.steps, **summary}), flush=True)
        return
    times = timed(model, barrier=True)
    profiled = profile_steps(lambda number: step(model, number), a.steps, a.profile, dev, info, a.trace) \
        if a.profile else {}
    if a.profile and info.enabled and a.strategy == "ddp":
        profiled["allreduce"] = allreduce_rate(sum(p.numel() for p in params), dev, info)
    mine = {"rank": info.rank, **peak_memory(dev), "step_s": times, "loss": [round(float(x), 4) for x in losses][:a.steps],
            **profiled}
    ranks = distributed.gather(mine, info)
    if info.is_main:
        shards = info.world_size if a.strategy == "fsdp" else 1
        # the slowest rank's median over the second half of the steps (single steps jump by 10 ms+)
        last = max(statistics.median(r["step_s"][len(r["step_s"]) // 2:]) for r in ranks)
        ddp_options = {k: v for k, v in settings.items() if k != "allreduce_dtype"}
        print(json.dumps({
            **common, "ddp_options": ddp_options, "allreduce_dtype": settings["allreduce_dtype"],
            "dynamo_optimize_ddp": torch._dynamo.config.optimize_ddp,
            "ddp_find_unused": getattr(model, "find_unused_parameters", None),
            "state_gib_per_rank_estimate": round(16 * n_params / shards / GIB, 3),
            "step_s": last, "audio_s_per_s": round(info.world_size * a.update_freq * a.batch * a.seconds / last, 1),
            "ranks": ranks}), flush=True)


def main() -> int:
    a = parse_args()
    if "RANK" in os.environ:
        run_rank(a)
        return 0
    if a.interleave and all_ranks(a) < 2:
        raise SystemExit(f"shard_step.py --interleave: needs 2 or more ranks; this machine gives {all_ranks(a)} "
                         "(--ranks N on a CPU)")
    return scaling(a) if a.scaling else relaunch(a)[0]


if __name__ == "__main__":
    sys.exit(main())
