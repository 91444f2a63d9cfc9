"""The ``cuts`` stage: manifests -> 16 kHz mono lhotse CutSets for every set a recipe uses.

Sets written (``<name>.jsonl.gz``):

* ``pretrain``: all audio outside the evaluation sets, i.e. unlabeled recordings plus the
  labeled training utterances, without transcripts (wav2vec 2.0 §4.1: the unlabeled data).
  Recordings longer than ``max_duration`` are split into equal windows no longer than it.
* ``train``: every labeled training utterance, transcript normalised by
  :func:`w2v.data.text.normalize_text`.
* ``train_<name>`` for each labeled subset (``10m``, ``1h`` ...): the smallest prefix of one
  seeded, speaker-balanced ordering of ``train`` that reaches the target duration, so the
  subsets are nested like Libri-light's 10 min ⊂ 1 h ⊂ 10 h (wav2vec 2.0 §4.1). When the
  corpus defines the subset itself (supervisions listing ``name`` in ``custom["subsets"]``:
  Libri-light's official splits, BABEL's limited language pack), exactly those utterances;
  ``all`` is every labeled training utterance.
* one file per evaluation set (``dev``, ``test``, ``test_other`` ...). When the manifests
  have no ``dev*`` (``test*``) split and ``dev_speakers`` (``test_speakers``) > 0, that many
  speakers are carved out of the labeled training data (seeded, speaker-disjoint).
* ``cuts_summary.json``: per set utterances, speakers, hours; what was filtered and why.

Languages (multilingual recipes): labeled cuts keep their supervision's ``language``;
pre-training cuts, which have no supervision, carry it as ``cut.custom["language"]`` (from the
supervision, or from ``languages.json`` for unlabeled recordings); :func:`cut_language` reads
either. The summary then also gives hours per language.

Audio is never rewritten: cuts carry lazy lhotse transforms. Resampling is
``cut.resample(16000)``; a multi-channel recording becomes a ``MixedCut`` of its channels,
each scaled by 1/C, so ``cut.load_audio()`` returns their mean with shape ``(1, samples)``.
Consumers must therefore use ``cut.load_audio()``/``cut.supervisions``, not ``cut.recording``.
(lhotse 1.33 resamples with torchaudio when present, else ``scipy.signal.resample_poly``.)
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import random
from collections import Counter, defaultdict
from pathlib import Path

from lhotse import CutSet, RecordingSet, SupervisionSet
from lhotse.cut import Cut, MixedCut, MixTrack, MonoCut, MultiCut
from lhotse.utils import fastcopy
from tqdm import tqdm

from w2v.data.ingest import LANGUAGES, CorpusError, is_eval_split
from w2v.io import atomic_path
from w2v.data.text import dropped_characters, normalize_text

__all__ = ["SAMPLING_RATE", "cut_language", "make_cuts", "speaker_balanced_order", "to_mono_16k"]

log = logging.getLogger(__name__)

SAMPLING_RATE = 16000
_SHOW = 5


def _few(ids) -> str:
    ids = list(ids)
    return ", ".join(ids[:_SHOW]) + (f" ... ({len(ids)} in all)" if len(ids) > _SHOW else "")


def to_mono_16k(cut: Cut, sampling_rate: int = SAMPLING_RATE) -> Cut:
    """Down-mix a multi-channel cut (mean of channels) and resample it, both lazily."""
    if isinstance(cut, MultiCut):
        tracks = cut.to_mono(mono_downmix=False)  # one MonoCut per channel
        tracks = [t.perturb_volume(1.0 / len(tracks), affix_id=False) for t in tracks]
        # The supervision is kept on one track only, else MixedCut.supervisions repeats it.
        tracks = tracks[:1] + [t.drop_supervisions() for t in tracks[1:]]
        cut = MixedCut(id=cut.id, tracks=[MixTrack(cut=t) for t in tracks])
    if cut.sampling_rate != sampling_rate:
        cut = cut.resample(sampling_rate)
    return cut


def _data_cut(cut_id, rec, start, duration, supervisions, language=None):
    # Pre-training cuts have no supervision to say their language: the cut carries it.
    custom = {"language": language} if language and not supervisions else None
    if rec.num_channels == 1:
        return MonoCut(id=cut_id, start=start, duration=duration, channel=rec.channel_ids[0],
                       recording=rec, supervisions=supervisions, custom=custom)
    return MultiCut(id=cut_id, start=start, duration=duration, channel=list(rec.channel_ids),
                    recording=rec, supervisions=supervisions, custom=custom)


def _windows(cut_id, rec, start, duration, max_duration):
    """Equal windows of at most ``max_duration`` covering [start, start + duration)."""
    n = max(1, math.ceil(duration / max_duration - 1e-9))
    w = duration / n
    for i in range(n):
        yield (cut_id if n == 1 else f"{cut_id}-w{i:03d}"), start + i * w, w


def speaker_balanced_order(cuts: list[Cut], seed: int = 0) -> list[Cut]:
    """A seeded ordering that takes one utterance from each speaker in turn.

    Speakers are shuffled, each speaker's utterances are shuffled, then the lists are
    interleaved round-robin, so every prefix spreads its duration over as many speakers
    as possible.
    """
    rng = random.Random(seed)
    by_spk: dict[str, list[Cut]] = defaultdict(list)
    for c in sorted(cuts, key=lambda c: c.id):
        by_spk[c.supervisions[0].speaker].append(c)
    speakers = sorted(by_spk)
    rng.shuffle(speakers)
    for s in speakers:
        rng.shuffle(by_spk[s])
    order = []
    for i in range(max((len(v) for v in by_spk.values()), default=0)):
        order += [by_spk[s][i] for s in speakers if i < len(by_spk[s])]
    return order


def _carve(sups, split_name, n_speakers, rng, taken):
    speakers = sorted({s.speaker for s in sups if s.custom["split"] == "train"} - taken)
    if n_speakers >= len(speakers):
        raise CorpusError(f"cannot carve {n_speakers} {split_name} speakers: the labeled training "
                          f"data has only {len(speakers)} speakers left (at least one must stay in train)")
    rng.shuffle(speakers)
    chosen = set(speakers[:n_speakers])
    log.info("carved %s set from %d training speakers: %s", split_name, n_speakers, _few(sorted(chosen)))
    return chosen


def make_cuts(
    manifest_dir: Path,
    out_dir: Path,
    labeled_subsets: dict[str, float] | None = None,
    dev_speakers: int = 0,
    test_speakers: int = 0,
    min_duration: float = 0.5,
    max_duration: float = 30.0,
    seed: int = 0,
    normalize: str = "upper_letters",
) -> dict[str, Path]:
    """Build the recipe's CutSets from ``recordings``/``supervisions`` manifests.

    Args:
        manifest_dir: holds ``recordings.jsonl.gz`` and ``supervisions.jsonl.gz`` (``prepare``).
        out_dir: where the CutSets and ``cuts_summary.json`` are written.
        labeled_subsets: subset name -> seconds, e.g. ``{"10m": 600, "1h": 3600}``; ``None``
            for a subset that only the corpus defines (``custom["subsets"]``).
        dev_speakers: speakers to carve into ``dev`` when the manifests have no dev split.
        test_speakers: the same for ``test``.
        min_duration: shorter cuts are dropped (counted, ids logged).
        max_duration: longer labeled cuts are dropped; longer audio for pre-training is split
            into windows no longer than this.
        seed: seeds the carving and the subset ordering.
        normalize: text normalisation scheme (:data:`w2v.data.text.SCHEMES`).

    Returns:
        set name (``pretrain``, ``train``, ``train_10m``, ``dev``, ...) -> path, plus ``summary``.

    Raises:
        CorpusError: a subset larger than the labeled data, too few speakers to carve.
    """
    manifest_dir, out_dir = Path(manifest_dir), Path(out_dir)
    labeled_subsets = dict(labeled_subsets or {})
    recs = {r.id: r for r in RecordingSet.from_file(manifest_dir / "recordings.jsonl.gz")}
    lang_file = manifest_dir / LANGUAGES
    rec_langs: dict[str, str] = json.loads(lang_file.read_text())["recordings"] if lang_file.is_file() else {}
    sups = [fastcopy(s, custom={**(s.custom or {}), "split": (s.custom or {}).get("split", "train")},
                     language=s.language or rec_langs.get(s.recording_id))
            # an all-unlabeled corpus has an empty supervisions file, which lhotse reads as None
            for s in SupervisionSet.from_file(manifest_dir / "supervisions.jsonl.gz") or []]
    if any(r.sampling_rate != SAMPLING_RATE for r in recs.values()) and not (
            importlib.util.find_spec("torchaudio") or importlib.util.find_spec("scipy")):
        raise RuntimeError("some recordings need resampling to 16 kHz and lhotse 1.33 needs "
                           "torchaudio or scipy for that: pip install scipy")

    # Carve speaker-disjoint evaluation sets when the corpus has none.
    rng = random.Random(seed)
    splits = {s.custom["split"] for s in sups}
    carved: dict[str, set[str]] = {}
    for name, n in (("dev", dev_speakers), ("test", test_speakers)):
        if n > 0 and not any(x.startswith(name) for x in splits):
            carved[name] = _carve(sups, name, n, rng, set().union(*carved.values()))
    if carved:
        spk2split = {spk: name for name, spks in carved.items() for spk in spks}
        sups = [fastcopy(s, custom={**s.custom, "split": spk2split[s.speaker]})
                if s.custom["split"] == "train" and s.speaker in spk2split else s for s in sups]

    # One labeled cut per supervision, transcript normalised.
    filtered: dict[str, list[str]] = {"too_short": [], "too_long": [], "empty_text": []}
    dropped: Counter[str] = Counter()
    lost_ids: list[str] = []  # utterances that lost characters in normalisation
    by_set: dict[str, list[Cut]] = defaultdict(list)
    pretrain: list[Cut] = []
    supervised_recs: set[str] = set()
    for s in sups:
        rec = recs.get(s.recording_id)
        if rec is None:
            raise CorpusError(f"{manifest_dir / 'supervisions.jsonl.gz'}: supervision {s.id} refers to "
                              f"recording {s.recording_id}, which is not in recordings.jsonl.gz")
        supervised_recs.add(rec.id)
        split = s.custom["split"]
        if split == "train":  # its audio is pre-training data whatever its transcript
            pretrain += [_data_cut(i, rec, st, d, [], s.language) for i, st, d in
                         _windows(s.id, rec, s.start, s.duration, max_duration)]
        text = normalize_text(s.text or "", normalize)
        lost = dropped_characters(s.text or "", normalize)
        if lost:
            dropped.update(lost)
            lost_ids.append(s.id)
        if s.duration < min_duration:
            filtered["too_short"].append(s.id)
        elif s.duration > max_duration:
            filtered["too_long"].append(s.id)
        elif not text:
            filtered["empty_text"].append(s.id)
        else:
            sup = fastcopy(s, start=0.0, text=text)
            by_set[split].append(_data_cut(s.id, rec, s.start, s.duration, [sup]))
    for rec in recs.values():
        if rec.id not in supervised_recs:  # unlabeled
            pretrain += [_data_cut(i, rec, st, d, [], rec_langs.get(rec.id)) for i, st, d in
                         _windows(rec.id, rec, 0.0, rec.duration, max_duration)]
    short_pre = [c.id for c in pretrain if c.duration < min_duration]
    pretrain = [c for c in pretrain if c.duration >= min_duration]
    for why, ids in filtered.items():
        if ids:
            log.warning("dropped %d labeled cuts (%s): %s", len(ids), why.replace("_", " "), _few(ids))
    if short_pre:
        log.warning("dropped %d pre-training cuts shorter than %.2f s: %s",
                    len(short_pre), min_duration, _few(short_pre))
    if dropped:
        log.warning("normalisation dropped %d characters not representable in %s from %d utterance(s): %s; "
                    "utterances: %s", sum(dropped.values()), normalize, len(lost_ids),
                    " ".join(f"{c!r}x{n}" for c, n in dropped.most_common(10)), _few(lost_ids))

    sets: dict[str, list[Cut]] = {"pretrain": pretrain, "train": by_set.pop("train", [])}
    order = speaker_balanced_order(sets["train"], seed)
    total = sum(c.duration for c in order)
    defined = {name for c in sets["train"] for name in (c.supervisions[0].custom or {}).get("subsets", ())}
    for name, target in sorted(labeled_subsets.items(), key=lambda kv: (kv[1] is None, kv[1] or 0, kv[0])):
        if name in defined:
            sets[f"train_{name}"] = [c for c in order if name in c.supervisions[0].custom.get("subsets", ())]
            continue
        if name == "all":
            sets["train_all"] = order
            continue
        if target is None:
            raise CorpusError(f"labeled subset {name!r} is neither a duration (10m, 1h) nor defined by the corpus "
                              f"(subsets it defines: {', '.join(sorted(defined)) or 'none'})")
        if target > total + 1e-6:
            raise CorpusError(f"labeled subset {name!r} needs {target / 3600:.3f} h ({target:.0f} s) but "
                              f"only {total / 3600:.3f} h ({total:.0f} s) of labeled training audio "
                              "remain after filtering")
        acc, k = 0.0, 0
        while acc < target - 1e-6:
            acc += order[k].duration
            k += 1
        sets[f"train_{name}"] = order[:k]
    for name in sorted(by_set):
        if not is_eval_split(name):
            raise CorpusError(f"unexpected split {name!r} in {manifest_dir / 'supervisions.jsonl.gz'}")
        sets[name] = by_set[name]

    paths: dict[str, Path] = {}
    summary: dict[str, dict] = {}
    for name, cuts in sets.items():
        paths[name] = out_dir / f"{name}.jsonl.gz"
        with atomic_path(paths[name]) as tmp:
            CutSet.from_cuts(to_mono_16k(c) for c in tqdm(cuts, desc=name, unit="cut", mininterval=2,
                                                          disable=len(cuts) < 1000)).to_file(tmp)
        speakers = {c.supervisions[0].speaker for c in cuts if c.supervisions}
        summary[name] = {"utterances": len(cuts), "speakers": len(speakers),
                         "hours": round(sum(c.duration for c in cuts) / 3600, 4)}
        by_lang: Counter[str] = Counter()
        for c in cuts:
            if cut_language(c):
                by_lang[cut_language(c)] += c.duration / 3600
        if by_lang:
            summary[name]["hours_per_language"] = {k: round(v, 4) for k, v in sorted(by_lang.items())}
        log.info("%-12s %7d cuts %5d speakers %8.3f h", name, len(cuts), len(speakers), summary[name]["hours"])
    if "pretrain" in summary:
        # pre-training cuts carry no transcript; count the speakers of their labeled part
        summary["pretrain"]["speakers"] = len({s.speaker for s in sups if s.custom["split"] == "train"})
    paths["summary"] = out_dir / "cuts_summary.json"
    with atomic_path(paths["summary"]) as tmp:
        tmp.write_text(json.dumps({
            "sets": summary,
            "filtered": {k: len(v) for k, v in filtered.items()} | {"pretrain_too_short": len(short_pre)},
            "dropped_characters": dict(dropped.most_common()),
            "utterances_with_dropped_characters": len(lost_ids),
            "params": {"labeled_subsets": labeled_subsets, "dev_speakers": dev_speakers,
                       "test_speakers": test_speakers, "min_duration": min_duration,
                       "max_duration": max_duration, "seed": seed, "normalize": normalize},
        }, indent=2, ensure_ascii=False) + "\n")
    return paths


def transcript(cut: Cut) -> str:
    """The (normalised) text of a cut: its supervisions' texts joined by spaces."""
    return " ".join(s.text for s in cut.supervisions if s.text).strip()


def cut_language(cut: Cut) -> str | None:
    """The language of a cut: ``cut.custom["language"]`` (pre-training cuts, which have no
    supervision), else its first supervision's ``language``; None when neither is set.
    A down-mixed multi-channel cut (a ``MixedCut``) answers for its first track."""
    if isinstance(cut, MixedCut):
        return cut_language(cut.tracks[0].cut)
    lang = (getattr(cut, "custom", None) or {}).get("language")
    if lang:
        return lang
    return next((s.language for s in cut.supervisions if s.language), None)
