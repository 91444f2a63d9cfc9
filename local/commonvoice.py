"""Mozilla Common Voice, one or several languages (XLSR-53 §4: multilingual pre-training, per-language fine-tuning).

Corpus type ``commonvoice`` (see :mod:`w2v.data.corpora`)::

    corpus:
      type: commonvoice
      path: /data/cv-corpus-17.0-2024-03-15   # <lang>/{train,dev,test}.tsv and <lang>/clips/*.mp3
      languages: [es]                          # a fine-tuning recipe has one; pre-training several
      lexicon: /data/lexicons/es.txt           # optional: WORD phone phone ... -> phone-level texts

Each clip is read by lhotse's Common Voice parser (``lhotse.recipes.commonvoice._parse_utterance``:
MP3 headers through soundfile, no decoding) from a thread pool; ``prepare_commonvoice`` itself
starts a fresh "spawn" process pool per language and split (seconds each, a minute for a
two-language test) and caches under names it never reads back. Splits are Common Voice's own ``train``, ``dev``, ``test``; with several languages the
ids stay unique (clip names are) and each supervision's ``language`` says which one it is.
Speakers are the ``client_id`` hashes, so the sets are speaker-disjoint as Common Voice made them.

With a ``lexicon`` (one word per line followed by its phones, words written as the ``letters``
normalisation writes them), texts become phone sequences for phone error rates as in XLSR;
the sentence is kept in ``custom["words"]`` and utterances with a word missing from the
lexicon are left out (counted in the log).
"""

from __future__ import annotations

import logging
from pathlib import Path

from lhotse import Recording, SupervisionSegment

from w2v.data.corpora import CorpusError, check_options, corpus_root, expect, tag
from w2v.data.ingest import utf8_lines
from w2v.data.text import normalize_text

log = logging.getLogger(__name__)

OPTIONS = ("languages", "lexicon")
SPLITS = ("train", "dev", "test")


def _languages(corpus: dict, key: str) -> list[str]:
    langs = corpus.get("languages")
    if not langs or not isinstance(langs, list):
        raise CorpusError(f"{key}.languages: give the Common Voice language codes to use, e.g. [es, fr]")
    return [str(x) for x in langs]


def check(corpus: dict, key: str) -> None:
    check_options(corpus, key, OPTIONS)
    root = corpus_root(corpus, key)
    expected = {}
    for lang in _languages(corpus, key):
        expected |= {f"{lang}/{s}.tsv": f"{lang} {s} list (client_id, path, sentence, ...)" for s in SPLITS}
        expected[f"{lang}/clips/*.mp3"] = f"{lang} audio"
    expect(root, key, expected, "a Common Voice release (cv-corpus-*/, extracted)")
    if corpus.get("lexicon") and not Path(corpus["lexicon"]).is_file():
        raise CorpusError(f"{key}.lexicon: file {corpus['lexicon']} does not exist")


def read_lexicon(path: Path) -> dict[str, list[str]]:
    """``WORD p1 p2 ...`` lines -> {word: phones}; the first pronunciation of a word wins."""
    lex: dict[str, list[str]] = {}
    for n, line in utf8_lines(path):
        fields = line.split()
        if len(fields) == 1:
            raise CorpusError(f"{path}:{n}: word {fields[0]!r} has no phones")
        if fields:
            lex.setdefault(fields[0], fields[1:])
    return lex


def _to_phones(sups: list[SupervisionSegment], lexicon: dict[str, list[str]]) -> list[SupervisionSegment]:
    from lhotse.utils import fastcopy

    out, oov = [], {}
    for s in sups:
        words = normalize_text(s.text, "letters").split()
        missing = [w for w in words if w not in lexicon]
        if missing:
            oov.update(dict.fromkeys(missing))
            continue
        out.append(fastcopy(s, text=" ".join(p for w in words for p in lexicon[w]),
                            custom={**s.custom, "words": s.text}))
    if oov:
        log.warning("commonvoice: %d of %d utterances left out, words not in the lexicon: %s",
                    len(sups) - len(out), len(sups), ", ".join(list(oov)[:10]))
    return out


def _read_split(lang_dir: Path, lang: str, split: str, num_threads: int):
    import csv
    from concurrent.futures import ThreadPoolExecutor

    from lhotse.recipes.commonvoice import _parse_utterance

    with open(lang_dir / f"{split}.tsv", encoding="utf-8", newline="") as f:
        # QUOTE_NONE as lhotse: Common Voice sentences contain unbalanced quotes
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    for row in rows:
        row.setdefault("variant", "")  # releases before 15.0 have no variant column
    with ThreadPoolExecutor(max(1, num_threads)) as ex:
        results = [x for x in ex.map(lambda row: _parse_utterance(lang_dir, lang, row), rows) if x is not None]
    if len(results) < len(rows):
        log.warning("commonvoice %s %s: %d listed clips are missing from clips/", lang, split, len(rows) - len(results))
    return [r for r, _ in results], [s for _, s in results]


def prepare(corpus: dict, key: str, num_threads: int) -> tuple[list[Recording], list[SupervisionSegment]]:
    """Common Voice -> recordings and supervisions per language (see the module docstring)."""
    check(corpus, key)
    root = Path(corpus["path"]).expanduser()
    recs: list[Recording] = []
    sups: list[SupervisionSegment] = []
    for lang in _languages(corpus, key):
        for split in SPLITS:
            r, s = _read_split(root / lang, lang, split, num_threads)
            recs += r
            sups += [tag(x, split) for x in s]
    if corpus.get("lexicon"):
        sups = _to_phones(sups, read_lexicon(Path(corpus["lexicon"])))
    return recs, sups
