"""sclite-style detail on top of :func:`w2v.score.wer.score`: per-speaker / per-language
breakdowns, the most frequent errors, token folding (e.g. TIMIT's 61 -> 39 phones) and
Markdown + JSON reports that people and scripts both read.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Mapping

from w2v.io import write_text
from w2v.score.wer import EPS, ErrorCounts, ScoreResult

__all__ = ["breakdown", "fold", "read_fold_map", "score_details", "top_errors", "write_details"]


def read_fold_map(path: str | Path) -> dict[str, str]:
    """``FROM TO`` per line (``FROM`` alone: the token is deleted) into ``{from: to}``; lines
    starting with ``#`` are comments.

    Raises:
        ValueError: naming file and line, for a line with more than two fields or a repeat.
    """
    path = Path(path)
    out: dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if not parts or parts[0].startswith("#"):
                continue
            if len(parts) > 2:
                raise ValueError(f"{path}:{lineno}: expected 'FROM [TO]', got {line.rstrip()!r}")
            if parts[0] in out:
                raise ValueError(f"{path}:{lineno}: {parts[0]!r} is mapped twice")
            out[parts[0]] = parts[1] if len(parts) == 2 else ""
    return out


def fold(text: str, fold_map: Mapping[str, str]) -> str:
    """Map each whitespace token through ``fold_map`` (unmapped tokens stay, ``""`` deletes)."""
    return " ".join(t for t in (fold_map.get(tok, tok) for tok in text.split()) if t)


def breakdown(result: ScoreResult, groups: Mapping[str, str]) -> dict[str, dict]:
    """Word counts per group (speaker, language...): ``{group: {sub, del, ins, ref, errors, rate,
    pct, utts}}``, sorted by group. Utterances without a group go under ``"?"``."""
    acc: dict[str, ErrorCounts] = {}
    n: Counter[str] = Counter()
    for u in result.utts:
        g = groups.get(u.utt_id) or "?"
        acc.setdefault(g, ErrorCounts()).__iadd__(u.words)
        n[g] += 1
    return {g: {**acc[g].to_dict(), "utts": n[g]} for g in sorted(acc)}


def top_errors(result: ScoreResult, n: int = 20) -> dict[str, list]:
    """The ``n`` most frequent substitutions ``[ref, hyp, count]``, deletions and insertions
    ``[word, count]`` of the word alignments."""
    subs, dels, ins = Counter(), Counter(), Counter()
    for u in result.utts:
        for r, h in u.alignment:
            if r == EPS and h != EPS:
                ins[h] += 1
            elif h == EPS and r != EPS:
                dels[r] += 1
            elif r != h:
                subs[(r, h)] += 1
    return {"substitutions": [[r, h, c] for (r, h), c in subs.most_common(n)],
            "deletions": [[w, c] for w, c in dels.most_common(n)],
            "insertions": [[w, c] for w, c in ins.most_common(n)]}


def score_details(result: ScoreResult, speakers: Mapping[str, str] | None = None,
                  languages: Mapping[str, str] | None = None, metric: str = "WER", top: int = 20) -> dict:
    """Everything a script needs: corpus summary, breakdowns, top errors, per-utterance rows."""
    out = {"metric": metric, **result.summary(), "top_errors": top_errors(result, top)}
    if speakers:
        out["by_speaker"] = breakdown(result, speakers)
    if languages and len(set(languages.values())) > 0:
        out["by_language"] = breakdown(result, languages)
    out["utts"] = [{"id": u.utt_id, "ref": u.ref, "hyp": u.hyp, "sub": u.words.sub, "del": u.words.dels,
                    "ins": u.words.ins, "ref_words": u.words.ref, "missing": u.missing} for u in result.utts]
    return out


def _group_table(title: str, groups: Mapping[str, Mapping], metric: str) -> list[str]:
    lines = ["", f"## {title}", "", f"| {title.split()[-1]} | utts | words | sub | del | ins | {metric} % |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for g, c in groups.items():
        lines.append(f"| {g} | {c['utts']} | {c['ref']} | {c['sub']} | {c['del']} | {c['ins']} | {c['pct']:.2f} |")
    return lines


def write_details(details: Mapping, md_path: str | Path, json_path: str | Path, title: str) -> None:
    """Write the details as Markdown (people) and JSON (scripts), atomically."""
    m, w, c = details["metric"], details["words"], details["chars"]
    md = [f"# {title}", "",
          f"- {m} **{w['pct']:.2f}%** [ {w['errors']} / {w['ref']}: {w['sub']} sub, {w['del']} del, {w['ins']} ins ]",
          f"- CER {c['pct']:.2f}% [ {c['errors']} / {c['ref']} ]",
          f"- sentence errors {details['sentence_errors']} / {details['num_utts']}"
          + (f"; {len(details['missing'])} hypotheses missing (scored as empty)" if details["missing"] else "")]
    if "by_speaker" in details:
        md += _group_table("By speaker", details["by_speaker"], m)
    if "by_language" in details:
        md += _group_table("By language", details["by_language"], m)
    top = details["top_errors"]
    md += ["", "## Most frequent errors", "", "| substitution | count |", "|---|---:|"]
    md += [f"| {r} -> {h} | {n} |" for r, h, n in top["substitutions"]] or ["| (none) | 0 |"]
    for name in ("deletions", "insertions"):
        md += ["", f"| {name[:-1]} | count |", "|---|---:|"]
        md += [f"| {x} | {n} |" for x, n in top[name]] or ["| (none) | 0 |"]
    write_text(md_path, "\n".join(md) + "\n")
    write_text(json_path, json.dumps(details, indent=1) + "\n")
