"""Word and character error rates, alignments and score files.

WER = (S + D + I) / N over the whole test set, N the number of reference words (the paper's
metric); CER the same over characters. Edit distance and alignment come from kaldialign.

Conventions:
  * Text is compared as given, split on whitespace; normalisation belongs to data
    preparation, so references and hypotheses must already be in the same form.
  * CER counts characters of the whitespace-normalised text *including* the single space
    between words (as ``jiwer.cer``, and like fairseq's unit error rate where ``|`` is a
    unit), so a missed word boundary is an error.
  * A hypothesis missing for a reference id counts as empty (all deletions); the ids are
    listed in :attr:`ScoreResult.missing`. A hypothesis id with no reference is an error.
  * An empty reference adds nothing to N and its hypothesis words are insertions. Its
    per-utterance rate is ``errors / max(N, 1)``, i.e. 0 when the hypothesis is empty too and
    the number of inserted words otherwise, so no rate is ever infinite; the corpus rate uses
    the same ``max(N, 1)`` guard, which only matters when every reference is empty.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import kaldialign

from w2v.io import write_text

__all__ = [
    "ErrorCounts",
    "ScoreResult",
    "UttScore",
    "read_text_file",
    "result_to_dict",
    "score",
    "write_alignments",
    "write_per_utt",
    "write_score_json",
    "write_text_file",
]

EPS = "*"


def read_text_file(path: str | Path) -> dict[str, str]:
    """Read an ``id<TAB>text`` file (references or hypotheses) into ``{id: text}``.

    The text part may be empty (``id<TAB>`` or a bare ``id``: an empty hypothesis). Blank
    lines are skipped.

    Raises:
        ValueError: naming file and line, for a line with spaces but no tab, or a repeated id.
    """
    path = Path(path)
    texts: dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\n").rstrip("\r")
            if not line.strip():
                continue
            if "\t" in line:
                utt, text = line.split("\t", 1)
            elif " " in line.strip():
                raise ValueError(f"{path}:{lineno}: no tab between id and text: {line!r}")
            else:
                utt, text = line, ""
            utt = utt.strip()
            if not utt:
                raise ValueError(f"{path}:{lineno}: empty id")
            if utt in texts:
                raise ValueError(f"{path}:{lineno}: duplicate id {utt!r}")
            texts[utt] = " ".join(text.split())
    return texts


def write_text_file(texts: Mapping[str, str], path: str | Path) -> None:
    """Write ``{id: text}`` as an ``id<TAB>text`` file, sorted by id, atomically."""
    for utt, text in texts.items():
        if "\t" in utt or "\n" in utt or "\n" in text:
            raise ValueError(f"id or text of {utt!r} contains a tab or newline")
    write_text(path, "".join(f"{u}\t{texts[u]}\n" for u in sorted(texts)))


@dataclass
class ErrorCounts:
    """Edit operations against ``ref`` tokens; ``rate`` = errors / max(ref, 1)."""

    sub: int = 0
    dels: int = 0
    ins: int = 0
    ref: int = 0

    @property
    def errors(self) -> int:
        return self.sub + self.dels + self.ins

    @property
    def correct(self) -> int:
        return self.ref - self.sub - self.dels

    @property
    def rate(self) -> float:
        return self.errors / max(self.ref, 1)

    def __iadd__(self, other: "ErrorCounts") -> "ErrorCounts":
        self.sub += other.sub
        self.dels += other.dels
        self.ins += other.ins
        self.ref += other.ref
        return self

    def to_dict(self) -> dict:
        return {"sub": self.sub, "del": self.dels, "ins": self.ins, "ref": self.ref,
                "errors": self.errors, "rate": self.rate, "pct": 100 * self.rate}


@dataclass
class UttScore:
    """One utterance: its texts, word alignment and word/char counts."""

    utt_id: str
    ref: str
    hyp: str
    alignment: list[tuple[str, str]]  # (ref word | "*", hyp word | "*")
    words: ErrorCounts
    chars: ErrorCounts
    missing: bool = False


@dataclass
class ScoreResult:
    """Corpus-level scores plus every utterance's; rates are fractions, ``*_pct`` percent."""

    words: ErrorCounts
    chars: ErrorCounts
    utts: list[UttScore]
    missing: list[str] = field(default_factory=list)

    @property
    def wer(self) -> float:
        return self.words.rate

    @property
    def cer(self) -> float:
        return self.chars.rate

    @property
    def wer_pct(self) -> float:
        return 100 * self.wer

    @property
    def cer_pct(self) -> float:
        return 100 * self.cer

    @property
    def ref_words(self) -> int:
        return self.words.ref

    @property
    def num_utts(self) -> int:
        return len(self.utts)

    @property
    def sentence_errors(self) -> int:
        return sum(u.words.errors > 0 for u in self.utts)

    @property
    def ser(self) -> float:
        """Sentence error rate: fraction of utterances with at least one word error."""
        return self.sentence_errors / max(self.num_utts, 1)

    def summary(self) -> dict:
        """The corpus numbers as a JSON-able dict (what ``score.json`` holds)."""
        return {
            "wer": self.wer, "wer_pct": self.wer_pct, "cer": self.cer, "cer_pct": self.cer_pct,
            "words": self.words.to_dict(), "chars": self.chars.to_dict(),
            "num_utts": self.num_utts, "sentence_errors": self.sentence_errors,
            "ser": self.ser, "ser_pct": 100 * self.ser, "missing": list(self.missing),
        }


