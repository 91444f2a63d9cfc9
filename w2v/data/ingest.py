"""Corpus ingestion: a corpus on disk -> lhotse recordings/supervisions manifests.

This is the bring-your-own-corpus path of the ``prepare`` stage (and the one the demo
recipe goes through). These layouts are understood:

``folder``  ``{type: folder, path: DIR}``
    DIR holds audio files (``.flac .wav .mp3 .ogg .opus``, any sample rate, mono or
    multi-channel, in any sub-folders) and ``DIR/transcripts.tsv``. The utterance id is the
    file stem and must be unique across DIR. ``transcripts.tsv`` is UTF-8, tab separated:
    ``id<TAB>text[<TAB>speaker]``, or, when the first line is a header naming the columns
    (``id text speaker split``, any order, ``id`` and ``text`` required), those columns.
    Audio files without a transcript line are *unlabeled* (used for pre-training only).

``kaldi``   ``{type: kaldi, path: DATA_DIR, split: train, sampling_rate: 16000}``
    A Kaldi data directory (``wav.scp`` and optionally ``text``, ``utt2spk``, ``segments``),
    read with :func:`lhotse.kaldi.load_kaldi_data_dir`. ``split`` (default ``train``) says
    which set the whole directory is; ``sampling_rate`` is only needed for ``wav.scp``
    entries that are commands (``... |``), files are measured with soundfile.

``mms_bible`` ``{type: mms_bible, path: DIR, languages: [...], segment: {...}}``
    Per-language chapter recordings and verse text, segmented into verses by CTC alignment
    (the MMS setting); see :mod:`w2v.data.mms_bible`.

``corpus`` may also be a list of such dicts (e.g. Kaldi ``train``, ``dev``, ``test`` dirs).
A part may name its ``language`` (``{type: folder, path: DIR, language: es}``): its
supervisions get that language and ``languages.json`` maps each of its recordings to it
(unlabeled recordings have no supervision to carry it); the ``cuts`` stage passes it on.
Any other ``type`` is a corpus-specific preparation in ``local/<type>.py`` (LibriSpeech, WSJ,
TIMIT, ...), found and called through :mod:`w2v.data.corpora`; its supervisions may also
carry ``custom["subsets"]``, the corpus-defined labeled subsets they belong to.

Split names: ``train`` (labeled training data) or any name starting with ``dev`` or
``test`` (evaluation sets such as ``dev``, ``test``, ``test_other``). An empty split cell
means ``train``.

Speakers: when no speaker is given, the speaker is the id's prefix before its first ``-``
or ``_`` (``1089-134686-0000`` -> ``1089``, LibriSpeech style); an id with neither is its
own speaker.

Outputs ``recordings.jsonl.gz`` and ``supervisions.jsonl.gz``: one supervision per labeled
utterance with the raw ``text``, ``speaker`` and ``custom={"split": ...}``; unlabeled
recordings have none.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import soundfile as sf
from lhotse import AudioSource, Recording, RecordingSet, SupervisionSegment, SupervisionSet
from tqdm import tqdm

from lhotse.utils import fastcopy

from w2v.data.corpora import CorpusError
from w2v.io import atomic_path, write_json

__all__ = [
    "AUDIO_EXTENSIONS",
    "CorpusError",
    "prepare",
    "read_transcripts",
    "default_speaker",
    "check_split",
    "is_eval_split",
    "utf8_lines",
]

log = logging.getLogger(__name__)

AUDIO_EXTENSIONS = (".flac", ".wav", ".mp3", ".ogg", ".opus")
TRANSCRIPTS = "transcripts.tsv"
LANGUAGES = "languages.json"  # recording id -> language, for the corpus parts that name one
_COLUMNS = ("id", "text", "speaker", "split")
_SHOW = 5  # how many offending ids an error message names




def _few(items) -> str:
    items = list(items)
    more = f" ... ({len(items)} in all)" if len(items) > _SHOW else ""
    return ", ".join(str(i) for i in items[:_SHOW]) + more


def check_split(name: str, where: str) -> str:
    """Validate a split name (``train``, ``dev*``, ``test*``); ``where`` goes in the error."""
    name = name.strip() or "train"
    if name == "train" or is_eval_split(name):
        return name
    raise CorpusError(f"{where}: unknown split {name!r}; use 'train' or a name starting with 'dev' or 'test'")


def is_eval_split(name: str) -> bool:
    return name.startswith("dev") or name.startswith("test")


def default_speaker(utt_id: str) -> str:
    """Speaker of an utterance when none is given: the id's prefix before ``-`` or ``_``."""
    cut = min((i for i in (utt_id.find("-"), utt_id.find("_")) if i > 0), default=len(utt_id))
    return utt_id[:cut]


@dataclass(frozen=True)
class Transcript:
    id: str
    text: str
    speaker: str
    split: str
    line: int


