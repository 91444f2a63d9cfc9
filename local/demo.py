#!/usr/bin/env python3
"""Make the embedded demo corpus: KJV Bible verses read by espeak-ng.

No corpus can be downloaded where w2v is developed, so ``egs/demo`` synthesises one:
public-domain King James verses (Debian ``bible-kjv``) spoken by ``espeak-ng`` with many
"speakers" = (voice, variant, rate, pitch). The result is an ordinary ``folder`` corpus
(see ``w2v/data/ingest.py``) and goes through the same path as a user's own audio::

    OUT/audio/<set>/<speaker>/<id>.flac   16 kHz mono FLAC (int16)
    OUT/transcripts.tsv                   header ``id text speaker split``; no pool lines
    OUT/lm_text.txt                       LM training text (never a dev/test sentence)
    OUT/speakers.tsv                      speaker -> set, voice, variant, rate, pitch
    OUT/.done                             the parameters and totals of a finished corpus

Sets, speaker-disjoint down to the (voice, variant) pair:

* ``pool``: unlabeled (no transcript line), Old Testament text, for pre-training;
* ``train``: labeled, Old Testament text (pool and train verses are disjoint), enough for
  the paper's 1 h subset (wav2vec 2.0 §4.1);
* ``dev``: other New Testament books (Acts - Revelation); ``test``: the gospels.
  Dev/test verses are ones whose text occurs once in the whole Bible, and the LM text is
  every verse except those sentences.

Usage: ``python local/demo.py --out data/demo/corpus --size cpu [--scale 1] [--seed 0]``.
Rerunning with the same parameters is a no-op; anything else is built in a temporary
directory and renamed over OUT when complete.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import soundfile as sf
import torch
from tqdm import tqdm

VERSION = 1  # bump when the output for given parameters changes
SR_OUT = 16000
SR_ESPEAK = 22050
SETS = ("pool", "train", "dev", "test")
# Seconds of audio per set, before --scale.
SIZES = {
    "cpu": {"pool": 1.5 * 3600, "train": 1.1 * 3600, "dev": 360, "test": 360},
    "gpu": {"pool": 10 * 3600, "train": 1.1 * 3600, "dev": 900, "test": 900},
}
SPEAKERS = {
    "cpu": {"pool": 40, "train": 24, "dev": 4, "test": 4},
    "gpu": {"pool": 200, "train": 24, "dev": 8, "test": 8},
}
VOICES = ("en-us", "en-gb", "en-gb-x-rp", "en-029", "en-gb-scotland", "en-gb-x-gbclan",
          "en-gb-x-gbcwmd", "en-us-nyc")
VARIANTS = tuple(f"m{i}" for i in range(1, 8)) + tuple(f"f{i}" for i in range(1, 6)) + (
    "klatt", "klatt2", "klatt3", "croak")
RATE = (130, 190)   # words per minute
PITCH = (30, 70)    # espeak 0-99
WORDS = (4, 30)     # verse length filter
N_OT_BOOKS = 39     # Genesis .. Malachi
GOSPELS = range(39, 43)  # Matthew, Mark, Luke, John (0-based book index)
_VERSE = re.compile(r"^(\d?[A-Za-z]+)(\d+):(\d+) (.*)$")
_NORM = re.compile(r"[^A-Z' ]+")
SETUP_HINT = "install Debian package {pkg} (apt-get install {pkg}), or run scripts/setup.sh"


@dataclass(frozen=True)
class Verse:
    book: int
    ref: str
    text: str


@dataclass(frozen=True)
class Speaker:
    name: str
    set: str
    voice: str
    variant: str
    rate: int
    pitch: int


def _norm(text: str) -> str:
    return " ".join(_NORM.sub(" ", text.upper().replace("-", " ")).split())


def read_bible() -> list[Verse]:
    """All KJV verses in canonical order, from the ``bible`` command of bible-kjv."""
    if not shutil.which("bible"):
        sys.exit("error: the `bible` command was not found: " + SETUP_HINT.format(pkg="bible-kjv"))
    out = subprocess.run(["bible", "-f", "Gen1:1-Rev22:21"], capture_output=True, text=True, check=True)
    books: dict[str, int] = {}
    verses = []
    for line in out.stdout.splitlines():
        m = _VERSE.match(line.strip())
        if m:
            book = books.setdefault(m.group(1), len(books))
            verses.append(Verse(book, f"{m.group(1)}{m.group(2)}:{m.group(3)}", m.group(4).strip()))
    if len(books) != 66 or len(verses) < 30000:
        sys.exit(f"error: `bible` printed {len(verses)} verses in {len(books)} books; expected the "
                 "whole KJV (66 books): " + SETUP_HINT.format(pkg="bible-kjv"))
    return verses


def make_speakers(size: str, scale: float, rng: random.Random) -> list[Speaker]:
    pairs = [(v, x) for v in VOICES for x in VARIANTS]
    rng.shuffle(pairs)
    counts = {s: max(2, min(n, math.ceil(n * math.sqrt(scale)))) for s, n in SPEAKERS[size].items()}
    speakers, k = [], 0
    own: dict[str, list] = {}
    for s in ("dev", "test", "train"):  # one (voice, variant) pair per speaker
        own[s], k = pairs[k:k + counts[s]], k + counts[s]
    own["pool"] = pairs[k:]  # pool speakers share the remaining pairs
    n = 0
    for s in SETS:
        for i in range(counts[s]):
            voice, variant = own[s][i % len(own[s])]
            speakers.append(Speaker(f"spk{n:03d}", s, voice, variant,
                                    rng.randint(*RATE), rng.randint(*PITCH)))
            n += 1
    return speakers


class Synth:
    """espeak-ng -> 16 kHz FLAC; thread-safe (espeak runs as a subprocess)."""

    def __init__(self, tmp: Path):
        from lhotse.augmentation.resample import Resample

        self.tmp = tmp
        # Kaiser-windowed sinc, 64 zero crossings: the "kaiser_best" settings of resampy/torchaudio.
        self.resample = Resample(SR_ESPEAK, SR_OUT, resampling_method="sinc_interp_kaiser",
                                 lowpass_filter_width=64, rolloff=0.9475937167399596,
                                 beta=14.769656459379492)

    def audio(self, spk: Speaker, text: str, name: str) -> np.ndarray:
        """``text`` spoken by ``spk``: 16 kHz float32 in [-1, 1]; ``name`` must be unique per call."""
        wav = self.tmp / f"{name}.wav"
        cmd = ["espeak-ng", "-v", f"{spk.voice}+{spk.variant}", "-s", str(spk.rate),
               "-p", str(spk.pitch), "-w", str(wav), "--stdin"]
        subprocess.run(cmd, input=text, text=True, check=True, capture_output=True)
        x, sr = sf.read(wav, dtype="float32")
        wav.unlink()
        assert sr == SR_ESPEAK, f"espeak-ng wrote {sr} Hz, expected {SR_ESPEAK}"
        with torch.no_grad():
            y = self.resample(torch.from_numpy(x)[None])[0].numpy()
        return np.clip(y, -1.0, 1.0)

    def __call__(self, spk: Speaker, text: str, path: Path) -> float:
        y = self.audio(spk, text, path.stem)
        write_flac(path, y)
        return len(y) / SR_OUT


def write_flac(path: Path, y: np.ndarray) -> None:
    """16 kHz mono int16 FLAC, parent folders created."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, y, SR_OUT, subtype="PCM_16", format="FLAC")


