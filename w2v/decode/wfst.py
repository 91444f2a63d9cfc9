"""WFST decoding of CTC log-probabilities over ``HLG.fst`` (kaldi-decoder; k2 when importable).

One-best: kaldi-decoder's ``FasterDecoder`` (Viterbi beam search over the graph). N-best:
``LatticeSimpleDecoder`` keeps a lattice whose arcs carry a graph cost (G's LM cost, natural
log) and an acoustic cost apart; the n best distinct word sequences with both costs feed
rescoring (:mod:`w2v.decode.rescore`).

Knobs: ``beam`` (cost window kept around the best token), ``max_active`` (tokens kept per
frame), ``acoustic_scale`` (log-probs are multiplied by it, so the graph weighs
``1 / acoustic_scale`` against them), ``lattice_beam`` (n-best only).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from w2v.decode.graph import load_hlg

__all__ = ["Hypothesis", "HLGDecoder", "k2_available"]


@dataclass(frozen=True)
class Hypothesis:
    """One word sequence with its first-pass scores (log domain, higher is better)."""

    words: tuple[str, ...]
    am: float  # sum of the (unscaled) CTC log-probs along the best alignment
    graph: float  # minus the graph cost (G's LM log-prob in natural log, plus L/H weights)

    @property
    def text(self) -> str:
        return " ".join(self.words)


def k2_available() -> bool:
    try:
        import k2  # noqa: F401
    except Exception:  # ImportError, or a k2 built against another torch
        return False
    return True


class HLGDecoder:
    """Decode ``(frames, units)`` CTC log-probs over an HLG graph directory (``w2v graph``).

    Args:
        graph_dir: holds ``HLG.fst`` and ``words.txt``.
        beam, max_active, acoustic_scale, lattice_beam: see the module docstring.
        backend: ``"kaldi"`` (kaldi-decoder) or ``"k2"`` (needs k2 installed).
    """

    def __init__(self, graph_dir: str | Path, beam: float = 16.0, max_active: int = 1000,
                 acoustic_scale: float = 1.0, lattice_beam: float = 6.0, backend: str = "kaldi"):
        if backend not in ("kaldi", "k2"):
            raise ValueError(f"unknown WFST backend {backend!r}: use 'kaldi' or 'k2'")
        if backend == "k2" and not k2_available():
            raise RuntimeError("decoder backend 'k2' requested but k2 is not importable; use 'kaldi'")
        if acoustic_scale <= 0:
            raise ValueError(f"acoustic_scale must be > 0, got {acoustic_scale}")
        self.hlg, self.words = load_hlg(graph_dir)
        self.graph_dir = Path(graph_dir)
        self.beam, self.max_active = float(beam), int(max_active)
        self.acoustic_scale, self.lattice_beam = float(acoustic_scale), float(lattice_beam)
        self.backend = backend
        self._k2_graph = None

    def _feats(self, log_probs: torch.Tensor) -> np.ndarray:
        if log_probs.dim() != 2:
            raise ValueError(f"expected (frames, units) log-probs, got shape {tuple(log_probs.shape)}")
        return np.ascontiguousarray(log_probs.detach().cpu().float().numpy() * self.acoustic_scale)

    def _words(self, olabels) -> tuple[str, ...]:
        return tuple(self.words[i] for i in olabels if i > 0 and not self.words[i].startswith("#"))

    def decode_one(self, log_probs: torch.Tensor) -> str:
        """The best word sequence; ``""`` for zero frames or when no path survives the beam."""
        if log_probs.shape[0] == 0:
            return ""
        if self.backend == "k2":
            return self._decode_k2(log_probs)
        import kaldifst
        from kaldi_decoder import DecodableCtc, FasterDecoder, FasterDecoderOptions

        decoder = FasterDecoder(self.hlg, FasterDecoderOptions(beam=self.beam, max_active=self.max_active))
        decoder.decode(DecodableCtc(self._feats(log_probs)))
        ok, best = decoder.get_best_path()
        if not ok:
            return ""
        ok, _, olabels, _ = kaldifst.get_linear_symbol_sequence(best)
        return " ".join(self._words(olabels)) if ok else ""

    def nbest_one(self, log_probs: torch.Tensor, n: int = 10) -> list[Hypothesis]:
        """Up to ``n`` distinct word sequences, best first (by first-pass score)."""
        if log_probs.shape[0] == 0:
            return [Hypothesis((), 0.0, 0.0)]
        import kaldifst
        from kaldi_decoder import DecodableCtc, LatticeSimpleDecoder, LatticeSimpleDecoderConfig

        cfg = LatticeSimpleDecoderConfig(beam=self.beam, lattice_beam=self.lattice_beam)
        decoder = LatticeSimpleDecoder(self.hlg, cfg)
        decoder.decode(DecodableCtc(self._feats(log_probs)))
        ok, lattice = decoder.get_raw_lattice()
        if not ok or lattice.num_states == 0:
            return []
        # Paths of a raw lattice differ by alignment too: ask for more, keep the best per word string.
        best: dict[tuple[str, ...], Hypothesis] = {}
        for path in kaldifst.lattice_to_nbest(lattice, n=4 * n):
            ok, _, olabels, w = kaldifst.get_linear_symbol_sequence(path)
            if not ok:
                continue
            hyp = Hypothesis(self._words(olabels), am=-w.value2 / self.acoustic_scale, graph=-w.value1)
            old = best.get(hyp.words)
            if old is None or hyp.am + hyp.graph > old.am + old.graph:
                best[hyp.words] = hyp
        ranked = sorted(best.values(), key=lambda h: -(self.acoustic_scale * h.am + h.graph))
        return ranked[:n]

    def decode_utterances(self, emissions: Mapping[str, torch.Tensor]) -> dict[str, str]:
        return {utt: self.decode_one(lp) for utt, lp in emissions.items()}

    def nbest_utterances(self, emissions: Mapping[str, torch.Tensor], n: int = 10) -> dict[str, list[Hypothesis]]:
        return {utt: self.nbest_one(lp, n) for utt, lp in emissions.items()}

    def _decode_k2(self, log_probs: torch.Tensor) -> str:  # pragma: no cover - needs k2
        import k2

        if self._k2_graph is None:
            fst_text = str(self.hlg)
            lines = []
            finals = []
            for line in fst_text.splitlines():
                cols = line.split()
                if len(cols) >= 4:
                    s, d, i, o = cols[:4]
                    w = float(cols[4]) if len(cols) > 4 else 0.0
                    if int(i) == 0:  # k2 reads label 0 as the CTC blank, not as epsilon
                        raise RuntimeError(f"{self.graph_dir}/HLG.fst has epsilon inputs; use backend 'kaldi'")
                    lines.append(f"{s} {d} {int(i) - 1} {o} {-w}")
                else:
                    finals.append(cols)
            n_states = self.hlg.num_states
            for cols in finals:
                w = float(cols[1]) if len(cols) > 1 else 0.0
                lines.append(f"{cols[0]} {n_states} -1 -1 {-w}")
            lines.append(str(n_states))
            self._k2_graph = k2.arc_sort(k2.Fsa.from_str("\n".join(lines), aux_label_names=["aux_labels"]))
        feats = torch.from_numpy(self._feats(log_probs)).unsqueeze(0)
        supervision = torch.tensor([[0, 0, feats.shape[1]]], dtype=torch.int32)
        dense = k2.DenseFsaVec(feats, supervision)
        lattice = k2.intersect_dense_pruned(self._k2_graph, dense, search_beam=self.beam, output_beam=self.lattice_beam,
                                            min_active_states=30, max_active_states=self.max_active)
        path = k2.shortest_path(lattice, use_double_scores=True)
        labels = [int(x) for x in path.aux_labels.tolist() if x > 0]
        return " ".join(self._words(labels))