def _align(ref: Sequence[str], hyp: Sequence[str]) -> tuple[list[tuple[str, str]], ErrorCounts]:
    # Tokens are mapped to ints so that a literal "*" in the text cannot pass for a gap.
    vocab: dict[str, int] = {}
    r = [vocab.setdefault(t, len(vocab)) for t in ref]
    h = [vocab.setdefault(t, len(vocab)) for t in hyp]
    inv = {i: t for t, i in vocab.items()}
    counts = ErrorCounts(ref=len(ref))
    pairs = []
    for a, b in kaldialign.align(r, h, -1):
        if a == -1:
            counts.ins += 1
        elif b == -1:
            counts.dels += 1
        elif a != b:
            counts.sub += 1
        pairs.append((inv.get(a, EPS), inv.get(b, EPS)))
    return pairs, counts


def score(refs: Mapping[str, str], hyps: Mapping[str, str]) -> ScoreResult:
    """Score hypotheses against references.

    Args:
        refs: ``{utt_id: reference text}``; every id is scored.
        hyps: ``{utt_id: hypothesis text}``; a missing id counts as an empty hypothesis.

    Returns:
        The corpus WER/CER with S/D/I counts, and one :class:`UttScore` per reference (in
        sorted id order).

    Raises:
        ValueError: when ``hyps`` has ids that ``refs`` does not (names a few of them).
    """
    extra = sorted(set(hyps) - set(refs))
    if extra:
        raise ValueError(
            f"{len(extra)} hypothesis ids have no reference (wrong test set?), e.g. {extra[:5]}"
        )
    words, chars = ErrorCounts(), ErrorCounts()
    utts, missing = [], []
    for utt in sorted(refs):
        ref = " ".join(refs[utt].split())
        is_missing = utt not in hyps
        if is_missing:
            missing.append(utt)
        hyp = "" if is_missing else " ".join(hyps[utt].split())
        alignment, w = _align(ref.split(), hyp.split())
        _, c = _align(list(ref), list(hyp))
        words += w
        chars += c
        utts.append(UttScore(utt, ref, hyp, alignment, w, c, is_missing))
    return ScoreResult(words, chars, utts, missing)


def _format_alignment(alignment: Iterable[tuple[str, str]]) -> tuple[str, str, str]:
    """Column-aligned ``ref``/``hyp``/``eval`` rows (S, D, I under the errors)."""
    refs, hyps, evals = [], [], []
    for r, h in alignment:
        if r == EPS and h == EPS:
            continue
        mark = "" if r == h else "I" if r == EPS else "D" if h == EPS else "S"
        width = max(len(r), len(h), 1)
        refs.append((r if r != EPS else EPS * width).ljust(width))
        hyps.append((h if h != EPS else EPS * width).ljust(width))
        evals.append(mark.ljust(width))
    return " ".join(refs).rstrip(), " ".join(hyps).rstrip(), " ".join(evals).rstrip()


