"""One workload's step timed in several versions of w2v on one machine: A/B of commits.

Throughput of a compiled, host-bound step moves by 10-20% between machines of one kind
(BENCHMARKS.md, twelfth session), more than most changes buy, so a change is judged against
its parent on the same machine, in one command. Each version (a git revision, exported with
`git archive`, or a directory holding a `w2v` package) runs in a process of its own, as
`w2v.bench.gpu` of that version builds and steps it (`Workload`, `ours_step`): our model only,
bf16 autocast on a GPU, `compile_model` and `use_matmul_convolutions` as the training loop
applies them (`--no-compile`, `--no-matmul-conv` switch them off; `--cuda-graphs` replays the
stack as CUDA graphs). The versions run in turn,
`--rounds` times (so drift of the machine shows), each process timing `--repeats` windows of
`--steps` steps after its warm-up; one JSON line per process, then a summary line with each
version's median.

    python bench/tree_step.py ead65fc HEAD --preset base --workload pretrain    # on a GPU
    python bench/tree_step.py HEAD HEAD --preset tiny --samples 16000 --steps 2 --no-compile   # CPU smoke run
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# run inside the version's process: its own w2v first on the path
CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
import torch
import w2v
from w2v.bench.gpu import Workload, optimizer, sync, timed
from w2v.models.accel import compile_model, use_matmul_convolutions
a = json.loads(sys.argv[2])
torch._dynamo.config.cache_size_limit = 64
dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
w = Workload(a["workload"], a["preset"], a["batch"], a["samples"], dev)
torch.manual_seed(0)
model = w.ours()
if a["matmul_conv"]:
    use_matmul_convolutions(model)
if a["compile"]:
    compile_model(model, **({"cuda_graphs": True} if a["cuda_graphs"] else {}))  # versions before it: no flag
step = w.ours_step(model, optimizer(model, dev))
t0 = time.perf_counter()  # the first step: the compile, mostly (inline: older trees lack warm_up_s)
step()
sync(dev)
compile_s = round(time.perf_counter() - t0, 1)
rates = [round(timed(step, dev, a["steps"], a["warmup"] if i == 0 else 2, w.audio_s).audio_s_per_s, 1)
         for i in range(a["repeats"])]
print("RESULT " + json.dumps({"w2v": w2v.__file__, "first_step_s": compile_s, "audio_s_per_s": rates}))
"""


def export(version: str, into: Path) -> Path:
    """A directory whose `w2v` package is `version`: a directory as it is, else the git revision's
    `w2v` and `conf` exported from this repository."""
    path = Path(version)
    if (path / "w2v").is_dir():
        return path.resolve()
    out = into / version.replace("/", "_")
    out.mkdir(parents=True, exist_ok=True)
    archive = out / "tree.tar"
    try:
        with archive.open("wb") as f:
            subprocess.run(["git", "-C", str(ROOT), "archive", version, "w2v", "conf"], stdout=f, check=True,
                           stderr=subprocess.PIPE)
    except subprocess.CalledProcessError as e:
        raise SystemExit(f"tree_step: {version!r} is neither a directory with a w2v package nor a git revision of "
                         f"{ROOT}: {e.stderr.decode().strip()}") from None
    with tarfile.open(archive) as tar:
        tar.extractall(out, filter="data")
    archive.unlink()
    return out


def run_version(tree: Path, args: dict, timeout: float) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, str(tree), json.dumps(args)], capture_output=True, text=True,
                          timeout=timeout, cwd=tree)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise SystemExit(f"tree_step: the step of {tree} failed (exit {proc.returncode}):\n" + "\n".join(tail))
    return json.loads(lines[-1][len("RESULT "):])


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("versions", nargs="+", help="git revisions of this repository, or directories with a w2v package")
    p.add_argument("--preset", default="base")
    p.add_argument("--workload", default="pretrain", choices=("pretrain", "finetune", "infer"))
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--samples", type=int, default=250_000, help="samples per utterance (15.6 s)")
    p.add_argument("--steps", type=int, default=20, help="steps per timed window")
    p.add_argument("--warmup", type=int, default=30, help="steps before the first window (compiles every graph)")
    p.add_argument("--repeats", type=int, default=3, help="timed windows per process")
    p.add_argument("--rounds", type=int, default=1, help="times each version runs, in turn")
    p.add_argument("--no-compile", dest="compile", action="store_false")
    p.add_argument("--no-matmul-conv", dest="matmul_conv", action="store_false")
    p.add_argument("--cuda-graphs", action="store_true",
                   help="compile_model(cuda_graphs=True): the stack replayed as CUDA graphs (versions that have it)")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds allowed to each process")
    a = p.parse_args(argv)
    child = {k: getattr(a, k) for k in ("preset", "workload", "batch", "samples", "steps", "warmup", "repeats",
                                        "compile", "matmul_conv", "cuda_graphs")}
    rates: dict[str, list[float]] = {v: [] for v in a.versions}
    with tempfile.TemporaryDirectory(prefix="tree_step_") as tmp:
        trees = {v: export(v, Path(tmp)) for v in a.versions}
        for rnd in range(a.rounds):
            for v in a.versions:
                r = run_version(trees[v], child, a.timeout)
                rates[v] += r["audio_s_per_s"]
                print(json.dumps({"version": v, "round": rnd, **r}), flush=True)
    summary = {"median_audio_s_per_s": {v: statistics.median(r) for v, r in rates.items()}, **child}
    print(json.dumps(summary), flush=True)
    return summary


if __name__ == "__main__":
    main()
