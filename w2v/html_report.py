"""The report page: ``exp/<recipe>/report/index.html`` with its PNG figures beside it.

It reads what the stages left in the experiment directory, whatever of it exists:
``pretrain/train_log.jsonl`` and ``finetune/*/train_log.jsonl`` (training curves),
``decode/*/decode.json`` with each LM decoder's ``tuning.tsv`` (LM-weight sweeps), the
pre-trained ``model.pt`` and a few dev utterances (codebook usage), and the scored rows
(results table, WER against labeled data, the paper's numbers in the same setting). A piece
that is absent is named in the page's "Not in this report" list instead of failing the stage.
The page is static: no script, no network; open it from disk.
"""

from __future__ import annotations

import html
import json
import logging
import math
from pathlib import Path
from typing import Mapping, Sequence

from w2v import plots
from w2v.io import write_json, write_text
from w2v.report import _fmt, _labeled_hours, _lm_cell, _test_set_key, lm_kind, paper_matches

__all__ = ["FIGURES", "build_html_report", "read_train_log", "read_tuning"]

log = logging.getLogger(__name__)

# file name -> caption; the order of the page
FIGURES = {
    "wer_vs_labeled.png": "WER against the amount of labeled data, pre-trained vs from scratch, with and without LM",
    "lm_sweep.png": "LM weight and word score tuned on the dev set (beam search + n-gram)",
    "train_pretrain.png": "Pre-training curves",
    "codebook.png": "Codebook usage of the pre-trained quantizer",
    "train_finetune.png": "CTC fine-tuning curves (dev WER/CER by greedy decoding)",
}


def read_train_log(path: str | Path) -> tuple[list[dict], int]:
    """Rows of a ``train_log.jsonl`` and the number of unreadable lines skipped (a run killed
    mid-write can leave a partial last line)."""
    rows, bad = [], 0
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if isinstance(row, dict) and "update" in row:
            rows.append(row)
        else:
            bad += 1
    return rows, bad


def read_tuning(path: str | Path) -> list[dict]:
    """A ``tuning.tsv`` of :func:`w2v.decode.tune.write_tuning_tsv`: ``lm_weight``,
    ``word_score``, ``wer_pct`` per grid point.

    Raises:
        ValueError: not such a table (the message names the file).
    """
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    header = lines[0].split("\t") if lines else []
    need = ("lm_weight", "word_score", "wer_pct")
    if any(k not in header for k in need):
        raise ValueError(f"{path}: expected a header with {list(need)}, found {header}")
    table = []
    for n, line in enumerate(lines[1:], 2):
        cells = dict(zip(header, line.split("\t")))
        try:
            table.append({k: float(cells[k]) for k in need})
        except (KeyError, ValueError):
            raise ValueError(f"{path}:{n}: expected numbers for {list(need)}, found {line!r}") from None
    return table


def _training_runs(exp_dir: Path, notes: list[str], cfg: Mapping) -> tuple[dict, dict]:
    def read(path: Path) -> list[dict]:
        rows, bad = read_train_log(path)
        if bad:
            notes.append(f"{path}: {bad} unreadable line(s) skipped.")
        return rows

    pre_log = exp_dir / "pretrain" / "train_log.jsonl"
    pretrain = {"pretrain": read(pre_log)} if pre_log.is_file() else {}
    if not pretrain:
        imported = (cfg.get("finetune") or {}).get("init_from")
        notes.append(f"Pre-training curves: the pre-trained model is imported ({imported}); this recipe did not "
                     "pre-train." if imported else
                     f"Pre-training curves: no {pre_log} (the pretrain stage has not run).")
    finetune = {p.parent.name: read(p) for p in sorted(exp_dir.glob("finetune/*/train_log.jsonl"))}
    if not finetune:
        notes.append(f"Fine-tuning curves: no {exp_dir}/finetune/*/train_log.jsonl (the finetune stage has not run).")
    return pretrain, finetune


def _sweeps(exp_dir: Path, notes: list[str]) -> dict[str, dict]:
    sweeps = {}
    for dec_path in sorted(exp_dir.glob("decode/*/decode.json")):
        dec = json.loads(dec_path.read_text(encoding="utf-8"))
        for name, d in dec.get("decoders", {}).items():
            if d.get("lm_weight") is None or d.get("nbest"):
                continue  # greedy, hlg: no LM weight; n-best rescoring: a 2-3-D grid, not this sweep
            hyp = next(iter(d.get("hyps", {}).values()), None)
            tuning = Path(d["tuning"]) if d.get("tuning") else Path(hyp).parent / "tuning.tsv" if hyp else None
            if tuning is None or not tuning.is_file():
                notes.append(f"LM sweep of {dec_path.parent.name} {name}: no tuning table ({tuning}).")
                continue
            try:
                table = read_tuning(tuning)
            except ValueError as e:
                notes.append(f"LM sweep of {dec_path.parent.name} {name}: {e}")
                continue
            sweeps[f"{dec_path.parent.name} ({name})"] = {
                "table": table, "best": (d["lm_weight"], d.get("word_score", 0.0)),
                "dev_set": d.get("tuned_on", "dev"), "source": str(tuning)}
    if not sweeps:
        notes.append(f"LM-weight sweeps: no decoding with an LM under {exp_dir}/decode/ (greedy results only, "
                     "or the decode stage has not run).")
    return sweeps


