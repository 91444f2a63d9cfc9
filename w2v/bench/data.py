"""Audio pipeline throughput: decode + random crop + normalise + collate, per CPU worker.

What the training loop does per batch (`AudioStore` decodes a whole file with soundfile, as
lhotse does for FLAC/WAV; the loop crops, `collate_audio` normalises and pads), timed in
1..N worker processes on synthetic 16 kHz files, so the worker count that keeps a GPU fed
can be read off: workers needed = training rate / per-worker rate. Independent of lhotse.

    python bench/data_speed.py --workers 1,2,4,8,16 --format flac
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from w2v.data.batching import collate_audio

SAMPLE_RATE = 16000


def write_corpus(folder: Path, files: int, seconds: float, fmt: str, seed: int = 0) -> list[Path]:
    """Speech-like test files: noise shaped by a slow envelope plus a few tones."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    paths = []
    for i in range(files):
        env = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(2, 5) * t) ** 2
        wave = 0.1 * env * rng.standard_normal(n) + 0.05 * np.sin(2 * np.pi * rng.uniform(100, 300) * t)
        path = folder / f"utt{i:04d}.{fmt}"
        sf.write(path, wave.astype(np.float32), SAMPLE_RATE, subtype="PCM_16")
        paths.append(path)
    return paths


def load_batch(args: tuple[list[str], float, int]) -> float:
    """Decode, crop and collate one batch; returns the seconds of audio it holds."""
    import soundfile as sf

    paths, crop_seconds, seed = args
    rng = np.random.default_rng(seed)
    crop = int(crop_seconds * SAMPLE_RATE)
    waves = []
    for p in paths:
        w, _ = sf.read(p, dtype="float32")
        if len(w) > crop:
            start = int(rng.integers(0, len(w) - crop + 1))
            w = w[start:start + crop]
        waves.append(w)
    wav, lengths = collate_audio(waves, normalize=True)
    return float(lengths.sum()) / SAMPLE_RATE


def throughput(paths: list[Path], workers: int, batch: int, batches: int, crop_seconds: float,
               mode: str = "process") -> float:
    """Audio seconds per wall second with `workers` processes (or threads), each building whole
    batches."""
    jobs = []
    for b in range(batches):
        idx = [(b * batch + j) % len(paths) for j in range(batch)]
        jobs.append(([str(paths[i]) for i in idx], crop_seconds, b))
    if workers == 1:
        t0 = time.perf_counter()
        total = sum(load_batch(j) for j in jobs)
        return total / (time.perf_counter() - t0)
    if mode == "thread":  # libsndfile and torch release the GIL while they work
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(workers) as pool:
            t0 = time.perf_counter()
            total = sum(pool.map(load_batch, jobs))
            return total / (time.perf_counter() - t0)
    # Fresh interpreters (a forked child of a process holding torch's thread pools can hang),
    # warmed up with one batch each before the clock starts.
    with get_context("spawn").Pool(workers) as pool:
        pool.map(load_batch, jobs[:workers], chunksize=1)
        t0 = time.perf_counter()
        total = sum(pool.imap_unordered(load_batch, jobs, chunksize=1))
        return total / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", default="1,2,4")
    p.add_argument("--format", default="flac", choices=["flac", "wav"])
    p.add_argument("--files", type=int, default=32)
    p.add_argument("--file-seconds", type=float, default=20.0, help="length of each file (decoded whole)")
    p.add_argument("--crop-seconds", type=float, default=15.625)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--batches-per-worker", type=int, default=4)
    p.add_argument("--mode", default="process", choices=["process", "thread"])
    p.add_argument("--target", type=float, default=None, help="training audio-s/s to feed: prints workers needed")
    a = p.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    result = {"cpus": os.cpu_count(), "mode": a.mode, "format": a.format, "file_seconds": a.file_seconds,
              "crop_seconds": a.crop_seconds, "batch": a.batch, "rows": []}
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_corpus(Path(tmp), a.files, a.file_seconds, a.format)
        load_batch(([str(paths[0])], a.crop_seconds, 0))  # imports and first-open costs
        for w in [int(v) for v in a.workers.split(",") if v]:
            rate = throughput(paths, w, a.batch, a.batches_per_worker * w, a.crop_seconds, a.mode)
            row = {"workers": w, "audio_s_per_s": round(rate, 1), "per_worker": round(rate / w, 1)}
            result["rows"].append(row)
            print(json.dumps(row), flush=True)
    one = result["rows"][0]["per_worker"] if result["rows"] else float("nan")
    if a.target:
        result["target"] = a.target
        result["workers_needed_at_one_worker_rate"] = math.ceil(a.target / one)
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}))
    return result


if __name__ == "__main__":
    main()
