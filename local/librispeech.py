"""LibriSpeech with Libri-light's limited-resource splits and unlabeled audio (wav2vec 2.0 §4.1).

Corpus type ``librispeech`` (see :mod:`w2v.data.corpora`)::

    corpus:
      type: librispeech
      path: /data/LibriSpeech                      # dev-clean/ dev-other/ test-clean/ test-other/ train-*/
      labeled: [train-clean-100, train-clean-360, train-other-500]   # default: those present
      finetuning: /data/librispeech_finetuning     # optional: Libri-light's 10m / 1h / 10h
      librilight: /data/librilight                 # optional: LV-60k unlabeled (small/ medium/ large/)
      ten_minute_fold: 0                           # which 10-minute fold of 1h/ is "10m"

Reads the audio and ``*.trans.txt`` with lhotse's ``prepare_librispeech`` (and
``prepare_librilight`` for the unlabeled audio, whose VAD segments are dropped: the cuts stage
windows long recordings itself). Splits: ``dev_clean``, ``dev_other``, ``test_clean``,
``test_other``; every labeled utterance is ``train``. Subsets the corpus defines (recipe
``cuts.labeled_subsets`` names): ``10m`` (one fold of ``1h/``), ``1h`` (its six folds),
``10h`` (``1h`` + ``9h``), ``100h`` (train-clean-100) and ``960h`` (all three training parts,
when all are labeled). The fine-tuning utterances are LibriSpeech training utterances: when
their part is also labeled, the two are one supervision with both tags.
"""

from __future__ import annotations

from pathlib import Path

from lhotse import Recording, SupervisionSegment

from w2v.data.corpora import check_options, corpus_root, expect, tag

EVAL_PARTS = ("dev-clean", "dev-other", "test-clean", "test-other")
TRAIN_PARTS = ("train-clean-100", "train-clean-360", "train-other-500")
FOLDS = 6
OPTIONS = ("labeled", "finetuning", "librilight", "ten_minute_fold")


def _labeled_parts(corpus: dict, root: Path) -> list[str]:
    if "labeled" in corpus:
        return list(corpus["labeled"])
    return [p for p in TRAIN_PARTS if (root / p).is_dir()]


def _finetuning_parts(fold10m: int) -> dict[str, list[str]]:
    """lhotse dataset part (relative dir) -> the subsets its utterances belong to."""
    parts = {}
    for k in range(FOLDS):
        for cond in ("clean", "other"):
            parts[f"1h/{k}/{cond}"] = ["1h", "10h"] + (["10m"] if k == fold10m else [])
    for cond in ("clean", "other"):
        parts[f"9h/{cond}"] = ["10h"]
    return parts


def check(corpus: dict, key: str) -> None:
    """The LibriSpeech parts, the fine-tuning folds and the Libri-light subsets exist."""
    check_options(corpus, key, OPTIONS)
    root = corpus_root(corpus, key)
    labeled = _labeled_parts(corpus, root)
    expected = {f"{p}/*/*/*.trans.txt": "LibriSpeech evaluation set" for p in EVAL_PARTS}
    expected |= {f"{p}/*/*/*.trans.txt": "labeled training part (corpus.labeled)" for p in labeled}
    if not labeled and not corpus.get("finetuning"):
        expected |= {f"{p}/*/*/*.trans.txt": "training part" for p in TRAIN_PARTS}
    expect(root, key, expected, "LibriSpeech (openslr.org/12, extracted)")
    if corpus.get("finetuning"):
        ft = corpus_root({"path": corpus["finetuning"]}, f"{key}.finetuning")
        expect(ft, f"{key}.finetuning", {f"{p}/*/*/*.trans.txt": "Libri-light fine-tuning fold"
                                         for p in _finetuning_parts(int(corpus.get("ten_minute_fold", 0)))},
               "Libri-light's librispeech_finetuning (librispeech_finetuning.tgz, extracted)")
    if corpus.get("librilight"):
        ll = corpus_root({"path": corpus["librilight"]}, f"{key}.librilight")
        found = [s for s in ("small", "medium", "large") if (ll / s).is_dir()]
        if not found:
            expect(ll, f"{key}.librilight", {"small/*/*/*.flac": "Libri-light unlabeled subset (or medium/, large/)"},
                   "Libri-light (small.tar / medium.tar / large.tar, extracted)")


def _lhotse_parts(root: Path, parts: list[str], num_threads: int) -> dict[str, dict]:
    from lhotse.recipes import prepare_librispeech

    return prepare_librispeech(root, dataset_parts=parts, output_dir=None, num_jobs=num_threads)


def prepare(corpus: dict, key: str, num_threads: int) -> tuple[list[Recording], list[SupervisionSegment]]:
    """LibriSpeech (+ Libri-light) -> recordings and supervisions (see the module docstring)."""
    check(corpus, key)
    root = Path(corpus["path"]).expanduser()
    labeled = _labeled_parts(corpus, root)
    full = set(TRAIN_PARTS) <= set(labeled)
    recs: dict[str, Recording] = {}
    sups: dict[str, SupervisionSegment] = {}
    for part, m in _lhotse_parts(root, [*EVAL_PARTS, *labeled], num_threads).items():
        split = part.replace("-", "_") if part in EVAL_PARTS else "train"
        subsets = (["100h"] if part == "train-clean-100" else []) + (["960h"] if full and split == "train" else [])
        recs |= {r.id: r for r in m["recordings"]}
        sups |= {s.id: tag(s, split, subsets) for s in m["supervisions"]}
    if corpus.get("finetuning"):
        ft_parts = _finetuning_parts(int(corpus.get("ten_minute_fold", 0)))
        ft = _lhotse_parts(Path(corpus["finetuning"]).expanduser(), list(ft_parts), num_threads)
        for part, m in ft.items():
            for s in m["supervisions"]:
                if s.id in sups:  # the same LibriSpeech utterance, already labeled from its part
                    sups[s.id] = tag(sups[s.id], "train", ft_parts[part])
                else:
                    sups[s.id] = tag(s, "train", ft_parts[part])
            recs |= {r.id: r for r in m["recordings"] if r.id not in recs}
    if corpus.get("librilight"):
        # per subset: lhotse's prepare_librilight asserts on any of small/medium/large missing
        from lhotse.recipes.librilight import LIBRILIGHT, _prepare_subset

        ll = Path(corpus["librilight"]).expanduser()
        for subset in (s for s in LIBRILIGHT if (ll / s).is_dir()):
            r, _ = _prepare_subset(subset, ll, num_threads)  # unlabeled: the VAD segments are not used
            recs |= {x.id: x for x in r}
    return list(recs.values()), list(sups.values())