def _main_test_set(rows: Sequence[Mapping]) -> str | None:
    sets = sorted({t for r in rows for t in r["results"]}, key=_test_set_key)
    evals = [t for t in sets if not any(r["results"].get(t, {}).get("is_dev") for r in rows) and "dev" not in t]
    return (evals or sets or [None])[0]


def _wer_series(rows: Sequence[Mapping], test_set: str) -> dict[str, list[tuple[float, float]]]:
    series: dict[str, list[tuple[float, float]]] = {}
    for r in rows:
        hours, cell = _labeled_hours(r["labeled"]), r["results"].get(test_set)
        if cell is None or math.isinf(hours):
            continue
        lm = "no LM" if lm_kind(r) == "none" else _lm_cell(r)
        series.setdefault(f"{r['init']}, {lm}", []).append((hours, cell["wer_pct"]))
    return series


def _codebook(pretrained: str | Path | None, dev_cuts: str | Path | None, n_utts: int,
              notes: list[str]) -> dict | None:
    if not pretrained or not Path(pretrained).is_file():
        notes.append(f"Codebook usage: no pre-trained model ({pretrained or 'none given'}).")
        return None
    if not dev_cuts or not Path(dev_cuts).is_file():
        notes.append(f"Codebook usage: no dev cuts to run the quantizer on ({dev_cuts or 'none given'}).")
        return None
    from w2v.codebook import codebook_usage

    try:
        return codebook_usage(pretrained, dev_cuts, n_utts)
    except (ValueError, KeyError, RuntimeError) as e:  # not a pre-trained model.pt this code can load
        notes.append(f"Codebook usage: {pretrained}: {e}.")
        return None


def _results_table(rows: Sequence[Mapping], paper_rows: Sequence[Mapping]) -> str:
    test_sets = sorted({t for r in rows for t in r["results"]}, key=_test_set_key)
    head = ["Labeled", "Model", "Pre-training data", "Init", "LM"] + [f"{t} {m}" for t in test_sets
                                                                      for m in ("WER", "CER")]
    head.append("Paper, same setting (WER %)")
    out = ["<table>", "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"]
    for r in rows:
        cells = [r["labeled"], r["model"], r["pretrain_data"], r["init"], _lm_cell(r)]
        for t in test_sets:
            res = r["results"].get(t)
            cells += [_fmt(res and res["wer_pct"]), _fmt(res and res["cer_pct"])]
        cells.append("; ".join(f"{p['model']} {p['pretrain_data']}: " + " / ".join(
            f"{v:g} {k}" for k, v in p.get("wer", {}).items()) for p in paper_matches(r, paper_rows)) or "–")
        out.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


_CSS = """body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:14px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td:nth-child(-n+5),th:nth-child(-n+5){text-align:left}img{max-width:100%;border:1px solid #eee}
.missing{background:#fff6e0;border:1px solid #e8c870;padding:.5em 1em}figure{margin:1.5em 0}
figcaption{font-weight:bold;margin-bottom:.3em}"""


