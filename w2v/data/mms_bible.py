"""The ``mms_bible`` corpus type: chapter recordings + verse text -> verse-level manifests.

The MMS setting (Pratap et al. 2023, the MMS-lab data): per language, one recording per Bible
chapter and the chapter's verses as text. Preparation romanises the text (uroman), aligns each chapter
to its verses with a CTC model and a ``<star>`` for unscripted audio (:mod:`w2v.align`),
drops verses the model is not confident about, and writes one supervision per kept verse,
with its language. Layout (``local/mms_bible.py`` makes a synthetic one)::

    PATH/<lang>/chapters/<chapter>.flac   one recording per chapter (flac/wav/mp3/ogg/opus);
                                          <lang> is an ISO 639-3 code (uroman uses it)
    PATH/<lang>/verses.tsv                header ``chapter verse text [split] [speaker]``; verses
                                          of a chapter in reading order; ``split`` per chapter
                                          (train, dev*, test*; default train); speaker
                                          default <lang>
    PATH/<lang>/seed/                     optional verse-level clips + ``transcripts.tsv``
                                          (``id<TAB>text``): the seed set that bootstraps the
                                          alignment model; they join the training data

Config (``corpus: {type: mms_bible, path: ..., languages: [...], segment: {...}}``):

* ``languages``: which ``<lang>`` directories to use (default: all that have ``verses.tsv``).
* ``segment.model``: a fine-tuned CTC ``model.pt`` to align with (e.g. an imported MMS
  checkpoint). Without it the alignment model is *bootstrapped*: ``segment.bootstrap``
  (``preset`` = model preset, default ``tiny``, plus training settings) fine-tunes a CTC
  model from scratch on the seed sets of all languages with the recipe's training loop,
  on romanised transcripts, as one multilingual model.
* ``segment.star_penalty``, ``min_confidence``, ``confidence_window``, ``chunk``,
  ``context``: :class:`w2v.align.segment.SegmentSettings`. ``segment.device``: where the
  model runs (default ``auto``).

Evaluation splits: ``test*`` splits are named per language (``test`` of ``spa`` ->
``test_spa``) so that the decode and score stages report every language on its own;
``dev*`` splits are pooled over languages because the decoder's LM weight is tuned on one
dev set.

Work files go to ``segment/`` beside the manifests directory: the bootstrapped model, one JSON per aligned
chapter (a rerun reuses it while the model, text and settings are unchanged; the chapters' Viterbi
searches run in ``num_threads`` worker processes), and
``segments.tsv`` listing every verse with its times, confidence, whether it was kept and why
not, and its edges before refinement (``ctc_start``, ``ctc_end``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections import Counter
from dataclasses import asdict, fields
from pathlib import Path

from lhotse import Recording, SupervisionSegment
from tqdm import tqdm

from w2v.data.ingest import (AUDIO_EXTENSIONS, CorpusError, _channel, _existing_dir, _few, _recordings, check_split,
                             read_transcripts, utf8_lines)
from w2v.io import atomic_path, write_text

__all__ = ["bootstrap_model", "prepare_mms_bible", "read_verses"]

log = logging.getLogger(__name__)

VERSES = "verses.tsv"
_BOOTSTRAP = {  # the demo's CPU fine-tuning settings (egs/demo/config.yaml): no masking, high LR
    "preset": "tiny", "max_updates": 300, "lr": 2e-3, "schedule": "tri_stage", "warmup": 0.1, "hold": 0.4,
    "max_duration": 16.0, "freeze_feature_encoder": False, "clip_norm": 10.0, "cache_audio": True,
    "save_every": 100, "log_every": 10,
    "model_overrides": {"mask_prob": 0.0, "mask_channel_prob": 0.0, "layerdrop": 0.0},
}


def read_verses(path: Path) -> list[dict]:
    """Rows of a ``verses.tsv``: ``chapter``, ``verse``, ``text``, ``split``, ``speaker`` (may be '')."""
    rows, columns = [], None
    for n, line in utf8_lines(path):
        if not line.strip():
            continue
        fields_ = [f.strip() for f in line.split("\t")]
        if columns is None:
            columns = [c.lower() for c in fields_]
            if not {"chapter", "verse", "text"} <= set(columns):
                raise CorpusError(f"{path}:{n}: the header must name the columns chapter, verse, text "
                                  f"(and optionally split, speaker); found {fields_}")
            continue
        if len(fields_) != len(columns):
            raise CorpusError(f"{path}:{n}: expected {len(columns)} tab-separated columns, got {len(fields_)}")
        row = dict(zip(columns, fields_))
        if not row["chapter"] or not row["verse"]:
            raise CorpusError(f"{path}:{n}: empty chapter or verse")
        row["split"] = check_split(row.get("split", ""), f"{path}:{n}")
        row["line"] = n
        rows.append(row)
    if columns is None:
        raise CorpusError(f"{path}: empty; expected a header line and one line per verse")
    seen: dict[tuple, int] = {}
    for r in rows:
        key = (r["chapter"], r["verse"])
        if key in seen:
            raise CorpusError(f"{path}:{r['line']}: verse {r['chapter']}:{r['verse']} repeats line {seen[key]}")
        seen[key] = r["line"]
    splits: dict[str, set] = {}
    for r in rows:
        splits.setdefault(r["chapter"], set()).add(r["split"])
    mixed = [c for c, s in splits.items() if len(s) > 1]
    if mixed:
        raise CorpusError(f"{path}: a chapter's verses must share one split; mixed in {_few(mixed)}")
    return rows


def _languages(root: Path, corpus: dict, key: str) -> list[str]:
    found = sorted(p.name for p in root.iterdir() if (p / VERSES).is_file())
    wanted = corpus.get("languages") or found
    missing = [lang for lang in wanted if lang not in found]
    if missing or not wanted:
        raise CorpusError(f"{key}: expected <lang>/{VERSES} and <lang>/chapters/ under {root} for languages "
                          f"{wanted or '(any)'}; found {VERSES} for {found or 'none'}; missing {missing}")
    return list(wanted)


def _audio_files(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        return {}
    return {p.stem: p for p in sorted(folder.iterdir())
            if p.suffix.lower() in AUDIO_EXTENSIONS and not p.name.startswith(".")}


def _seed_items(root: Path, langs: list[str]) -> list[tuple[str, str, Path, str]]:
    """``(lang, id, audio, text)`` of every seed clip."""
    items = []
    for lang in langs:
        seed = root / lang / "seed"
        if not (seed / "transcripts.tsv").is_file():
            continue
        audio = _audio_files(seed)
        rows = read_transcripts(seed / "transcripts.tsv")
        missing = [r.id for r in rows if r.id not in audio]
        if missing:
            raise CorpusError(f"{seed / 'transcripts.tsv'}: {len(missing)} id(s) have no audio file in {seed}: "
                              f"{_few(missing)}")
        items += [(lang, r.id, audio[r.id], r.text) for r in rows if r.text]
    return items


def bootstrap_model(root: Path, langs: list[str], work: Path, settings: dict, device: str | None,
                    num_threads: int) -> Path:
    """Fine-tune a CTC alignment model from scratch on the seed sets (romanised text); its ``model.pt``."""
    from lhotse import CutSet, SupervisionSet, RecordingSet

    from w2v.align.romanize import romanize
    from w2v.data.cuts import to_mono_16k
    from w2v.data.text import normalize_text
    from w2v.models import load_model_config
    from w2v.train.config import TrainConfig
    from w2v.train.loop import train

    out = work / "align_model"
    settings = {**_BOOTSTRAP, **settings}
    where = "corpus.segment.bootstrap"
    preset = settings.pop("preset")
    tcfg = TrainConfig.from_dict({"task": "finetune", **settings}, where=where)
    items = _seed_items(root, langs)
    seed = hashlib.sha256(json.dumps([(i, t, p.stat().st_size) for _, i, p, t in items]).encode()).hexdigest()[:16]
    stamp = json.dumps({"langs": langs, "preset": preset, "train": tcfg.to_dict(), "seed_set": seed},
                       sort_keys=True, default=str)
    done = out / "settings.json"
    if done.is_file() and done.read_text() == stamp:
        if (out / "model.pt").is_file():
            return out / "model.pt"  # else an interrupted run of the same settings: train() resumes it
    elif done.is_file():  # another seed set or settings: the old checkpoints must not be resumed
        log.info("alignment model settings or seed set changed: training %s again", out)
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
        (out / "model.pt").unlink(missing_ok=True)
    if not items:
        raise CorpusError(f"{root}: no seed set (<lang>/seed/transcripts.tsv + clips) to bootstrap the alignment "
                          "model from; give one, or an existing model as corpus.segment.model")
    texts = [normalize_text(romanize(text, lang)) for lang, _, _, text in items]
    recs = {r.id: r for r in _recordings({i: p for _, i, p, _ in items}, num_threads, "reading seed clips")}
    sups = [SupervisionSegment(id=i, recording_id=i, start=0.0, duration=recs[i].duration, channel=_channel(recs[i]),
                               text=t, speaker=lang, language=lang) for (lang, i, _, _), t in zip(items, texts) if t]
    cuts = CutSet.from_manifests(RecordingSet.from_recordings(recs.values()), SupervisionSet.from_segments(sups))
    out.mkdir(parents=True, exist_ok=True)
    write_text(done, stamp)
    with atomic_path(out / "seed_cuts.jsonl.gz") as tmp:
        CutSet.from_cuts(to_mono_16k(c) for c in cuts).to_file(tmp)
    units = ["<blank>", "|"] + sorted({ch for t in texts for ch in t if ch != " "})
    write_text(out / "units.txt", "".join(f"{u} {i}\n" for i, u in enumerate(units)))
    log.info("bootstrapping the alignment model on %d seed clips (%.1f min, %s) with %d units",
             len(sups), sum(s.duration for s in sups) / 60, ", ".join(langs), len(units))
    return train(tcfg, out / "seed_cuts.jsonl.gz", out, load_model_config(preset), units_path=out / "units.txt",
                 device=device)


class _Aligner:
    """The alignment model and settings; aligns one chapter (cached in ``work/chapters/``)."""

    def __init__(self, model_path: Path, settings, device, work: Path):
        from w2v.align.segment import frame_geometry
        from w2v.decode.emissions import load_ctc_model

        self.model_path, self.settings, self.device, self.work = model_path, settings, device, work
        self.model, meta = load_ctc_model(model_path, device)
        self.unit_to_id = {u: i for i, u in enumerate(meta["units"])}
        self.normalize = meta["train_config"].get("normalize_audio", True)
        self.hop, self.rf = frame_geometry(self.model.cfg)
        self.unspelled: Counter = Counter()

    def _key(self, texts: list[str]) -> str:
        """What a chapter's alignment depends on (the threshold is applied when it is read)."""
        st = self.model_path.stat()
        align = {k: v for k, v in asdict(self.settings).items() if k != "min_confidence"}
        h = hashlib.sha256(json.dumps([str(self.model_path.resolve()), st.st_size, st.st_mtime_ns, texts, align],
                                      ensure_ascii=False).encode())
        return h.hexdigest()[:16]

    def _cache(self, rec: Recording) -> Path:
        return self.work / "chapters" / f"{rec.id}.json"

    def cached(self, rec: Recording, texts: list[str]) -> dict[str, list[float]] | None:
        """A chapter's verses from an earlier run's alignment, if its model, text and settings match."""
        cache = self._cache(rec)
        result = json.loads(cache.read_text()) if cache.is_file() else {}
        return result["verses"] if result.get("key") == self._key(texts) else None

    def job(self, rec: Recording, source: Path, texts: list[str], lang: str) -> dict:
        """The arguments of :func:`_align_chapter` for one chapter: its emissions (computed here,
        where the model is) and unit sequences; the Viterbi search runs wherever the job goes."""
        import torch

        from w2v.align.romanize import to_units
        from w2v.align.segment import chunked_emissions, frame_levels
        from w2v.train.loop import AudioStore

        units = [to_units(t, self.unit_to_id, lang, dropped=self.unspelled) for t in texts]
        audio = AudioStore([_mono_cut(rec)], cache=False)[0]
        with torch.no_grad():
            lp = chunked_emissions(self.model, audio, self.normalize, self.settings, self.device)
        return {"log_probs": lp, "units": units, "hop": self.hop, "settings": self.settings,
                "blank": self.unit_to_id["<blank>"], "levels": frame_levels(audio, self.hop, self.rf),
                "source": str(source)}

    def store(self, rec: Recording, texts: list[str], verses: dict[str, list[float]]) -> None:
        write_text(self._cache(rec), json.dumps({"key": self._key(texts), "verses": verses}) + "\n")


