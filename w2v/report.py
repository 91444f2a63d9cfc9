"""Gather ``score.json`` files into ``results.md`` / ``results.json``.

The Markdown table follows the layout of the wav2vec 2.0 paper's Tables 1-2: one row per
(model, pre-training data, labeled subset, init, decoder/LM), error rates per test set,
rows ordered by the amount of labeled data. The paper's own numbers, when given, go in a
second table beneath so that the two are never confused.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from w2v.io import write_text
from w2v.score.wer import SCORE_META_KEYS

__all__ = ["collect", "group_rows", "lm_kind", "load_paper_results", "paper_matches", "parse_duration",
           "write_report"]

ROW_KEYS = ("model", "pretrain_data", "labeled", "init", "decoder", "lm")
INIT_ORDER = {"pretrained": 0, "scratch": 1}
_UNITS_H = {"s": 1 / 3600, "sec": 1 / 3600, "m": 1 / 60, "min": 1 / 60, "h": 1.0, "hr": 1.0,
            "hrs": 1.0, "hour": 1.0, "hours": 1.0}


def parse_duration(text: str) -> float:
    """``"10m"`` -> 0.1667, ``"1h"`` -> 1.0, ``"960h"`` -> 960.0 (hours).

    Accepts s/sec, m/min, h/hr/hours suffixes, optionally separated by ``_`` or a space.

    Raises:
        ValueError: for anything else.
    """
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*[_ ]?\s*([a-zA-Z]+)\s*", str(text))
    if not m or m.group(2).lower() not in _UNITS_H:
        raise ValueError(f"cannot read {text!r} as a duration like '10m', '1h', '960h'")
    return float(m.group(1)) * _UNITS_H[m.group(2).lower()]


def _labeled_hours(text) -> float:
    try:
        return parse_duration(text)
    except ValueError:
        return math.inf  # unknown sizes go last, still grouped by their name


def lm_kind(row: Mapping) -> str:
    """What LM a row used, comparable between our rows and the paper's: ``none``, ``4-gram``,
    ``transformer`` (or the name as given)."""
    name = str(row.get("decoder") or row.get("lm") or "none").lower()
    if name in ("greedy", "viterbi", "none"):
        return "none"
    if "transformer" in name:
        return "transformer"
    m = re.search(r"(\d+)[-_ ]?gram", name)
    return f"{m.group(1)}-gram" if m else name


def load_paper_results(path: str | Path | None = None) -> list[dict]:
    """The paper's WERs (``w2v/paper_results.json`` by default), each row carrying its ``source``."""
    path = Path(path) if path else Path(__file__).with_name("paper_results.json")
    data = json.loads(path.read_text(encoding="utf-8"))
    common = {"source": data.get("source", str(path)), **({"note": data["note"]} if data.get("note") else {})}
    return [{**common, **r} for r in data["rows"]]


def paper_matches(row: Mapping, paper_rows: Sequence[Mapping]) -> list[dict]:
    """The paper's rows in the same setting as ``row``: a pre-trained model, the same amount of
    labeled data and the same kind of LM (greedy matches the paper's "None")."""
    hours = _labeled_hours(row.get("labeled"))
    if row.get("init", "pretrained") != "pretrained" or math.isinf(hours):
        return []
    return [dict(p) for p in paper_rows
            if math.isclose(_labeled_hours(p.get("labeled")), hours) and lm_kind(p) == lm_kind(row)]


def _row_sort_key(row: Mapping) -> tuple:
    greedy = row.get("decoder") in (None, "greedy", "viterbi")
    return (
        _labeled_hours(row.get("labeled")), str(row.get("labeled")),
        INIT_ORDER.get(row.get("init"), len(INIT_ORDER)), str(row.get("init")),
        str(row.get("model")), str(row.get("pretrain_data")),
        not greedy, str(row.get("decoder")), str(row.get("lm")),
    )


def _test_set_key(name: str) -> tuple:
    # dev before test, as the paper's columns: dev clean, dev other, test clean, test other.
    return (0 if "dev" in name else 1 if "test" in name else 2, name)


def _records(path: Path) -> list[dict]:
    """Flat records ``{meta keys..., "wer", "cer", ...}`` from one score file.

    Two shapes are read: one ``write_score_json`` object (``{"meta": {...}, "wer": ...}``)
    or a list of flat records (several decoders/test sets of one experiment in a file).
    """
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    items = data if isinstance(data, list) else [data]
    records = []
    for i, item in enumerate(items):
        rec = {**item.get("meta", {}), **{k: v for k, v in item.items() if k != "meta"}}
        lacking = [k for k in (*SCORE_META_KEYS, "wer", "cer") if k not in rec]
        if lacking:
            where = f"{path}" + (f" (entry {i})" if isinstance(data, list) else "")
            raise ValueError(f"{where}: meta lacks {lacking}")
        rec.setdefault("source", str(path))
        records.append(rec)
    return records


def group_rows(records: Iterable[Mapping]) -> list[dict]:
    """Group flat score records (one per system and test set) into report rows.

    Returns:
        One dict per (model, pretrain_data, labeled, init, decoder, lm), sorted as in the
        report, with ``results``: ``{test_set: {"wer_pct", "cer_pct", "wer", "cer",
        "lm_weight", "word_score", "source", ...the record's other numbers}}``.

    Raises:
        ValueError: two records for the same row and test set.
    """
    rows: dict[tuple, dict] = {}
    for rec in records:
        key = tuple(rec[k] for k in ROW_KEYS)
        row = rows.setdefault(key, {**{k: rec[k] for k in ROW_KEYS}, "results": {}})
        test_set = rec["test_set"]
        if test_set in row["results"]:
            raise ValueError(f"{rec.get('source')} and {row['results'][test_set].get('source')} "
                             f"both score {test_set} for {key}")
        cell = {k: v for k, v in rec.items() if k not in ROW_KEYS and k != "test_set"}
        cell["wer_pct"], cell["cer_pct"] = 100 * rec["wer"], 100 * rec["cer"]
        row["results"][test_set] = cell
    return sorted(rows.values(), key=_row_sort_key)