def write_alignments(result: ScoreResult, path: str | Path, title: str = "") -> None:
    """Write an sclite/icefall-style ``errs-*.txt``: summary, per-utterance alignments, and
    the most frequent substitutions, deletions and insertions.

    Each utterance block::

        id: 1089-134686-0000
        Scores: (#C #S #D #I) 8 1 0 1
        ref:  HE HOPED *** THERE WOULD BE STEW
        hyp:  HE HOPED AH  THERE WOULD BE STU
        eval:          I                  S

    Gaps are runs of ``*``; the ``eval`` row marks S(ubstitution), D(eletion), I(nsertion).
    """
    w, c = result.words, result.chars
    lines = [
        f"# {title}" if title else "# alignments",
        f"%WER {result.wer_pct:.2f} [ {w.errors} / {w.ref}, {w.ins} ins, {w.dels} del, {w.sub} sub ]",
        f"%CER {result.cer_pct:.2f} [ {c.errors} / {c.ref}, {c.ins} ins, {c.dels} del, {c.sub} sub ]",
        f"%SER {100 * result.ser:.2f} [ {result.sentence_errors} / {result.num_utts} ]",
        f"Missing hypotheses (scored as empty): {len(result.missing)}"
        + (f" e.g. {' '.join(result.missing[:10])}" if result.missing else ""),
        "Sections: PER-UTT DETAILS, SUBSTITUTIONS, DELETIONS, INSERTIONS",
        "",
        "PER-UTT DETAILS:",
    ]
    subs, dels, ins = Counter(), Counter(), Counter()
    for u in result.utts:
        ref_row, hyp_row, eval_row = _format_alignment(u.alignment)
        lines += [
            f"id: {u.utt_id}" + ("  (hypothesis missing)" if u.missing else ""),
            f"Scores: (#C #S #D #I) {u.words.correct} {u.words.sub} {u.words.dels} {u.words.ins}",
            f"ref:  {ref_row}",
            f"hyp:  {hyp_row}",
            f"eval: {eval_row}",
            "",
        ]
        for r, h in u.alignment:
            if r == EPS:
                ins[h] += 1
            elif h == EPS:
                dels[r] += 1
            elif r != h:
                subs[f"{r} -> {h}"] += 1
    for name, counter in (("SUBSTITUTIONS", subs), ("DELETIONS", dels), ("INSERTIONS", ins)):
        lines.append(f"{name}: count item")
        lines += [f"{n} {item}" for item, n in counter.most_common()]
        lines.append("")
    write_text(path, "\n".join(lines))


def write_per_utt(result: ScoreResult, path: str | Path) -> None:
    """Write ``per_utt.tsv``: one row per utterance with word/char counts, rates and texts."""
    header = ["id", "ref_words", "sub", "del", "ins", "wer", "ref_chars", "char_errors", "cer",
              "missing", "ref", "hyp"]
    rows = ["\t".join(header)]
    for u in result.utts:
        w, c = u.words, u.chars
        rows.append("\t".join(map(str, [
            u.utt_id, w.ref, w.sub, w.dels, w.ins, f"{w.rate:.4f}", c.ref, c.errors,
            f"{c.rate:.4f}", int(u.missing), u.ref, u.hyp,
        ])))
    write_text(path, "\n".join(rows) + "\n")


SCORE_META_KEYS = ("model", "pretrain_data", "labeled", "init", "decoder", "lm", "test_set",
                   "lm_weight", "word_score")


def write_score_json(result: ScoreResult, path: str | Path, meta: Mapping) -> None:
    """Write ``score.json``: ``{"meta": {...}, <ScoreResult.summary()>}``, atomically.

    Args:
        meta: what was scored; must have every key of ``SCORE_META_KEYS`` (``lm``,
            ``lm_weight``, ``word_score`` may be ``None`` for greedy decoding). Extra keys
            (checkpoint, git commit, device...) are kept.

    Raises:
        KeyError: naming the missing meta keys.
    """
    missing = [k for k in SCORE_META_KEYS if k not in meta]
    if missing:
        raise KeyError(f"score meta for {path} lacks {missing}")
    payload = {"meta": dict(meta), **result.summary()}
    write_text(path, json.dumps(payload, indent=2, sort_keys=False) + "\n")


def result_to_dict(result: ScoreResult) -> dict:
    """Everything, per-utterance rows included (for debugging and notebooks)."""
    return {**result.summary(), "utts": [asdict(u) for u in result.utts]}
