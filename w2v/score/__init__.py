"""Scoring: corpus WER/CER with kaldialign, alignment files and ``score.json``."""

from w2v.score.wer import (
    ScoreResult,
    read_text_file,
    score,
    write_alignments,
    write_per_utt,
    write_score_json,
    write_text_file,
)

__all__ = [
    "ScoreResult",
    "read_text_file",
    "score",
    "write_alignments",
    "write_per_utt",
    "write_score_json",
    "write_text_file",
]