def synthesize_set(name, speakers, verses, target, synth, ex, root, bar):
    """Synthesise utterances round-robin over ``speakers`` until ``target`` seconds.

    Items are tried in a fixed order and kept up to the first prefix that reaches the
    target (and gives every speaker one utterance), so the result does not depend on
    ``--jobs``. Returns ``[(id, speaker, verse, seconds)]``.
    """
    kept, total, j = [], 0.0, 0
    vi = iter(verses)
    while total < target or j < len(speakers):
        est = sum(len(v.text.split()) for v in verses[:50]) / 50 * 60 / 160 + 0.5
        n = max(len(speakers) - j, math.ceil((target - total) / est * 1.05), 1)
        batch = []
        for _ in range(n):
            spk = speakers[j % len(speakers)]
            v = next(vi, None)
            if v is None:  # ran out: cycle through the verses again
                vi = iter(verses)
                v = next(vi)
            utt = f"{spk.name}-{j // len(speakers):04d}"
            batch.append((utt, spk, v, root / "audio" / name / spk.name / f"{utt}.flac"))
            j += 1
        futures = [ex.submit(synth, spk, v.text, path) for _, spk, v, path in batch]
        done = False
        for (utt, spk, v, path), fut in zip(batch, futures):
            dur = fut.result()
            bar.update(dur)
            if done:
                path.unlink()
                continue
            kept.append((utt, spk, v, dur))
            total += dur
            done = total >= target and len(kept) >= len(speakers)
        if done:
            break
    return kept


