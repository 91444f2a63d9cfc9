#!/usr/bin/env python3
"""Make a small MMS-style Bible corpus: whole chapters read by espeak-ng, verse text beside them.

The MMS data (Pratap et al. 2023, the MMS-lab data) are per-language chapter recordings of New
Testament readings plus the verse text; verse-level training data come from segmenting each chapter by
forced alignment. No such recordings can be downloaded where w2v is developed, so this script
makes two languages of them from public-domain Bibles (Debian SWORD modules read with
``diatheke``): English (World English Bible, ``sword-text-web``) and Spanish (Reina-Valera 1909,
``sword-text-sparv``). Each chapter is one long recording: a spoken heading that is not in the
text ("Ruth, chapter 1"), then the verses with pauses of random length between them, over a
faint noise floor. The layout is the ``mms_bible`` corpus type's (``w2v/data/mms_bible.py``)::

    OUT/<lang>/chapters/<BOOK>_<NNN>.flac   one 16 kHz recording per chapter
    OUT/<lang>/verses.tsv                   chapter verse text split (header line)
    OUT/<lang>/seed/<id>.flac               verse-level clips of other chapters (seed set for
    OUT/<lang>/seed/transcripts.tsv         bootstrapping the alignment model; id text)
    OUT/<lang>/boundaries_true.tsv          chapter verse start end mismatch: the truth, kept
                                            aside to measure the segmenter (never read by it)
    OUT/lm_text.txt                         every verse of both Bibles outside dev/test chapters
    OUT/.done                               parameters and totals of a finished corpus

``--mismatch N`` gives N training verses per language a wrong text in ``verses.tsv`` (a verse
from another book; ``mismatch`` = 1 in the truth), as happens in real data: the segmenter
should give them a low confidence and drop them.

Usage::

    python local/mms_bible.py --out data/mms_bible/corpus [--chapters "Ruth 1-4"] [--seed 0]
    python local/mms_bible.py --out data/mms_bible/corpus --score data/mms_bible/segment

The second form measures the segmenter: mean absolute error of the verse start and end times
in ``segment/segments.tsv`` against ``boundaries_true.tsv``, and which mismatched verses were
dropped. Rerunning the first form with the same parameters is a no-op.
"""

from __future__ import annotations

import argparse
import csv
import html
import json
import random
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from demo import SETUP_HINT, SR_OUT, Speaker, Synth, atomic_dir, is_done, write_flac  # noqa: E402

VERSION = 2  # bump when the output for given parameters changes


@dataclass(frozen=True)
class Language:
    code: str  # ISO 639-3, as MMS names its languages
    module: str  # SWORD module
    package: str  # Debian package holding it
    voice: str  # espeak-ng voice
    rate: int
    pitch: int
    heading: str  # the spoken chapter heading, not part of the verse text


LANGUAGES = {
    "eng": Language("eng", "engWEB2015eb", "sword-text-web", "en-us+m3", 165, 45, "{book}, chapter {n}."),
    "spa": Language("spa", "spaRV1909eb", "sword-text-sparv", "es+m1", 160, 50, "{book}, capítulo {n}."),
}
BOOK_NAMES = {  # SWORD key (English) -> (code, heading name per language)
    "Ruth": ("RUT", {"eng": "Ruth", "spa": "Rut"}),
    "Jonah": ("JON", {"eng": "Jonah", "spa": "Jonás"}),
    "Mark": ("MRK", {"eng": "Mark", "spa": "Marcos"}),
    "John": ("JHN", {"eng": "John", "spa": "Juan"}),
    "Philemon": ("PHM", {"eng": "Philemon", "spa": "Filemón"}),
    "Titus": ("TIT", {"eng": "Titus", "spa": "Tito"}),
    "Psalms": ("PSA", {"eng": "Psalm", "spa": "Salmo"}),  # 117 and 133-134 are a few verses: tests
}
PAUSE = (0.25, 0.9)  # seconds of pause between verses
NOISE_DB = -60.0  # noise floor, dB re full scale (rms)
# a verse line; markup before the reference (psalm titles, which diatheke repeats on every line
# of the psalm) is dropped
_LINE = re.compile(r"(?:^|>\s*)(?:[1-3] )?[A-Za-z ]+ (\d+):(\d+): ?(.*)$")
_ADJACENT = re.compile(r"</w>(?=<w[ >])")
_WORD_TAG = re.compile(r"</?w\b[^>]*>")
_TAG = re.compile(r"<[^>]*>")
_CHAPTERS = re.compile(r"^\s*(.+?)\s+(\d+)(?:-(\d+))?\s*$")