def utf8_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line without its newline) of a UTF-8 file.

    Raises:
        CorpusError: naming the file and line of the first byte that is not UTF-8.
    """
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8-sig" if n == 1 else "utf-8")
            except UnicodeDecodeError as e:
                raise CorpusError(f"{path}:{n}: not valid UTF-8 ({e.reason} at byte {e.start}); "
                                  "convert the file, e.g. with iconv -t UTF-8") from None
            yield n, line.rstrip("\r\n")


def read_transcripts(path: Path) -> list[Transcript]:
    """Parse a ``transcripts.tsv`` (see the module docstring for the format)."""
    path = Path(path)
    rows: list[Transcript] = []
    columns: tuple[str, ...] | None = None
    for n, line in utf8_lines(path):
        if not line.strip():
            continue
        fields = line.split("\t")
        if columns is None:  # first non-blank line: a header iff it names known columns
            names = tuple(f.strip().lower() for f in fields)
            if {"id", "text"} <= set(names) and set(names) <= set(_COLUMNS):
                if len(set(names)) != len(names):
                    raise CorpusError(f"{path}:{n}: repeated column in header {names}")
                columns = names
                continue
            columns = ("id", "text", "speaker")
        if len(fields) > len(columns):
            raise CorpusError(f"{path}:{n}: expected at most {len(columns)} tab-separated columns "
                              f"({', '.join(columns)}), got {len(fields)}")
        row = dict(zip(columns, (f.strip() for f in fields)))
        utt = row.get("id", "")
        if not utt:
            raise CorpusError(f"{path}:{n}: empty id")
        rows.append(Transcript(
            id=utt,
            text=row.get("text", ""),
            speaker=row.get("speaker") or default_speaker(utt),
            split=check_split(row.get("split", ""), f"{path}:{n}"),
            line=n,
        ))
    seen: dict[str, int] = {}
    dups = []
    for r in rows:
        if r.id in seen:
            dups.append(f"{r.id} (lines {seen[r.id]} and {r.line})")
        seen.setdefault(r.id, r.line)
    if dups:
        raise CorpusError(f"{path}: duplicate utterance ids: {_few(dups)}")
    return rows


def _info(path: Path) -> tuple[Path, sf._SoundFileInfo | None, str]:
    """Header of an audio file, checked by reading its last frame: a truncated FLAC's header
    still claims the full length, and the manifest would promise audio that is not there."""
    try:
        info = sf.info(str(path))
        if info.frames > 0:
            with sf.SoundFile(str(path)) as f:
                f.seek(info.frames - 1)
                if len(f.read(1)) != 1:
                    raise RuntimeError("cannot read the last frame")
        return path, info, ""
    except Exception as e:  # libsndfile raises RuntimeError / LibsndfileError
        return path, None, f"truncated or corrupt: {e}" if "info" in locals() else str(e)


def _recordings(paths: dict[str, Path], num_threads: int, desc: str) -> list[Recording]:
    """Read audio headers with soundfile (threads) and build lhotse recordings."""
    recs, bad, empty = [], [], []
    items = sorted(paths.items())
    with ThreadPoolExecutor(num_threads) as ex:
        it = ex.map(_info, (p for _, p in items))
        for (rid, _), (path, info, err) in tqdm(zip(items, it), total=len(items), desc=desc,
                                                 unit="file", disable=len(items) < 1000):
            if info is None:
                bad.append(f"{path} ({err})")
            elif info.frames <= 0:
                empty.append(str(path))
            else:
                recs.append(Recording(
                    id=rid,
                    sources=[AudioSource(type="file", channels=list(range(info.channels)),
                                         source=str(path.resolve()))],
                    sampling_rate=info.samplerate,
                    num_samples=info.frames,
                    duration=info.frames / info.samplerate,
                ))
    if bad:
        raise CorpusError(f"cannot read {len(bad)} audio file(s): {_few(bad)}")
    if empty:
        log.warning("skipping %d empty audio file(s): %s", len(empty), _few(empty))
    return recs


def _channel(rec: Recording) -> int | list[int]:
    return rec.channel_ids[0] if rec.num_channels == 1 else list(rec.channel_ids)


def _prepare_folder(corpus: dict, key: str, num_threads: int):
    root = _existing_dir(corpus, key)
    tsv = root / TRANSCRIPTS
    if not tsv.is_file():
        raise CorpusError(f"{key}: {tsv} not found; a folder corpus needs a transcripts.tsv "
                          "(it may be empty when all audio is unlabeled)")
    audio: dict[str, Path] = {}
    dups: dict[str, list[Path]] = {}
    for p in sorted(root.rglob("*")):
        # dot files are skipped: macOS leaves unreadable "._x.wav" shadows on shared drives
        if p.suffix.lower() in AUDIO_EXTENSIONS and not p.name.startswith(".") and p.is_file():
            if p.stem in audio:
                dups.setdefault(p.stem, [audio[p.stem]]).append(p)
            audio.setdefault(p.stem, p)
    if dups:
        raise CorpusError(f"{root}: audio file names must be unique ids; duplicates: "
                          + _few(f"{k} ({', '.join(map(str, v))})" for k, v in dups.items()))
    if not audio:
        raise CorpusError(f"{key}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) under {root}")
    rows = read_transcripts(tsv)
    missing = [r.id for r in rows if r.id not in audio]
    if missing:
        raise CorpusError(f"{tsv}: {len(missing)} transcript id(s) have no audio file under {root}: "
                          f"{_few(missing)}")
    recs = _recordings(audio, num_threads, desc=f"reading {root.name}")
    by_id = {r.id: r for r in recs}
    sups = [
        SupervisionSegment(id=t.id, recording_id=t.id, start=0.0, duration=by_id[t.id].duration,
                           channel=_channel(by_id[t.id]), text=t.text, speaker=t.speaker,
                           custom={"split": t.split})
        for t in rows if t.id in by_id  # an empty audio file was skipped with a warning
    ]
    return recs, sups


def _prepare_kaldi(corpus: dict, key: str, num_threads: int):
    from lhotse.kaldi import load_kaldi_data_dir

    root = _existing_dir(corpus, key)
    split = check_split(str(corpus.get("split", "train")), f"{key}.split")
    for name in ("wav.scp", "text", "utt2spk", "segments"):
        if (root / name).is_file():  # bad bytes and repeated keys are errors here; lhotse would
            seen: dict[str, int] = {}  # fail obscurely or silently keep the last line
            dups = []
            for n, line in utf8_lines(root / name):
                key = line.split(maxsplit=1)[0] if line.strip() else ""
                if key in seen:
                    dups.append(f"{key} (lines {seen[key]} and {n})")
                elif key:
                    seen[key] = n
            if dups:
                raise CorpusError(f"{root / name}: duplicate ids: {_few(dups)}")
    if not (root / "wav.scp").is_file():
        raise CorpusError(f"{key}: {root / 'wav.scp'} not found (a Kaldi data dir needs wav.scp)")
    if (root / "segments").is_file() and not (root / "text").is_file():
        raise CorpusError(f"{root}: has segments but no text file")
    sr = int(corpus.get("sampling_rate", 16000))
    # Audio files are measured here with soundfile (threads); lhotse then reads a copy of the
    # dir whose wav.scp has absolute paths and whose reco2dur holds those durations, so it
    # does not open every file again. Kaldi paths are relative to the recipe dir (the cwd);
    # a path found only relative to the data dir is accepted too.
    scp: dict[str, str] = {}
    for n, line in utf8_lines(root / "wav.scp"):
        if line.strip():
            k, _, v = line.strip().partition(" ")
            if not v.strip():
                raise CorpusError(f"{root / 'wav.scp'}:{n}: no path or command for {k!r}")
            scp[k] = v.strip()
    files = {}
    for k, v in scp.items():
        if not v.endswith("|"):
            p = Path(v)
            if not p.is_absolute() and not p.exists() and (root / p).exists():
                p = root / p
            files[k] = p.resolve()
    measured = {r.id: r for r in _recordings(files, num_threads, desc=f"reading {root.name}")}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name in ("text", "utt2spk", "segments", "spk2gender", "utt2lang", "reco2dur"):
            if (root / name).is_file():
                shutil.copyfile(root / name, tmp / name)
        (tmp / "wav.scp").write_text("".join(f"{k} {files.get(k, v)}\n" for k, v in scp.items()
                                             if k in measured or k not in files), encoding="utf-8")
        if not (tmp / "reco2dur").is_file() and len(measured) == len(scp):
            (tmp / "reco2dur").write_text("".join(f"{k} {r.duration}\n" for k, r in measured.items()))
        recs, sups, _ = load_kaldi_data_dir(tmp, sampling_rate=sr, num_jobs=num_threads)
    recs = [measured.get(r.id, r) for r in recs]
    by_id = {r.id: r for r in recs}
    if sups is None and (root / "text").is_file():
        texts = {}
        for _, line in utf8_lines(root / "text"):
            if line.strip():
                k, _, v = line.strip().partition(" ")
                texts[k] = v.strip()
        sups = [SupervisionSegment(id=k, recording_id=k, start=0.0, duration=by_id[k].duration,
                                   channel=0, text=v, speaker=default_speaker(k))
                for k, v in texts.items() if k in by_id]
    out = []
    for s in sups or []:
        if s.text is None or s.recording_id not in by_id:
            continue
        rec = by_id[s.recording_id]
        end = min(s.end, rec.duration)
        out.append(SupervisionSegment(
            id=s.id, recording_id=s.recording_id, start=s.start, duration=end - s.start,
            channel=_channel(rec) if s.start == 0 and end == rec.duration else 0,
            text=s.text, speaker=s.speaker or default_speaker(s.id), gender=s.gender,
            language=s.language, custom={"split": split}))
    return list(recs), out


def _existing_dir(corpus: dict, key: str) -> Path:
    from w2v.data.corpora import corpus_root

    return corpus_root(corpus, key)


def check_builtin(corpus: dict, key: str) -> None:
    """The cheap part of a ``folder``/``kaldi`` check: the directory and its index files exist."""
    from w2v.data.corpora import expect

    root = _existing_dir(corpus, key)
    if corpus["type"] == "folder":
        expect(root, key, {TRANSCRIPTS: "id<TAB>text[<TAB>speaker] lines, may be empty"}, "a folder corpus")
    else:
        expect(root, key, {"wav.scp": "recording id -> audio path or command"}, "a Kaldi data directory")


_PREPARERS = {"folder": _prepare_folder, "kaldi": _prepare_kaldi}


def _preparer(kind, key: str):
    if kind in _PREPARERS:
        return _PREPARERS[kind]
    from w2v.data.corpora import corpus_types, load

    if kind not in corpus_types():
        raise CorpusError(f"{key}.type: {kind!r} is not one of {', '.join(corpus_types())}")
    return load(kind).prepare


def prepare(corpus: dict | list[dict], out_dir: Path, num_threads: int | None = None) -> dict[str, Path]:
    """Ingest a corpus (see the module docstring) into lhotse manifests.

    Args:
        corpus: the recipe's ``corpus`` config: a dict with ``type`` (``folder``, ``kaldi`` or
            a ``local/<type>.py`` corpus) and ``path``, or a list of such dicts whose contents are combined.
        out_dir: where ``recordings.jsonl.gz`` and ``supervisions.jsonl.gz`` are written.
        num_threads: threads reading audio headers (default: CPU count, at most 16).

    Returns:
        ``{"recordings": path, "supervisions": path, "languages": path}``.

    Raises:
        CorpusError: the corpus is missing, malformed, or has duplicate/missing ids.
    """
    num_threads = num_threads or min(16, os.cpu_count() or 1)
    parts = corpus if isinstance(corpus, list) else [corpus]
    if not parts:
        raise CorpusError("corpus: empty list")
    recs: list[Recording] = []
    sups: list[SupervisionSegment] = []
    rec_langs: dict[str, str] = {}
    for i, part in enumerate(parts):
        key = f"corpus[{i}]" if isinstance(corpus, list) else "corpus"
        if not isinstance(part, dict):
            raise CorpusError(f"{key}: expected a mapping with 'type' and 'path', got {part!r}")
        kind = part.get("type")
        if kind == "mms_bible":  # chapters aligned to verses with a model; work files beside the manifests
            from w2v.data.mms_bible import prepare_mms_bible

            r, s = prepare_mms_bible(part, key, num_threads, Path(out_dir).parent / "segment")
        else:
            r, s = _preparer(kind, key)(part, key, num_threads)
        if part.get("language"):
            s = [fastcopy(x, language=part["language"]) for x in s]
            rec_langs.update((x.id, part["language"]) for x in r)
        recs += r
        sups += s
    for what, ids in (("recording", [r.id for r in recs]), ("utterance", [s.id for s in sups])):
        seen: set[str] = set()
        dups = sorted({x for x in ids if x in seen or seen.add(x)})
        if dups:
            raise CorpusError(f"duplicate {what} ids across the corpus parts: {_few(dups)}")

    out_dir = Path(out_dir)
    paths = {"recordings": out_dir / "recordings.jsonl.gz", "supervisions": out_dir / "supervisions.jsonl.gz",
             "languages": out_dir / LANGUAGES}
    with atomic_path(paths["recordings"]) as tmp:
        RecordingSet.from_recordings(recs).to_file(tmp)
    with atomic_path(paths["supervisions"]) as tmp:
        SupervisionSet.from_segments(sups).to_file(tmp)
    write_json(paths["languages"], {"recordings": rec_langs})  # always, so never stale

    labeled = {s.recording_id for s in sups}
    hours = sum(r.duration for r in recs) / 3600
    per_split: dict[str, list[float]] = {}
    for s in sups:
        per_split.setdefault(s.custom["split"], []).append(s.duration)
    unl = [r for r in recs if r.id not in labeled]
    log.info("prepared %d recordings (%.2f h): %d labeled utterances, %d unlabeled recordings (%.2f h)",
             len(recs), hours, len(sups), len(unl), sum(r.duration for r in unl) / 3600)
    for name, durs in sorted(per_split.items()):
        log.info("  split %-10s %6d utterances %7.2f h", name, len(durs), sum(durs) / 3600)
    return paths