def build_html_report(
    rows: Sequence[Mapping],
    out_dir: str | Path,
    *,
    exp_dir: str | Path,
    cfg: Mapping | None = None,
    paper_rows: Sequence[Mapping] = (),
    run_info: Mapping[str, str] | None = None,
    pretrained: str | Path | None = None,
    dev_cuts: str | Path | None = None,
    codebook_utterances: int = 20,
) -> dict:
    """Write ``out_dir/index.html``, its PNG figures and ``out_dir/report.json``.

    Args:
        rows: grouped report rows (:func:`w2v.report.collect`).
        out_dir: the report directory (created; PNGs of earlier reports not drawn again are removed).
        exp_dir: ``exp/<recipe>``, where the training logs and decode outputs are.
        cfg: the recipe config (name, description, ``finetune.init_from``).
        paper_rows: the paper's numbers (:func:`w2v.report.load_paper_results`).
        run_info: extra lines for the header.
        pretrained, dev_cuts: the pre-trained ``model.pt`` and the cuts for codebook usage.
        codebook_utterances: how many dev utterances the codebook statistics use.

    Returns:
        ``{"figures": {file: caption}, "missing": [notes], "codebook": stats or None,
        "sweeps": {...}}`` (also ``report.json``).
    """
    out_dir, exp_dir, cfg = Path(out_dir), Path(exp_dir), cfg or {}
    out_dir.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    drawn: dict[str, str] = {}

    if rows:
        test_set = _main_test_set(rows)
        series = _wer_series(rows, test_set)
        if series:
            plots.plot_wer_vs_labeled(series, out_dir / "wer_vs_labeled.png", test_set)
            drawn["wer_vs_labeled.png"] = FIGURES["wer_vs_labeled.png"] + f" ({test_set})"
        if not any(r["init"] == "scratch" for r in rows):
            notes.append("No from-scratch baseline among the scored systems (finetune.scratch: false, or not run "
                         "yet): nothing to compare pre-training against.")
        if not any(r["init"] == "pretrained" for r in rows):
            notes.append("No fine-tuning from a pre-trained model among the scored systems.")
    else:
        notes.append("Results: no scored systems yet (no score files).")

    sweeps = _sweeps(exp_dir, notes)
    if sweeps:
        plots.plot_lm_sweeps(sweeps, out_dir / "lm_sweep.png")
        drawn["lm_sweep.png"] = FIGURES["lm_sweep.png"]

    pretrain, finetune = _training_runs(exp_dir, notes, cfg)
    if pretrain and plots.plot_training_curves(pretrain, plots.PRETRAIN_METRICS, out_dir / "train_pretrain.png",
                                               "pre-training"):
        drawn["train_pretrain.png"] = FIGURES["train_pretrain.png"]
    elif pretrain:
        notes.append(f"Pre-training curves: {exp_dir}/pretrain/train_log.jsonl has no metric rows yet.")
    stats = _codebook(pretrained, dev_cuts, codebook_utterances, notes)
    if stats:
        plots.plot_codebook(stats, out_dir / "codebook.png")
        drawn["codebook.png"] = FIGURES["codebook.png"]
    if finetune and plots.plot_training_curves(finetune, plots.FINETUNE_METRICS, out_dir / "train_finetune.png",
                                               "CTC fine-tuning"):
        drawn["train_finetune.png"] = FIGURES["train_finetune.png"]
    elif finetune:
        notes.append(f"Fine-tuning curves: {exp_dir}/finetune/*/train_log.jsonl have no metric rows yet.")

    for stale in out_dir.glob("*.png"):
        if stale.name in FIGURES and stale.name not in drawn:
            stale.unlink()
    title = f"Report: {cfg['recipe']}" if cfg.get("recipe") else "Report"
    info = {**({"recipe": cfg["recipe"]} if cfg.get("recipe") else {}),
            **({"description": cfg["description"]} if cfg.get("description") else {}), **(run_info or {})}
    page = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>",
            f"<style>{_CSS}</style></head><body>", f"<h1>{html.escape(title)}</h1>", "<ul>"]
    page += [f"<li><b>{html.escape(str(k))}</b>: {html.escape(str(v))}</li>" for k, v in info.items()]
    page.append("</ul>")
    if notes:
        page += ["<div class=\"missing\"><h2>Not in this report</h2><ul>"]
        page += [f"<li>{html.escape(n)}</li>" for n in notes]
        page.append("</ul></div>")
    page.append("<h2>Results (WER and CER in %)</h2>")
    if rows:
        page.append(_results_table(rows, paper_rows))
        if paper_rows:
            page.append(f"<p><small>Paper: {html.escape(_paper_note(paper_rows))}</small></p>")
    else:
        page.append("<p>(no results yet)</p>")
    page.append("<h2>Figures</h2>")
    for name in FIGURES:
        if name in drawn:
            page.append(f"<figure id=\"{name[:-4]}\"><figcaption>{html.escape(drawn[name])}</figcaption>"
                        f"<img src=\"{name}\" alt=\"{html.escape(drawn[name])}\"></figure>")
    page.append("</body></html>")
    write_text(out_dir / "index.html", "\n".join(page) + "\n")
    summary = {"figures": drawn, "missing": notes, "codebook": stats, "sweeps": sweeps}
    write_json(out_dir / "report.json", summary)
    log.info("wrote %s (%d figures; not in it: %d)", out_dir / "index.html", len(drawn), len(notes))
    return summary


def _paper_note(paper_rows: Sequence[Mapping]) -> str:
    sources = sorted({str(p.get("note") or p.get("source", "")) for p in paper_rows} - {""})
    return "; ".join(sources) or "the paper's numbers as given"