@dataclass(frozen=True)
class Verse:
    chapter: str  # RUT_001
    verse: int
    text: str


def _diatheke(module: str, key: str, package: str) -> str:
    if not shutil.which("diatheke"):
        sys.exit("error: diatheke was not found: " + SETUP_HINT.format(pkg="diatheke"))
    out = subprocess.run(["diatheke", "-b", module, "-k", key],
                         capture_output=True, text=True, check=True).stdout
    if not out.strip() or out.strip() == f"({module})":
        sys.exit(f"error: diatheke printed nothing for module {module}: " + SETUP_HINT.format(pkg=package))
    return out


def parse_diatheke(out: str) -> list[tuple[int, int, str]]:
    """``diatheke`` (OSIS markup, one verse a line) -> ``(chapter, verse, plain text)``.

    Markup is stripped here rather than with ``-f plain``, which glues adjacent tagged words
    ("Christ</w><w>Jesus" -> "ChristJesus") and leaves Strong's numbers in the Spanish text.
    """
    rows = []
    for line in out.splitlines():
        m = _LINE.search(line)
        if m:
            text = _TAG.sub(" ", _WORD_TAG.sub("", _ADJACENT.sub("</w> ", m.group(3))))
            text = " ".join(html.unescape(text).split())
            if text:
                rows.append((int(m.group(1)), int(m.group(2)), re.sub(r" ([,.;:!?»)])", r"\1", text)))
    return rows


def chapter_keys(spec: str) -> list[tuple[str, int]]:
    """``"Ruth 1-4"``, ``"Jonah 2"`` or several such ranges joined by ``;`` (``"Mark 1-16; John
    1-21"``) -> ``(book, chapter)`` in reading order."""
    keys = []
    for part in spec.split(";"):
        m = _CHAPTERS.match(part)
        if not m or m.group(1) not in BOOK_NAMES or int(m.group(3) or m.group(2)) < int(m.group(2)):
            sys.exit(f"error: chapters {spec!r}: expected 'BOOK N' or 'BOOK N-M' (N <= M), several joined by "
                     f"';', with BOOK one of {sorted(BOOK_NAMES)}; got {part.strip()!r}")
        book, first, last = m.group(1), int(m.group(2)), int(m.group(3) or m.group(2))
        keys += [(book, n) for n in range(first, last + 1)]
    if len(set(keys)) < len(keys):
        sys.exit(f"error: chapters {spec!r} name a chapter twice")
    return keys


def read_chapters(lang: Language, spec: str) -> list[Verse]:
    """Verses of the chapters ``spec`` names (`chapter_keys`) in ``lang``'s Bible."""
    verses = []
    for book, n in chapter_keys(spec):
        rows = parse_diatheke(_diatheke(lang.module, f"{book} {n}", lang.package))
        verses += [Verse(f"{BOOK_NAMES[book][0]}_{n:03d}", v, t) for c, v, t in rows if c == n]
    return verses


def heading(lang: Language, chapter: str) -> str:
    code, n = chapter.split("_")
    name = next(names[lang.code] for c, names in BOOK_NAMES.values() if c == code)
    return lang.heading.format(book=name, n=int(n))


def trim(y: np.ndarray, threshold: float = 1e-3) -> np.ndarray:
    """Cut espeak's leading and trailing silence, so that a verse's true span is its speech."""
    loud = np.flatnonzero(np.abs(y) > threshold)
    return y[loud[0]: loud[-1] + 1] if len(loud) else y[:0]


def splits(chapters: list[str]) -> dict[str, str]:
    """The last chapter is test, the one before it dev, the rest train (one of each at least)."""
    out = {c: "train" for c in chapters}
    if len(chapters) >= 3:
        out[chapters[-1]], out[chapters[-2]] = "test", "dev"
    return out


