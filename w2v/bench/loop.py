"""The training loop end to end: `w2v.train.loop.train` on synthetic FLAC files, as `w2v pretrain` runs.

Unlike `w2v bench gpu`, which times one isolated step on a fixed batch, this runs the whole
loop: lhotse manifests, the loader's workers decoding FLAC every step (no audio cache unless
asked), random crops, duration-bucketed batches (so batch sizes change), the per-step host
read of loss and gradient norm, logging. It prints the loop's own `train_log.jsonl` rate per
`--log-every` updates and `data_share` (the share of the wall time spent waiting for audio),
and the steady rate: the median over the intervals after the first, which holds compilation.

    w2v bench loop --preset base --compile --matmul-conv --files 100 --updates 200   # a GPU
    w2v bench loop --preset base --compile --matmul-conv --gc-interval 0             # Python's own collection
    w2v bench loop --preset tiny --files 8 --seconds 3 --crop 2 --updates 20 --log-every 5 --max-duration 8  # CPU
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from w2v.bench.data import write_corpus


def write_manifest(paths: list[Path], out: Path) -> Path:
    """A cut manifest with one supervision per file (pre-training reads no text)."""
    from lhotse import CutSet, Recording, RecordingSet, SupervisionSegment, SupervisionSet

    recs = [Recording.from_file(p) for p in paths]
    sups = [SupervisionSegment(id=r.id, recording_id=r.id, start=0, duration=r.duration, text="a", speaker="s")
            for r in recs]
    CutSet.from_manifests(recordings=RecordingSet.from_recordings(recs),
                          supervisions=SupervisionSet.from_segments(sups)).to_file(out)
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="base")
    p.add_argument("--files", type=int, default=100)
    p.add_argument("--seconds", type=float, default=18.0, help="length of each file")
    p.add_argument("--crop", type=float, default=15.625, help="pre-training crop (crop_seconds)")
    p.add_argument("--max-duration", type=float, default=125.0, help="padded seconds per batch")
    p.add_argument("--updates", type=int, default=200)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--workers", type=int, default=4, help="loader_workers")
    p.add_argument("--loader", default="auto", help="threads | processes | auto")
    p.add_argument("--cache", action="store_true", help="keep decoded audio in memory (cache_audio)")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--matmul-conv", action="store_true")
    p.add_argument("--cuda-graphs", action="store_true", help="with --compile: the stack as CUDA graphs (cuda_graphs)")
    p.add_argument("--gc-interval", type=int, default=None, metavar="N",
                   help="Python's garbage collection every N updates (gc_interval; 0: Python's automatic "
                        "collection); default: training's")
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--dir", default=None, help="keep files and the run here (default: a temporary folder)")
    return p


def main(argv: list[str] | None = None) -> dict:
    from w2v.models import load_model_config
    from w2v.train.config import TrainConfig
    from w2v.train.loop import train

    a = build_parser().parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(a.dir) if a.dir else Path(tmp)
        (root / "audio").mkdir(parents=True, exist_ok=True)
        cuts = write_manifest(write_corpus(root / "audio", a.files, a.seconds, "flac"), root / "cuts.jsonl.gz")
        tcfg = TrainConfig(task="pretrain", max_updates=a.updates, lr=2e-4, warmup=0.1, max_duration=a.max_duration,
                           crop_seconds=a.crop, cache_audio=a.cache, log_every=a.log_every,
                           save_every=a.updates, loader_workers=a.workers, loader=a.loader, compile=a.compile,
                           matmul_conv=a.matmul_conv, cuda_graphs=a.cuda_graphs,
                           **({} if a.gc_interval is None else {"gc_interval": a.gc_interval}))
        t0 = time.time()
        train(tcfg, cuts, root / "exp", load_model_config(a.preset), device=a.device)
        rows = [json.loads(x) for x in (root / "exp" / "train_log.jsonl").read_text().splitlines()]
        rows = [r for r in rows if "audio_s_per_s" in r]
        steady = [r["audio_s_per_s"] for r in rows[1:]]
        result = {"preset": a.preset, "files": a.files, "seconds": a.seconds, "crop": a.crop, "workers": a.workers,
                  "loader": a.loader, "cache": a.cache, "compile": a.compile, "matmul_conv": a.matmul_conv,
                  "cuda_graphs": a.cuda_graphs, "gc_interval": tcfg.gc_interval,
                  "updates": a.updates, "wall_s": round(time.time() - t0, 1),
                  "intervals": [{"update": r["update"], "audio_s_per_s": r["audio_s_per_s"],
                                 "data_share": r.get("data_share")} for r in rows],
                  "steady_audio_s_per_s": round(statistics.median(steady), 1) if steady else None}
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
