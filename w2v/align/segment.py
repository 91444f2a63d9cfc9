"""Segment a long recording into its text's segments (a chapter into verses) with a CTC model.

The recording is run through the model in overlapping windows (the model never sees more
than ``chunk`` seconds, whatever the chapter's length), the verses are aligned together with
:func:`w2v.align.ctc.align_segments`, and each verse gets a start, an end and a confidence;
verses under ``min_confidence`` are marked dropped (and logged by the caller).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from w2v.align.ctc import align_segments, segment_confidence
from w2v.decode.emissions import compute_emissions
from w2v.models import Wav2Vec2Config

__all__ = ["SegmentSettings", "Segment", "frame_geometry", "frame_levels", "chunked_emissions", "refine_spans",
           "segment_recording"]

SAMPLE_RATE = 16000


@dataclass(frozen=True)
class SegmentSettings:
    """How a recording is segmented (the ``corpus.segment`` keys of an ``mms_bible`` recipe)."""

    star_penalty: float = 3.0  # the star scores this far below the frame's best unit (log domain)
    min_confidence: float = -2.0  # verses whose confidence is lower are dropped
    confidence_window: float = 1.0  # seconds over which the CTC-segmentation score is averaged
    chunk: float = 20.0  # seconds of audio per model call
    context: float = 2.0  # extra seconds on each side of a chunk, computed and thrown away
    refine_db: float | None = 15.0  # snap boundaries to speech onset/offset this far above the noise floor
    refine_max: float = 0.5  # seconds a boundary may move when refined


@dataclass(frozen=True)
class Segment:
    start: float  # seconds, refined when levels are given
    end: float
    confidence: float
    kept: bool
    ctc_start: float  # the span of the segment's units on the best CTC path
    ctc_end: float


def frame_geometry(cfg: Wav2Vec2Config) -> tuple[int, int]:
    """``(hop, receptive_field)`` of the conv feature encoder, in samples (320, 400 for BASE)."""
    hop, rf = 1, 1
    for _, kernel, stride in cfg.conv_feature_layers:
        rf += (kernel - 1) * hop
        hop *= stride
    return hop, rf


def chunked_emissions(model, audio: np.ndarray, normalize: bool, settings: SegmentSettings,
                      device: torch.device | str = "cpu") -> np.ndarray:
    """``(frames, units)`` log-probabilities of a long mono 16 kHz recording, chunk by chunk.

    Frame ``t`` covers samples ``[t * hop, t * hop + receptive_field)`` as if the whole
    recording had gone through the conv encoder; each chunk is computed with ``context``
    seconds on either side so that the transformer sees some surroundings at its edges.
    """
    hop, rf = frame_geometry(model.cfg)
    total = (len(audio) - rf) // hop + 1
    if total <= 0:
        return np.zeros((0, model.lm_head.out_features), dtype=np.float32)
    step = max(1, int(settings.chunk * SAMPLE_RATE / hop))
    ctx = int(settings.context * SAMPLE_RATE / hop)
    pieces, keep = [], []
    for f0 in range(0, total, step):
        f1 = min(total, f0 + step)
        a, b = max(0, f0 - ctx), min(total, f1 + ctx)
        pieces.append(audio[a * hop: (b - 1) * hop + rf])
        keep.append((f0 - a, f1 - a))
    max_batch = (settings.chunk + 2 * settings.context) * 4
    em = compute_emissions(model, pieces, normalize, max_batch, device)
    return np.concatenate([e[i:j].numpy() for e, (i, j) in zip(em, keep)])


def frame_levels(audio: np.ndarray, hop: int, receptive_field: int) -> np.ndarray:
    """Level in dB of each model frame (``[t * hop, t * hop + receptive_field)``)."""
    n = (len(audio) - receptive_field) // hop + 1
    if n <= 0:
        return np.zeros(0)
    frames = np.lib.stride_tricks.sliding_window_view(np.asarray(audio, dtype=np.float64), receptive_field)[::hop][:n]
    return 10 * np.log10((frames ** 2).mean(axis=1) + 1e-12)


def refine_spans(spans: list[tuple[int, int]], levels: np.ndarray, above_floor_db: float,
                 max_frames: int, min_pause: int = 3) -> list[tuple[int, int]]:
    """Move each span's edges to the speech onset/offset nearest to them.

    CTC puts a unit where the model recognises it, which is often inside the sound rather than
    at its edge; a verse's last letter in particular is emitted well before the speech ends.
    Frames louder than the recording's floor (5th percentile) + ``above_floor_db`` are speech;
    a start moves back (an end forward) through speech up to a pause of ``min_pause`` frames,
    at most ``max_frames``, and never past the neighbouring span's original edge. A start
    that CTC put in silence moves forward to the speech (an end back). Where no pause is found
    within reach the edge stays where CTC put it.
    """
    if not len(levels):
        return list(spans)
    speech = levels > np.percentile(levels, 5) + above_floor_db
    T = len(levels)
    out = []
    for k, (s, e) in enumerate(spans):
        lo = spans[k - 1][1] if k else 0
        hi = spans[k + 1][0] if k + 1 < len(spans) else T
        ns = s
        if not speech[s]:  # CTC started in silence: forward to the speech
            ns = next((t for t in range(s, min(e, s + max_frames)) if speech[t]), s)
        else:  # back to the pause before the speech
            t = s
            while t > max(lo, s - max_frames) and not _pause_before(speech, t, min_pause):
                t -= 1
            ns = t if _pause_before(speech, t, min_pause) else s
        ne = e
        if not speech[e - 1]:  # CTC ended in silence: back to the speech
            ne = next((t + 1 for t in range(e - 1, max(ns, e - 1 - max_frames), -1) if speech[t]), e)
        else:
            t = e
            while t < min(hi, e + max_frames) and not _pause_from(speech, t, min_pause):
                t += 1
            ne = t if _pause_from(speech, t, min_pause) else e
        out.append((ns, max(ne, ns + 1)))
    for k in range(len(out) - 1):  # no pause between two spans: meet half-way
        if out[k][1] > out[k + 1][0]:
            mid = (spans[k][1] + spans[k + 1][0]) // 2
            out[k], out[k + 1] = (out[k][0], mid), (mid, out[k + 1][1])
    return out


def _pause_before(speech: np.ndarray, t: int, min_pause: int) -> bool:
    """A pause of ``min_pause`` frames ends just before frame ``t``."""
    return t <= 0 or (not speech[max(0, t - min_pause):t].any())


def _pause_from(speech: np.ndarray, t: int, min_pause: int) -> bool:
    """A pause of ``min_pause`` frames begins at frame ``t``."""
    return t >= len(speech) or (not speech[t:t + min_pause].any())


def segment_recording(log_probs: np.ndarray, texts: list[list[int]], hop: int, settings: SegmentSettings,
                      blank: int = 0, levels: np.ndarray | None = None) -> list[Segment]:
    """Align unit sequences (one per segment, in reading order) to a recording's log-probabilities.

    Args:
        log_probs: ``(frames, units)`` CTC log-posteriors of the whole recording.
        texts: unit ids of each segment.
        hop: samples per frame.
        settings: see :class:`SegmentSettings`.
        blank: the blank's unit id.
        levels: frame levels in dB (:func:`frame_levels`) to refine the edges with
            (``settings.refine_db``); None keeps CTC's edges.

    Returns:
        One :class:`Segment` per text: its span in seconds (a frame ``t`` spans
        ``[t, t + 1) * hop``), its confidence (over the CTC span), and whether it is kept.
    """
    spans, path = align_segments(log_probs, texts, blank=blank, star_penalty=settings.star_penalty)
    window = max(1, math.ceil(settings.confidence_window * SAMPLE_RATE / hop))
    confs = [segment_confidence(log_probs, path, s, e, window) for s, e in spans]
    refined = spans
    if levels is not None and settings.refine_db is not None:
        refined = refine_spans(spans, levels[:len(log_probs)], settings.refine_db,
                               max(1, int(settings.refine_max * SAMPLE_RATE / hop)))
    sec = hop / SAMPLE_RATE
    return [Segment(s * sec, e * sec, conf, conf >= settings.min_confidence, cs * sec, ce * sec)
            for (s, e), (cs, ce), conf in zip(refined, spans, confs)]
