"""WFST decoding of CTC log-probabilities over ``HLG.fst`` (kaldi-decoder; k2 when importable).

One-best: kaldi-decoder's ``FasterDecoder`` (Viterbi beam search over the graph). N-best:
``LatticeSimpleDecoder`` keeps a lattice whose arcs carry a graph cost (G's LM cost, natural
log) and an acoustic cost apart; the n best distinct word sequences with both costs feed
rescoring (:mod:`w2v.decode.rescore`).

Knobs: ``beam`` (cost window kept around the best token), ``max_active`` (tokens kept per
frame), ``acoustic_scale`` (log-probs are multiplied by it, so the graph weighs
``1 / acoustic_scale`` against them); for n-best, ``nbest_beam`` (the lattice decoder keeps
every token within it: it has no ``max_active``) and ``lattice_beam``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from w2v.decode.ctc import WORD_SEP
from w2v.decode.graph import load_hlg

__all__ = ["Hypothesis", "HLGDecoder", "k2_available"]


@dataclass(frozen=True)
class Hypothesis:
    """One word sequence with its scores (log domain, higher is better)."""

    words: tuple[str, ...]
    am: float  # CTC log-likelihood of its unit sequence (all alignments, unscaled)
    first_pass: float  # minus the best path's decoding cost (scaled acoustics + graph)

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
        beam, max_active, acoustic_scale, lattice_beam, nbest_beam: see the module docstring.
        backend: ``"kaldi"`` (kaldi-decoder) or ``"k2"`` (needs k2 installed; one-best only, n-best
            lists always come from kaldi-decoder's lattices).
    """

    def __init__(self, graph_dir: str | Path, beam: float = 10.0, max_active: int = 300,
                 acoustic_scale: float = 1.0, lattice_beam: float = 3.0, nbest_beam: float = 8.0,
                 backend: str = "kaldi"):
        if backend not in ("kaldi", "k2"):
            raise ValueError(f"unknown WFST backend {backend!r}: use 'kaldi' or 'k2'")
        if backend == "k2" and not k2_available():
            raise RuntimeError("decoder backend 'k2' requested but k2 is not importable; use 'kaldi'")
        if acoustic_scale <= 0:
            raise ValueError(f"acoustic_scale must be > 0, got {acoustic_scale}")
        self.graph_dir = Path(graph_dir)
        self.hlg, self.words = load_hlg(graph_dir)
        self.beam, self.max_active = float(beam), int(max_active)
        self.acoustic_scale, self.lattice_beam = float(acoustic_scale), float(lattice_beam)
        self.nbest_beam = float(nbest_beam)
        tokens = [line.split()[0] for line in (self.graph_dir / "tokens.txt").read_text(encoding="utf-8").splitlines()]
        units = {t: i - 1 for i, t in enumerate(tokens) if i > 0 and not t.startswith("#")}
        self.num_units = len(units)
        self.word_sep = units.get(WORD_SEP)
        self.spell: dict[str, list[int]] = {}
        for line in (self.graph_dir / "lexicon.txt").read_text(encoding="utf-8").splitlines():
            parts = line.split()
            if parts:
                self.spell.setdefault(parts[0], [units[u] for u in parts[1:]])
        self.backend = backend
        self._k2_graph = None

    def _feats(self, log_probs: torch.Tensor) -> np.ndarray:
        if log_probs.dim() != 2:
            raise ValueError(f"expected (frames, units) log-probs, got shape {tuple(log_probs.shape)}")
        if log_probs.shape[1] != self.num_units:
            raise ValueError(f"{self.graph_dir}/HLG.fst was built for {self.num_units} units, the log-probs have "
                             f"{log_probs.shape[1]}: rebuild the graph from the model's units.txt")
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
        """Up to ``n`` distinct word sequences, best first by first-pass score.

        The lattice (``nbest_beam``, ``lattice_beam``) is projected on words, determinized
        (the best path per word sequence) and its ``n`` best paths are read; each then gets
        its CTC log-likelihood, the acoustic score rescoring starts from.
        """
        if log_probs.shape[0] == 0:
            return [Hypothesis((), 0.0, 0.0)]
        import kaldifst
        from kaldi_decoder import DecodableCtc, LatticeSimpleDecoder, LatticeSimpleDecoderConfig

        cfg = LatticeSimpleDecoderConfig(beam=self.nbest_beam, lattice_beam=self.lattice_beam)
        decoder = LatticeSimpleDecoder(self.hlg, cfg)
        decoder.decode(DecodableCtc(self._feats(log_probs)))
        ok, lattice = decoder.get_raw_lattice()
        if not ok or lattice.num_states == 0:
            return []
        lines = []
        for line in str(lattice).splitlines():  # (graph, acoustic) costs -> one tropical weight, on words
            c = line.split()
            if len(c) >= 4:
                lines.append(f"{c[0]}\t{c[1]}\t{c[3]}\t{c[3]}\t{sum(map(float, c[4].split(','))) if len(c) > 4 else 0}")
            elif c:
                lines.append(f"{c[0]}\t{sum(map(float, c[1].split(','))) if len(c) > 1 else 0}")
        words_fst = kaldifst.compile("\n".join(lines) + "\n")
        kaldifst.rmepsilon(words_fst)
        words_fst = kaldifst.determinize(words_fst)
        hyps = []
        for path in kaldifst.convert_nbest_to_vector(kaldifst.shortest_path(words_fst, n=n)):
            ok, _, olabels, w = kaldifst.get_linear_symbol_sequence(path)
            if ok:
                hyps.append((self._words(olabels), -w.value))
        hyps.sort(key=lambda h: -h[1])
        am = self.ctc_scores(log_probs, [h[0] for h in hyps])
        return [Hypothesis(words, a, fp) for (words, fp), a in zip(hyps, am)]

    def ctc_scores(self, log_probs: torch.Tensor, sentences: Sequence[Sequence[str]]) -> list[float]:
        """CTC log-likelihood of each word sequence spelled in units (``-inf`` if unspellable)."""
        if not sentences:
            return []
        targets, lengths = [], []
        for words in sentences:
            ids = []
            for k, w in enumerate(words):
                if k and self.word_sep is not None:
                    ids.append(self.word_sep)
                ids += self.spell.get(w, [])
            targets.append(torch.tensor(ids, dtype=torch.long))
            lengths.append(len(ids))
        lp = log_probs.detach().float().cpu().unsqueeze(1).expand(-1, len(sentences), -1)
        padded = torch.nn.utils.rnn.pad_sequence(targets, batch_first=True) if max(lengths) else \
            torch.zeros(len(sentences), 1, dtype=torch.long)
        loss = torch.nn.functional.ctc_loss(lp, padded, torch.full((len(sentences),), lp.shape[0]),
                                            torch.tensor(lengths), blank=0, reduction="none", zero_infinity=False)
        return (-loss).tolist()

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
