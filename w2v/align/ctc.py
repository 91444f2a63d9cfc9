"""CTC forced alignment of a long recording to a sequence of text segments (verses).

The MMS data preparation (Pratap et al. 2023, the MMS-lab data) segments chapter recordings
into verses by forced alignment of the romanised chapter text with a CTC model, with a ``<star>`` token
that absorbs audio the text does not cover (chapter headings, music), and drops segments the
model is not confident about (CTC-segmentation, Kürzinger et al. 2020). This module is that
alignment: a Viterbi pass over a CTC trellis whose states are

* per segment, its units with the CTC blank between them (a unit may follow a *different*
  unit directly, as in CTC);
* before, between and after segments, a *gap*: a blank state and, optionally, a star state,
  each looping, each able to hand over to the other, both skippable between segments whose
  boundary units differ.

The star scores ``star_penalty`` below the best unit of its frame, so it wins only where the
text has nothing to say about the audio. A segment's confidence is the CTC-segmentation
score: the per-frame log ratio between the aligned unit's and the best unit's probability,
averaged over windows of ``window`` frames, minimum over the segment's windows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Span", "align_segments", "segment_confidence"]

_NEG = -1e30


@dataclass(frozen=True)
class Span:
    """Frames ``[start, end)`` of one segment's units on the best path, and its confidence."""

    start: int
    end: int
    confidence: float


def _build_graph(segments: list[list[int]], blank: int, star: int | None):
    """States of the trellis: emission column, predecessor lists, segment id (-1 for gaps).

    Returns ``(cols, preds, seg, starts, ends)``; ``preds[s]`` excludes the self-loop.
    """
    cols: list[int] = []
    preds: list[list[int]] = []
    seg: list[int] = []

    def add(col: int, p: list[int], k: int) -> int:
        cols.append(col)
        preds.append(p)
        seg.append(k)
        return len(cols) - 1

    def gap(p: list[int]) -> list[int]:
        b = add(blank, list(p), -1)
        if star is None:
            return [b]
        st = add(star, list(p) + [b], -1)
        preds[b].append(st)
        return [b, st]

    g = gap([])
    starts = list(g)
    last: int | None = None  # the last unit state of the previous segment
    for k, units in enumerate(segments):
        if not units:
            raise ValueError(f"segment {k} has no units to align")
        enter = list(g) + ([last] if last is not None and cols[last] != units[0] else [])
        prev = add(units[0], enter, k)
        if k == 0:
            starts.append(prev)
        for u in units[1:]:
            b = add(blank, [prev], k)
            prev = add(u, [b] + ([prev] if cols[prev] != u else []), k)
        last = prev
        g = gap([last])
    ends = list(g) + [last]
    return np.array(cols), preds, np.array(seg), starts, ends


def align_segments(log_probs: np.ndarray, segments: list[list[int]], blank: int = 0,
                   star_penalty: float | None = 3.0) -> tuple[list[tuple[int, int]], np.ndarray]:
    """Viterbi alignment of ``segments`` (unit-id lists, in order) to frame log-probabilities.

    Args:
        log_probs: ``(frames, units)`` CTC log-posteriors.
        segments: the text of each segment as unit ids (no leading/trailing word separator).
        blank: id of the CTC blank.
        star_penalty: the star scores ``max(log_probs[t]) - star_penalty`` at frame ``t``; None
            aligns without a star (then every non-blank frame must be explained by the text).

    Returns:
        ``(spans, path_units)``: per segment ``(first_frame, end_frame)`` of its units on the
        best path (end exclusive), and the unit column of the best path at each frame
        (``units`` = the star).

    Raises:
        ValueError: empty segments or too few frames for the text.
    """
    lp = np.asarray(log_probs, dtype=np.float64)
    T, V = lp.shape
    star = V if star_penalty is not None else None
    cols, preds, seg, starts, ends = _build_graph(segments, blank, star)
    S = len(cols)
    if star is not None:
        lp = np.concatenate([lp, lp.max(axis=1, keepdims=True) - star_penalty], axis=1)
    width = max(len(p) for p in preds) + 1  # predecessor slot 0 is the state itself
    pred = np.full((S, width), S, dtype=np.int64)  # S = a sentinel state scoring -inf
    pred[:, 0] = np.arange(S)
    for s, p in enumerate(preds):
        pred[s, 1:len(p) + 1] = p

    score = np.full(S + 1, _NEG)
    score[starts] = lp[0, cols[starts]]
    back = np.zeros((T, S), dtype=np.int8)
    for t in range(1, T):
        cand = score[pred]
        best = cand.argmax(axis=1)
        back[t] = best
        score[:S] = cand[np.arange(S), best] + lp[t, cols]
    end = max(ends, key=lambda s: score[s])
    if score[end] <= _NEG / 2:
        n_units = sum(len(u) for u in segments)
        raise ValueError(f"cannot align {n_units} units to {T} frames: the text is too long for the audio")

    path = np.empty(T, dtype=np.int64)
    s = end
    for t in range(T - 1, -1, -1):
        path[t] = s
        s = pred[s, back[t, s]]
    path_seg = seg[path]
    path_unit = cols[path]
    spans = []
    for k, units in enumerate(segments):
        frames = np.flatnonzero((path_seg == k) & (path_unit != blank))
        spans.append((int(frames[0]), int(frames[-1]) + 1))
    return spans, path_unit


def segment_confidence(log_probs: np.ndarray, path_units: np.ndarray, start: int, end: int,
                       window: int = 50) -> float:
    """CTC-segmentation confidence of frames ``[start, end)``: min over windows of the mean log ratio.

    The ratio at frame ``t`` is ``log p(path unit) - max_u log p(u)`` (0 where the path takes
    the most likely unit, and for star frames, which the text does not constrain).
    """
    lp = np.asarray(log_probs, dtype=np.float64)[start:end]
    units = path_units[start:end]
    star = units >= lp.shape[1]
    aligned = lp[np.arange(len(units)), np.minimum(units, lp.shape[1] - 1)]
    ratio = np.where(star, 0.0, aligned - lp.max(axis=1))
    if len(ratio) <= window:
        return float(ratio.mean()) if len(ratio) else 0.0
    c = np.concatenate([[0.0], np.cumsum(ratio)])
    return float(((c[window:] - c[:-window]) / window).min())
