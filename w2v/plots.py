"""The report's figures as PNG files (matplotlib's Agg canvas; no display, no pyplot state).

Each function takes plain data (rows of ``train_log.jsonl``, report rows, tuning tables,
codebook counts), writes one PNG atomically and returns nothing; what to plot when data is
missing is the caller's business (:mod:`w2v.html_report`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter, ScalarFormatter

from w2v.io import atomic_path

__all__ = ["PRETRAIN_METRICS", "FINETUNE_METRICS", "plot_codebook", "plot_lm_sweeps", "plot_training_curves",
           "plot_wer_vs_labeled"]

# (log key, axis title, log-scale y, factor)
PRETRAIN_METRICS = (
    ("loss", "loss", False, 1), ("accuracy", "contrastive accuracy", False, 1),
    ("code_ppl", "code perplexity", False, 1), ("prob_ppl", "prob perplexity", False, 1),
    ("temp", "Gumbel temperature", False, 1), ("lr", "learning rate", False, 1), ("gnorm", "grad norm", True, 1),
)
FINETUNE_METRICS = (
    ("loss", "CTC loss", False, 1), ("dev_wer", "dev WER % (greedy)", False, 100),
    ("dev_cer", "dev CER % (greedy)", False, 100), ("lr", "learning rate", False, 1), ("gnorm", "grad norm", True, 1),
)


def _save(fig: Figure, path: Path) -> None:
    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")


def _grid(n: int, cols: int = 3) -> tuple[int, int]:
    cols = min(cols, n)
    return math.ceil(n / cols), cols


def plot_training_curves(runs: Mapping[str, Sequence[Mapping]], metrics: Sequence[tuple], path: str | Path,
                         title: str) -> list[str]:
    """One panel per metric that any run logged, one line per run, against the update.

    Returns:
        The metric keys drawn (empty: nothing to draw, no file written).
    """
    present = [m for m in metrics if any(m[0] in r for rows in runs.values() for r in rows)]
    if not present:
        return []
    nr, nc = _grid(len(present))
    fig = Figure(figsize=(4.2 * nc, 2.9 * nr))
    for i, (key, label, log_y, factor) in enumerate(present):
        ax = fig.add_subplot(nr, nc, i + 1)
        for name, rows in runs.items():
            pts = [(r["update"], factor * r[key]) for r in rows if key in r and r[key] is not None]
            if pts:
                ax.plot(*zip(*pts), marker="o" if key.startswith("dev_") else None, ms=3, label=name)
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("update", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        if log_y:
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(ScalarFormatter())
            ax.yaxis.set_minor_formatter(NullFormatter())
        if len(runs) > 1 and i == 0:
            ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, Path(path))
    return [m[0] for m in present]


def plot_codebook(stats: Mapping, path: str | Path) -> None:
    """Per codebook group: how often each entry is picked, entries sorted by use."""
    g, v = stats["groups"], stats["vars"]
    fig = Figure(figsize=(4.5 * g, 3.0))
    for k in range(g):
        ax = fig.add_subplot(1, g, k + 1)
        counts = sorted(stats["counts"][k], reverse=True)
        total = max(sum(counts), 1)
        ax.bar(range(v), [100 * c / total for c in counts], width=1.0)
        ax.axhline(100 / v, color="k", lw=0.8, ls="--", label="uniform")
        ax.set_title(f"group {k + 1}: {stats['used'][k]}/{v} used, perplexity {stats['perplexity'][k]:.1f}",
                     fontsize=9)
        ax.set_xlabel("codebook entry (by use)", fontsize=8)
        ax.set_ylabel("% of frames", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.legend(fontsize=7)
    fig.suptitle(f"codebook usage on {stats['utterances']} utterances ({stats['frames']} frames)")
    fig.tight_layout()
    _save(fig, Path(path))


def plot_wer_vs_labeled(series: Mapping[str, Sequence[tuple[float, float]]], path: str | Path,
                        test_set: str) -> None:
    """The paper's low-resource figure: WER against hours of labeled data (log x), one line per
    (initialisation, LM) series of ``(hours, wer_pct)`` points."""
    fig = Figure(figsize=(6.0, 4.0))
    ax = fig.add_subplot(1, 1, 1)
    for name, pts in series.items():
        pts = sorted(pts)
        ax.plot([h for h, _ in pts], [w for _, w in pts], marker="o",
                ls="-" if name.startswith("pretrained") else "--", label=name)
    ax.set_xscale("log")
    hours = sorted({h for pts in series.values() for h, _ in pts})
    ax.set_xticks(hours)
    ax.set_xticklabels([_hours_label(h) for h in hours])
    ax.minorticks_off()
    ax.set_xlabel("labeled data")
    ax.set_ylabel(f"{test_set} WER %")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("WER against labeled data")
    fig.tight_layout()
    _save(fig, Path(path))


def _hours_label(h: float) -> str:
    return f"{h * 60:g} min" if h < 1 else f"{h:g} h"


def plot_lm_sweeps(sweeps: Mapping[str, Mapping], path: str | Path) -> None:
    """Dev WER against LM weight, one line per word score, one panel per experiment; the chosen
    point circled. ``sweeps``: ``{experiment: {"table": [{"lm_weight", "word_score", "wer_pct"}],
    "best": (lm_weight, word_score) | None, "dev_set": name}}``."""
    nr, nc = _grid(len(sweeps), cols=4)
    fig = Figure(figsize=(3.8 * nc, 3.0 * nr))
    for i, (name, sw) in enumerate(sweeps.items()):
        ax = fig.add_subplot(nr, nc, i + 1)
        for ws in sorted({r["word_score"] for r in sw["table"]}):
            pts = sorted((r["lm_weight"], r["wer_pct"]) for r in sw["table"] if r["word_score"] == ws)
            ax.plot(*zip(*pts), marker=".", label=f"word score {ws:g}")
        best = sw.get("best")
        hit = [r for r in sw["table"] if best and (r["lm_weight"], r["word_score"]) == tuple(best)]
        title = name
        if hit:
            ax.plot(hit[0]["lm_weight"], hit[0]["wer_pct"], "o", mfc="none", mec="k", ms=10, label="chosen")
            title += f"\nchosen: weight {hit[0]['lm_weight']:g}, word score {hit[0]['word_score']:g}"
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("LM weight", fontsize=8)
        ax.set_ylabel(f"{sw.get('dev_set', 'dev')} WER %", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        if i == 0:
            ax.legend(fontsize=7)
    fig.suptitle("LM weight and word score on the dev set")
    fig.tight_layout()
    _save(fig, Path(path))