def build_language(lang: Language, root: Path, chapter_spec: str, seed_spec: str, mismatch: int,
                   rng: random.Random, synth: Synth, ex: ThreadPoolExecutor) -> tuple[dict, list[Verse]]:
    spk = Speaker(lang.code, "train", *lang.voice.split("+"), lang.rate, lang.pitch)
    verses = read_chapters(lang, chapter_spec)
    seed = read_chapters(lang, seed_spec)
    chapters = sorted({v.chapter for v in verses}, key=lambda c: [v.chapter for v in verses].index(c))
    split = splits(chapters)
    d = root / lang.code

    # every verse and heading spoken on its own, so that the true boundaries are exact
    jobs = {(v.chapter, v.verse): v.text for v in verses + seed}
    jobs |= {(c, 0): heading(lang, c) for c in chapters}
    futures = {k: ex.submit(synth.audio, spk, text, f"{lang.code}_{k[0]}_{k[1]:03d}") for k, text in jobs.items()}
    clips = {k: trim(f.result()) for k, f in tqdm(futures.items(), desc=f"espeak-ng {lang.code}", unit="clip")}

    # the seed set: verse-level clips (a folder corpus: id<TAB>text)
    with open(_mkdir(d / "seed") / "transcripts.tsv", "w", encoding="utf-8") as f:
        for v in seed:
            utt = f"{lang.code}-{v.chapter}_{v.verse:03d}"
            write_flac(d / "seed" / f"{utt}.flac", _pad(clips[(v.chapter, v.verse)], rng))
            f.write(f"{utt}\t{v.text}\n")

    # wrong texts for a few training verses, taken from the seed chapters (another book)
    train_verses = [v for v in verses if split[v.chapter] == "train"]
    wrong = {(v.chapter, v.verse): rng.choice(seed).text for v in rng.sample(train_verses, mismatch)}
    noise = rng.random
    seconds = 0.0
    with open(d / "verses.tsv", "w", encoding="utf-8") as fv, \
            open(d / "boundaries_true.tsv", "w", encoding="utf-8") as fb:
        fv.write("chapter\tverse\ttext\tsplit\n")
        fb.write("chapter\tverse\tstart\tend\tmismatch\n")
        for c in chapters:
            parts = [_silence(rng.uniform(0.3, 0.8)), clips[(c, 0)]]
            t = sum(len(p) for p in parts)
            for v in (v for v in verses if v.chapter == c):
                parts.append(_silence(rng.uniform(*PAUSE)))
                t += len(parts[-1])
                clip = clips[(c, v.verse)]
                parts.append(clip)
                bad = (c, v.verse) in wrong
                fb.write(f"{c}\t{v.verse}\t{t / SR_OUT:.4f}\t{(t + len(clip)) / SR_OUT:.4f}\t{int(bad)}\n")
                fv.write(f"{c}\t{v.verse}\t{wrong.get((c, v.verse), v.text)}\t{split[c]}\n")
                t += len(clip)
            parts.append(_silence(rng.uniform(0.5, 1.0)))
            y = np.concatenate(parts)
            y = y + _noise(len(y), int(noise() * 2**31))
            write_flac(d / "chapters" / f"{c}.flac", np.clip(y, -1.0, 1.0))
            seconds += len(y) / SR_OUT
    held_out = [v for v in verses if split[v.chapter] != "train"]
    totals = {"chapters": len(chapters), "verses": len(verses), "chapter_hours": round(seconds / 3600, 4),
              "seed_clips": len(seed), "seed_hours": round(sum(len(clips[(v.chapter, v.verse)]) for v in seed)
                                                           / SR_OUT / 3600, 4),
              "mismatched": sorted(f"{c}:{n}" for c, n in wrong), "splits": split}
    return totals, held_out


def _mkdir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def _silence(seconds: float) -> np.ndarray:
    return np.zeros(int(round(seconds * SR_OUT)), dtype=np.float32)


def _pad(clip: np.ndarray, rng: random.Random) -> np.ndarray:
    """A seed clip as an utterance: short silences around the speech, the same noise floor."""
    y = np.concatenate([_silence(rng.uniform(0.1, 0.3)), clip, _silence(rng.uniform(0.1, 0.3))])
    return np.clip(y + _noise(len(y), rng.randrange(2**31)), -1.0, 1.0)


def _noise(n: int, seed: int) -> np.ndarray:
    return (10 ** (NOISE_DB / 20) * np.random.default_rng(seed).standard_normal(n)).astype(np.float32)


def lm_text(held_out: set[str]) -> list[str]:
    """Every verse of both Bibles whose text is not a dev/test verse's."""
    lines = []
    for lang in LANGUAGES.values():
        out = _diatheke(lang.module, "Genesis 1:1-Revelation 22:21", lang.package)
        lines += [t for _, _, t in parse_diatheke(out) if t not in held_out]
    return lines