def _align_chapter(log_probs, units: list[list[int]], hop: int, settings, blank: int, levels, source: str
                   ) -> dict[str, list[float]]:
    """Verse index -> ``[start, end, confidence, ctc_start, ctc_end]`` of one chapter (verses with
    no units are absent). Module-level, so that chapters align in parallel worker processes."""
    from w2v.align.segment import segment_recording

    spellable = [i for i, u in enumerate(units) if u]
    try:
        segs = segment_recording(log_probs, [units[i] for i in spellable], hop, settings, blank=blank, levels=levels)
    except ValueError as e:
        raise CorpusError(f"{source}: {e} ({len(units)} verses)") from None
    return {str(i): [s.start, s.end, s.confidence, s.ctc_start, s.ctc_end] for i, s in zip(spellable, segs)}


def _align_all(aligner: _Aligner, chapters: list[tuple[Recording, Path, list[str], str]], workers: int
               ) -> list[dict[str, list[float]]]:
    """Every chapter's alignment, in order. Emissions come from the model in this process, one
    chapter after another; the Viterbi searches (seconds per chapter, single-threaded numpy)
    run in up to ``workers`` processes. Each chapter's result is cached as soon as it is done,
    so an interrupted run keeps them."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    results: list[dict | None] = [aligner.cached(rec, texts) for rec, _, texts, _ in chapters]
    todo = [i for i, r in enumerate(results) if r is None]
    if len(chapters) > len(todo):
        log.info("%d of %d chapters aligned by an earlier run (cached)", len(chapters) - len(todo), len(chapters))
    workers = max(1, min(workers, len(todo)))
    bar = tqdm(total=len(todo), desc=f"aligning chapters ({workers} process{'es' if workers > 1 else ''})",
               unit="chapter")

    def done(i: int, verses: dict) -> None:
        rec, _, texts, _ = chapters[i]
        aligner.store(rec, texts, verses)
        results[i] = verses
        bar.update()

    if workers == 1:
        for i in todo:
            done(i, _align_chapter(**aligner.job(*chapters[i])))
    else:
        # spawn: the workers need numpy only, and a fork of a process holding CUDA and OpenMP threads is unsafe
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(_align_chapter, **aligner.job(*chapters[i])): i for i in todo}
            try:
                for fut in as_completed(futures):
                    done(futures[fut], fut.result())
            except BaseException:  # a chapter that cannot be aligned (or Ctrl-C): the queued ones are not started
                pool.shutdown(cancel_futures=True)
                raise
    bar.close()
    return results


def prepare_mms_bible(corpus: dict, key: str, num_threads: int, work: Path):
    """Recordings and verse supervisions of an ``mms_bible`` corpus (see the module docstring).

    ``work`` receives the alignment model, the per-chapter alignments and ``segments.tsv``.
    """
    from w2v.align.segment import SegmentSettings
    from w2v.train.loop import resolve_device

    root = _existing_dir(corpus, key)
    langs = _languages(root, corpus, key)
    seg_cfg = dict(corpus.get("segment") or {})
    device = resolve_device(seg_cfg.pop("device", None))
    model_path = seg_cfg.pop("model", None)
    boot = seg_cfg.pop("bootstrap", {}) or {}
    known = {f.name for f in fields(SegmentSettings)}
    unknown = sorted(set(seg_cfg) - known)
    if unknown:
        raise CorpusError(f"{key}.segment: unknown key(s) {unknown}; expected model, bootstrap, device or "
                          f"{sorted(known)}")
    settings = SegmentSettings(**seg_cfg)
    work = Path(work)

    # recordings: chapters (verse supervisions come from alignment) and seed clips
    verses = {lang: read_verses(root / lang / VERSES) for lang in langs}
    chapter_audio: dict[str, Path] = {}
    for lang in langs:
        audio = _audio_files(root / lang / "chapters")
        chapters = list(dict.fromkeys(r["chapter"] for r in verses[lang]))
        missing = [c for c in chapters if c not in audio]
        if missing:
            raise CorpusError(f"{root / lang / 'chapters'}: no recording for {len(missing)} chapter(s) of "
                              f"{root / lang / VERSES}: {_few(missing)} (expected <chapter>.flac or another of "
                              f"{', '.join(AUDIO_EXTENSIONS)}; found {_few(sorted(audio)) or 'none'})")
        chapter_audio |= {f"{lang}-{c}": audio[c] for c in chapters}
    seeds = _seed_items(root, langs)
    recs = _recordings(chapter_audio | {i: p for _, i, p, _ in seeds}, num_threads, f"reading {root.name}")
    by_id = {r.id: r for r in recs}

    if model_path:
        model_path = Path(model_path)
        if not model_path.is_file():
            raise CorpusError(f"{key}.segment.model: {model_path} does not exist")
    else:
        model_path = bootstrap_model(root, langs, work, boot, str(device), num_threads)
    aligner = _Aligner(model_path, settings, device, work)

    sups: list[SupervisionSegment] = []
    table = ["language\tchapter\tverse\tstart\tend\tconfidence\tkept\treason\tctc_start\tctc_end\n"]
    dropped: list[str] = []
    order: list[tuple[str, str, list[dict], Recording]] = []
    for lang in langs:
        by_chapter: dict[str, list[dict]] = {}
        for r in verses[lang]:
            by_chapter.setdefault(r["chapter"], []).append(r)
        for chapter, rows in by_chapter.items():
            rec = by_id.get(f"{lang}-{chapter}")
            if rec is None:
                raise CorpusError(f"{chapter_audio[f'{lang}-{chapter}']}: empty recording of chapter {chapter}")
            order.append((lang, chapter, rows, rec))
    aligned = _align_all(aligner, [(rec, chapter_audio[rec.id], [r["text"] for r in rows], lang)
                                   for lang, _, rows, rec in order], num_threads)
    for (lang, chapter, rows, rec), result in zip(order, aligned):
        for i, r in enumerate(rows):
            vid = f"{lang}-{chapter}_{_verse_id(r['verse'])}"
            seg = result.get(str(i))
            if seg is None:
                reason, start, end, conf, kept, cs, ce = "no_units", 0.0, 0.0, float("nan"), False, 0.0, 0.0
            else:
                start, end, conf, cs, ce = seg
                kept = conf >= settings.min_confidence
                end = min(end, rec.duration)
                reason = "" if kept else "low_confidence"
            table.append(f"{lang}\t{chapter}\t{r['verse']}\t{start:.3f}\t{end:.3f}\t{conf:.3f}\t{int(kept)}\t"
                         f"{reason}\t{cs:.3f}\t{ce:.3f}\n")
            if not kept:
                dropped.append(f"{vid} ({reason}, confidence {conf:.2f})")
                continue
            split = r["split"]
            sups.append(SupervisionSegment(
                id=vid, recording_id=rec.id, start=round(start, 3), duration=round(end - start, 3),
                channel=_channel(rec), text=r["text"], speaker=r.get("speaker") or lang, language=lang,
                custom={"split": f"{split}_{lang}" if split.startswith("test") else split}))
    write_text(work / "segments.tsv", "".join(table))
    n_verses = sum(len(v) for v in verses.values())
    if dropped:
        log.warning("dropped %d of %d verses (confidence < %.2f or nothing to align): %s", len(dropped), n_verses,
                    settings.min_confidence, "; ".join(dropped))
    if aligner.unspelled:
        log.warning("romanised characters without a unit in the alignment model (left out): %s",
                    " ".join(f"{c!r}x{n}" for c, n in aligner.unspelled.most_common(10)))
    log.info("segmented %d chapters into %d verses (%d dropped); table in %s", len(chapter_audio),
             n_verses - len(dropped), len(dropped), work / "segments.tsv")
    for lang, i, _, text in seeds:
        r = by_id.get(i)
        if r is not None:
            sups.append(SupervisionSegment(id=i, recording_id=i, start=0.0, duration=r.duration, channel=_channel(r),
                                           text=text, speaker=lang, language=lang, custom={"split": "train"}))
    return recs, sups


def _verse_id(verse: str) -> str:
    return f"{int(verse):03d}" if verse.isdigit() else verse


def _mono_cut(rec: Recording):
    from w2v.data.cuts import to_mono_16k

    return to_mono_16k(rec.to_cut())