def build(out: Path, size: str, seed: int, scale: float, jobs: int) -> dict:
    if not shutil.which("espeak-ng"):
        sys.exit("error: espeak-ng was not found: " + SETUP_HINT.format(pkg="espeak-ng"))
    rng = random.Random(seed)
    verses = read_bible()
    counts: dict[str, int] = {}
    for v in verses:
        counts[_norm(v.text)] = counts.get(_norm(v.text), 0) + 1
    usable = [v for v in verses if WORDS[0] <= len(v.text.split()) <= WORDS[1]]
    ot = [v for v in usable if v.book < N_OT_BOOKS]
    rng.shuffle(ot)
    text_for = {
        "train": ot[: len(ot) // 4],
        "pool": ot[len(ot) // 4:],
        # evaluation sentences occur once in the Bible, so the LM text can exclude them exactly
        "test": [v for v in usable if v.book in GOSPELS and counts[_norm(v.text)] == 1],
        "dev": [v for v in usable if v.book > GOSPELS[-1] and counts[_norm(v.text)] == 1],
    }
    for s in ("dev", "test"):
        rng.shuffle(text_for[s])
    speakers = make_speakers(size, scale, rng)
    targets = {s: t * scale for s, t in SIZES[size].items()}

    with atomic_dir(out) as tmp:
        torch.set_num_threads(1)  # parallelism comes from the thread pool
        synth = Synth(tmp)
        utts = {}
        with ThreadPoolExecutor(jobs) as ex, tqdm(total=round(sum(targets.values())), unit="s",
                                                  desc="synthesising", unit_scale=True) as bar:
            for s in SETS:
                spk = [x for x in speakers if x.set == s]
                utts[s] = synthesize_set(s, spk, text_for[s], targets[s], synth, ex, tmp, bar)
        with open(tmp / "transcripts.tsv", "w", encoding="utf-8") as f:
            f.write("id\ttext\tspeaker\tsplit\n")
            for s in ("train", "dev", "test"):  # the pool stays unlabeled: no lines
                for utt, spk, v, _ in utts[s]:
                    f.write(f"{utt}\t{v.text}\t{spk.name}\t{s}\n")
        held_out = {_norm(v.text) for s in ("dev", "test") for _, _, v, _ in utts[s]}
        with open(tmp / "lm_text.txt", "w", encoding="utf-8") as f:
            for v in verses:
                if _norm(v.text) not in held_out:
                    f.write(v.text + "\n")
        with open(tmp / "speakers.tsv", "w", encoding="utf-8") as f:
            f.write("speaker\tset\tvoice\tvariant\trate\tpitch\n")
            for x in speakers:
                f.write(f"{x.name}\t{x.set}\t{x.voice}\t{x.variant}\t{x.rate}\t{x.pitch}\n")
        totals = {s: {"utterances": len(u), "speakers": len({x[1].name for x in u}),
                      "hours": round(sum(x[3] for x in u) / 3600, 4)} for s, u in utts.items()}
        (tmp / ".done").write_text(json.dumps({"params": _params(size, seed, scale), "totals": totals},
                                              indent=2) + "\n")
    return totals


@contextmanager
def atomic_dir(out: Path) -> Iterator[Path]:
    """Build a corpus in a temporary directory beside ``out``; rename it over ``out`` when complete."""
    for stale in out.parent.glob(f".{out.name}.tmp-*"):  # left by a run that was killed
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the corpus is an ordinary directory
    try:
        yield tmp
        old = None
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            out.rename(old)
        tmp.rename(out)
        if old:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def is_done(out: Path, params: dict) -> bool:
    """Whether ``out/.done`` records a finished corpus made with ``params``."""
    done = out / ".done"
    try:
        return json.loads(done.read_text()).get("params") == params
    except (OSError, ValueError):
        return False


def _params(size, seed, scale):
    return {"version": VERSION, "size": size, "seed": seed, "scale": scale}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True, help="corpus directory to create")
    p.add_argument("--size", choices=sorted(SIZES), default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scale", type=float, default=1.0, help="multiplies every set's duration")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="parallel espeak-ng calls")
    a = p.parse_args(argv)
    if a.scale <= 0:
        p.error("--scale must be positive")
    out = a.out.resolve()
    if is_done(out, _params(a.size, a.seed, a.scale)):
        print(f"{out}: complete ({out / '.done'} matches), nothing to do")
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    totals = build(out, a.size, a.seed, a.scale, max(1, a.jobs))
    for s, t in totals.items():
        print(f"{s:6s} {t['utterances']:6d} utterances {t['speakers']:4d} speakers {t['hours']:7.3f} h")
    print(f"demo corpus written to {out} in {time.time() - t0:.1f} s "
          f"({sum(t['hours'] for t in totals.values()):.2f} h of audio, {a.jobs} jobs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