def build(out: Path, chapters: str, seed_chapters: str, mismatch: int, seed: int, jobs: int) -> dict:
    if not shutil.which("espeak-ng"):
        sys.exit("error: espeak-ng was not found: " + SETUP_HINT.format(pkg="espeak-ng"))
    import torch

    with atomic_dir(out) as tmp:
        torch.set_num_threads(1)  # parallelism comes from the thread pool
        synth = Synth(tmp)
        totals, held_out = {}, set()
        with ThreadPoolExecutor(jobs) as ex:
            for i, lang in enumerate(LANGUAGES.values()):
                rng = random.Random(seed * 1000 + i)
                totals[lang.code], held = build_language(lang, tmp, chapters, seed_chapters, mismatch, rng, synth, ex)
                held_out |= {v.text for v in held}
        (tmp / "lm_text.txt").write_text("".join(t + "\n" for t in lm_text(held_out)), encoding="utf-8")
        (tmp / ".done").write_text(json.dumps({"params": _params(chapters, seed_chapters, mismatch, seed),
                                               "totals": totals}, indent=2, ensure_ascii=False) + "\n")
    return totals


def _params(chapters, seed_chapters, mismatch, seed):
    return {"version": VERSION, "chapters": chapters, "seed_chapters": seed_chapters, "mismatch": mismatch,
            "seed": seed}


def _tsv(path: Path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def score(corpus: Path, segment_dir: Path) -> dict:
    """Segmenter vs truth: mean absolute start/end error of the kept verses; mismatches dropped.

    ``segment_dir/segments.tsv`` (written by the ``mms_bible`` preparation) lists every verse
    with its start, end, confidence, whether it was kept, and (``ctc_start``, ``ctc_end``) its
    edges before refinement, scored too when present.
    """
    segs = {(r["language"], r["chapter"], int(r["verse"])): r for r in _tsv(segment_dir / "segments.tsv")}
    result: dict = {}
    every: dict[str, list[float]] = {"mae_s": [], "ctc_mae_s": []}
    for lang in sorted({k[0] for k in segs}):
        errs: dict[str, list[float]] = {"mae_s": [], "ctc_mae_s": []}
        dropped_ok, dropped_good, missed = [], [], []
        for t in _tsv(corpus / lang / "boundaries_true.tsv"):
            key = (lang, t["chapter"], int(t["verse"]))
            s = segs.get(key)
            if s is None:
                raise SystemExit(f"error: {segment_dir / 'segments.tsv'} has no line for {key}")
            kept = s["kept"] == "1"
            name = f"{t['chapter']}:{t['verse']}"
            if t["mismatch"] == "1":
                (missed if kept else dropped_ok).append(name)
            elif not kept:
                dropped_good.append(name)
            else:
                for col, prefix in (("mae_s", ""), ("ctc_mae_s", "ctc_")):
                    if s.get(prefix + "start") not in (None, ""):
                        errs[col] += [abs(float(s[prefix + "start"]) - float(t["start"])),
                                      abs(float(s[prefix + "end"]) - float(t["end"]))]
        result[lang] = {"verses_scored": len(errs["mae_s"]) // 2,
                        **{k: round(float(np.mean(v)), 4) for k, v in errs.items() if v},
                        "p90_s": round(float(np.percentile(errs["mae_s"], 90)), 4),
                        "max_s": round(float(np.max(errs["mae_s"])), 4),
                        "mismatched_dropped": dropped_ok, "mismatched_kept": missed,
                        "correct_dropped": dropped_good}
        for k in every:
            every[k] += errs[k]
    result["all"] = {"boundaries": len(every["mae_s"]),
                     **{k: round(float(np.mean(v)), 4) for k, v in every.items() if v}}
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True, help="corpus directory to create (or to score against)")
    p.add_argument("--chapters", default="Ruth 1-4",
                   help="chapters to record whole, per language ('Ruth 1-4', or ranges joined by ';')")
    p.add_argument("--seed-chapters", default="Jonah 1-4", help="chapters recorded verse by verse (seed set)")
    p.add_argument("--mismatch", type=int, default=1, help="training verses per language given a wrong text")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=2, help="parallel espeak-ng calls")
    p.add_argument("--score", type=Path, metavar="SEGMENT_DIR",
                   help="instead of generating: score SEGMENT_DIR/segments.tsv against the truth")
    a = p.parse_args(argv)
    out = a.out.resolve()
    if a.score:
        print(json.dumps(score(out, a.score), indent=2))
        return 0
    if is_done(out, _params(a.chapters, a.seed_chapters, a.mismatch, a.seed)):
        print(f"{out}: complete ({out / '.done'} matches), nothing to do")
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    totals = build(out, a.chapters, a.seed_chapters, max(0, a.mismatch), a.seed, max(1, a.jobs))
    for code, t in totals.items():
        print(f"{code}: {t['chapters']} chapters, {t['verses']} verses, {t['chapter_hours'] * 60:.1f} min; "
              f"seed {t['seed_clips']} clips, {t['seed_hours'] * 60:.1f} min; mismatched {t['mismatched']}")
    print(f"mms_bible corpus written to {out} in {time.time() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
