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

__all__ = ["SegmentSettings", "Segment", "frame_geometry", "chunked_emissions", "segment_recording"]

SAMPLE_RATE = 16000


@dataclass(frozen=True)
class SegmentSettings:
    """How a recording is segmented (the ``corpus.segment`` keys of an ``mms_bible`` recipe)."""

    star_penalty: float = 3.0  # the star scores this far below the frame's best unit (log domain)
    min_confidence: float = -2.0  # verses whose confidence is lower are dropped
    confidence_window: float = 1.0  # seconds over which the CTC-segmentation score is averaged
    chunk: float = 20.0  # seconds of audio per model call
    context: float = 2.0  # extra seconds on each side of a chunk, computed and thrown away


@dataclass(frozen=True)
class Segment:
    start: float  # seconds
    end: float
    confidence: float
    kept: bool


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


def segment_recording(log_probs: np.ndarray, texts: list[list[int]], hop: int, settings: SegmentSettings,
                      blank: int = 0) -> list[Segment]:
    """Align unit sequences (one per segment, in reading order) to a recording's log-probabilities.

    Returns one :class:`Segment` per text: the span of its units on the best path, in seconds
    (a frame ``t`` spans ``[t, t + 1) * hop``), its confidence, and whether it is kept.
    """
    spans, path = align_segments(log_probs, texts, blank=blank, star_penalty=settings.star_penalty)
    window = max(1, math.ceil(settings.confidence_window * SAMPLE_RATE / hop))
    out = []
    for start, end in spans:
        conf = segment_confidence(log_probs, path, start, end, window)
        out.append(Segment(start * hop / SAMPLE_RATE, end * hop / SAMPLE_RATE, conf,
                           conf >= settings.min_confidence))
    return out