def collect(score_jsons: Iterable[str | Path]) -> list[dict]:
    """Read score files (see :func:`w2v.score.wer.write_score_json`) into report rows.

    Returns:
        :func:`group_rows` of every record of every file.

    Raises:
        ValueError: a record without the meta keys, or two for the same row and test set.
    """
    return group_rows(rec for path in score_jsons for rec in _records(Path(path)))


def _lm_cell(row: Mapping) -> str:
    # The paper's "LM" column: None for greedy rows, else the decoder's name ("4gram"); the
    # LM file itself is in results.json. Paper rows have no decoder, only "lm".
    decoder = row.get("decoder")
    if decoder is None:
        return str(row.get("lm") or "None")
    name = "None" if str(decoder).lower() in ("greedy", "viterbi", "none") else str(decoder)
    metrics = {cell.get("metric") for cell in row.get("results", {}).values()}
    return f"{name} (PER)" if "PER" in metrics else name


def _fmt(x) -> str:
    return "–" if x is None else f"{x:.1f}" if isinstance(x, (int, float)) else str(x)


def _md_table(header: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---" if i < 5 else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return lines


def write_report(
    rows: Sequence[Mapping],
    out_md: str | Path,
    out_json: str | Path,
    paper_rows: Sequence[Mapping] | None = None,
    title: str | None = None,
    run_info: Mapping[str, str] | None = None,
    cfg: Mapping | None = None,
    figures: Mapping[str, str] | None = None,
) -> None:
    """Write ``results.md`` and ``results.json`` (atomically).

    Args:
        rows: from :func:`collect`, or flat score records (grouped here).
        out_md, out_json: output paths.
        paper_rows: the paper's numbers, each ``{"model", "pretrain_data", "labeled",
            "lm", "wer": {test_set: pct}}`` (optional ``"cer"`` likewise and ``"source"``
            such as ``"Table 1"``); shown in a separate table.
        title: the Markdown heading (default: "Results", or "Results: <recipe>").
        run_info: what the run was (recipe, command, checkpoint, device, commit...), shown
            as a list under the heading and stored in the JSON.
        cfg: the recipe config; supplies the recipe name and description for the header
            and, when ``paper_rows`` is not given, its ``paper`` list.
        figures: ``{path relative to out_md: caption}``, embedded under "Figures" (the HTML
            report's PNGs), so that the Markdown shows them too.
    """
    if rows and "results" not in rows[0]:
        rows = group_rows(rows)
    rows = sorted(rows, key=_row_sort_key)
    cfg = cfg or {}
    if title is None:
        title = f"Results: {cfg['recipe']}" if cfg.get("recipe") else "Results"
    run_info = {**({"recipe": cfg["recipe"]} if cfg.get("recipe") else {}),
                **({"description": cfg["description"]} if cfg.get("description") else {}),
                **(run_info or {})}
    if paper_rows is None:
        paper_rows = cfg.get("paper")
    test_sets = sorted({t for r in rows for t in r["results"]}, key=_test_set_key)
    md = [f"# {title}", ""]
    for k, v in (run_info or {}).items():
        md.append(f"- **{k}**: {v}")
    md += [
        f"- {len(rows)} system(s) on {', '.join(test_sets) or 'no test set'}; WER and CER in %"
        " (lower is better). LM weight and word score per cell are in results.json.",
        "",
    ]
    header = ["Labeled", "Model", "Pre-training data", "Init", "LM"]
    header += [f"{t} {m}" for t in test_sets for m in ("WER", "CER")]
    body = []
    for r in rows:
        cells = [str(r["labeled"]), str(r["model"]), str(r["pretrain_data"]), str(r["init"]),
                 _lm_cell(r)]
        for t in test_sets:
            res = r["results"].get(t)
            cells += [_fmt(res and res["wer_pct"]), _fmt(res and res["cer_pct"])]
        body.append(cells)
    md += _md_table(header, body) if rows else ["(no results yet)"]

    if paper_rows:
        paper_rows = sorted(paper_rows, key=lambda r: _row_sort_key({"init": "pretrained", **r}))
        p_sets = sorted({t for r in paper_rows for t in r.get("wer", {})}, key=_test_set_key)
        md += ["", "## The paper's numbers (WER %)", ""]
        header = ["Labeled", "Model", "Pre-training data", "Source", "LM"] + list(p_sets)
        body = [[str(r.get("labeled")), str(r.get("model")), str(r.get("pretrain_data")),
                 str(r.get("source", "")), _lm_cell(r)]
                + [_fmt(r.get("wer", {}).get(t)) for t in p_sets] for r in paper_rows]
        md += _md_table(header, body)

    if figures:
        md += ["", "## Figures", ""]
        for rel, caption in figures.items():
            md += [f"![{caption}]({rel})", ""]
    write_text(out_md, "\n".join(md).rstrip("\n") + "\n")
    payload = {"title": title, "run": dict(run_info or {}), "test_sets": test_sets,
               "rows": list(rows), "paper_rows": list(paper_rows or [])}
    write_text(out_json, json.dumps(payload, indent=2) + "\n")
