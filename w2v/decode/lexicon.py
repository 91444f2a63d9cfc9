"""Lexicon-constrained CTC beam search with a word n-gram LM (wav2vec 2.0 paper, section 4.4).

A thin wrapper around flashlight-text's ``LexiconDecoder`` (the wav2letter decoder the paper
used through fairseq): hypotheses may only spell words of the lexicon, each completed word
is scored with ``lm_weight * log10 P_LM(word | history) + word_score``.

What changes cost. The lexicon trie stores, for each word, its *unweighted* LM unigram score
(from the LM start state), and ``Trie.smear(MAX)`` propagates the best word score below each
node up to it (the look-ahead used while a word is half spelled). ``lm_weight`` and
``word_score`` are only applied inside the decoder's step, so re-tuning them needs a new
``LexiconDecoderOptions`` and a new (cheap) ``LexiconDecoder`` object sharing the same trie
and LM: :meth:`LexiconBeamSearch.configure` does exactly that. Only a different LM or
lexicon requires building the trie again.

Scores from KenLM are log10 probabilities (as in fairseq/wav2letter), so the paper's tuned
``lm_weight`` values carry over.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Mapping, Sequence

import torch
from tqdm import tqdm
from flashlight.lib.text.decoder import (
    CriterionType,
    LexiconDecoder,
    LexiconDecoderOptions,
    SmearingMode,
    Trie,
    ZeroLM,
)
from flashlight.lib.text.dictionary import Dictionary

from w2v.decode.ctc import BLANK, WORD_SEP

__all__ = ["BeamSearchParams", "LexiconBeamSearch", "load_lexicon"]

UNK_WORD = "<unk>"


def load_lexicon(path: str | Path, units: Sequence[str], word_sep: str | None = WORD_SEP
                 ) -> dict[str, list[list[str]]]:
    """Read ``lexicon.txt`` (``WORD W O R D |`` per line) into ``{word: [spelling, ...]}``.

    A word may have several spellings (several lines). Every spelling must end with
    ``word_sep`` (unless it is ``None``: BPE and phone units) and use only units of ``units``.

    Raises:
        ValueError: naming file and line, on a malformed line or an unknown unit.
    """
    path = Path(path)
    known = set(units)
    lexicon: dict[str, list[list[str]]] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            word, spelling = parts[0], parts[1:]
            if word_sep is None and spelling:  # BPE / phone units: no word separator
                pass
            elif len(spelling) < 2 or spelling[-1] != word_sep:
                raise ValueError(
                    f"{path}:{lineno}: expected 'WORD u n i t s {word_sep}', got {line.rstrip()!r}"
                )
            unknown = sorted(set(spelling) - known)
            if unknown:
                raise ValueError(f"{path}:{lineno}: units {unknown} of {word!r} are not in units.txt")
            spellings = lexicon.setdefault(word, [])
            if spelling not in spellings:
                spellings.append(spelling)
    if not lexicon:
        raise ValueError(f"{path}: lexicon is empty")
    return lexicon


@dataclass(frozen=True)
class BeamSearchParams:
    """Search settings; the fairseq ``decoding.*`` name of each field is in its comment."""

    beam: int = 500  # decoding.beam (the paper: 500 for the 4-gram)
    beam_size_token: int | None = None  # decoding.beamsizetoken; None = every unit
    beam_threshold: float = 25.0  # decoding.beamthreshold
    lm_weight: float = 2.0  # decoding.lmweight (tuned on dev)
    word_score: float = -1.0  # decoding.wordscore (tuned on dev)
    sil_score: float = 0.0  # decoding.silweight
    unk_score: float = -math.inf  # decoding.unkweight; -inf forbids out-of-lexicon words
    log_add: bool = False  # merge equal hypotheses by log-add instead of max


class LexiconBeamSearch:
    """CTC beam search constrained to a lexicon, optionally with a KenLM n-gram.

    Args:
        units: CTC vocabulary in id order (``units[0]`` is ``<blank>``).
        lexicon_path: ``lexicon.txt``.
        lm_path: KenLM ``.bin``/``.arpa``; ``None`` gives a lexicon-only search (a zero LM).
        force_final_boundary: append one frame where only ``|`` is possible, so a word
            spelled up to the last frame is emitted even when the model leaves out the final
            ``|`` (the decoder only emits a word on its closing ``|``). The frame has
            log-prob 0, so it adds nothing to hypotheses that already ended a word.
        blank, word_sep: the blank and word-boundary units.
        **params: any field of :class:`BeamSearchParams`.
    """

    def __init__(
        self,
        units: Sequence[str],
        lexicon_path: str | Path,
        lm_path: str | Path | None = None,
        *,
        force_final_boundary: bool = True,
        blank: str = BLANK,
        word_sep: str = WORD_SEP,
        **params,
    ) -> None:
        self.units = list(units)
        if blank not in self.units:
            raise ValueError(f"units must contain {blank!r}")
        self.blank_idx = self.units.index(blank)
        if word_sep not in self.units:  # BPE / phones: words follow each other, blank is the "silence"
            word_sep, force_final_boundary = None, False
        self.sil_idx = self.units.index(word_sep) if word_sep else self.blank_idx
        self.force_final_boundary = force_final_boundary
        self.lexicon = load_lexicon(lexicon_path, self.units, word_sep)

        self.words = list(self.lexicon) + ([UNK_WORD] if UNK_WORD not in self.lexicon else [])
        self.word_dict = Dictionary()
        for w in self.words:
            self.word_dict.add_entry(w)
        self.unk_idx = self.word_dict.get_index(UNK_WORD)
        self.word_dict.set_default_index(self.unk_idx)

        if lm_path is None:
            self.lm = ZeroLM()
        else:
            from flashlight.lib.text.decoder.kenlm import KenLM

            if not Path(lm_path).is_file():
                raise FileNotFoundError(f"language model not found: {lm_path}")
            self.lm = KenLM(str(lm_path), self.word_dict)
        self.lm_path = lm_path
        self.trie = self._build_trie()
        self.params = BeamSearchParams()
        self.configure(**params)

    def _build_trie(self) -> Trie:
        trie = Trie(len(self.units), self.sil_idx)
        start = self.lm.start(False)
        unit_idx = {u: i for i, u in enumerate(self.units)}
        for word, spellings in self.lexicon.items():
            word_idx = self.word_dict.get_index(word)
            _, score = self.lm.score(start, word_idx)
            for spelling in spellings:
                trie.insert([unit_idx[u] for u in spelling], word_idx, score)
        trie.smear(SmearingMode.MAX)
        return trie

    def configure(self, **changes) -> "LexiconBeamSearch":
        """Change search settings (``lm_weight=``, ``word_score=``, ``beam=``...) in place.

        Reuses the loaded LM and the trie; only the decoder object is rebuilt (microseconds).

        Returns:
            ``self``, for chaining.
        """
        self.params = p = replace(self.params, **changes)
        options = LexiconDecoderOptions(
            beam_size=p.beam,
            beam_size_token=p.beam_size_token or len(self.units),
            beam_threshold=p.beam_threshold,
            lm_weight=p.lm_weight,
            word_score=p.word_score,
            unk_score=p.unk_score,
            sil_score=p.sil_score,
            log_add=p.log_add,
            criterion_type=CriterionType.CTC,
        )
        self._decoder = LexiconDecoder(
            options, self.trie, self.lm, self.sil_idx, self.blank_idx, self.unk_idx, [], False
        )
        return self

    def set_weights(self, lm_weight: float, word_score: float) -> "LexiconBeamSearch":
        """Shorthand for ``configure(lm_weight=..., word_score=...)`` (the tuned pair)."""
        return self.configure(lm_weight=lm_weight, word_score=word_score)

    def decode_one(self, log_probs: torch.Tensor) -> str:
        """Decode one utterance.

        Args:
            log_probs: ``(frames, vocab)`` CTC log-probabilities (log-softmax output).

        Returns:
            The best word sequence, ``""`` for zero frames or when no hypothesis survives.
        """
        if log_probs.dim() != 2 or log_probs.shape[1] != len(self.units):
            raise ValueError(
                f"expected (frames, {len(self.units)}) log-probs, got {tuple(log_probs.shape)}"
            )
        if log_probs.shape[0] == 0:
            return ""
        em = log_probs.detach().to("cpu", torch.float32)
        if self.force_final_boundary:
            last = torch.full((1, em.shape[1]), -math.inf)
            last[0, self.sil_idx] = 0.0
            em = torch.cat([em, last])
        em = em.contiguous()
        results = self._decoder.decode(em.data_ptr(), em.shape[0], em.shape[1])
        if not results:
            return ""
        best = max(results, key=lambda r: r.score)
        if not math.isfinite(best.score):  # every path went through an impossible frame
            return ""
        return " ".join(self.words[i] for i in best.words if i >= 0)

    def decode(self, log_probs: torch.Tensor, lengths: torch.Tensor | Sequence[int] | None
               ) -> list[str]:
        """Decode a padded batch.

        Args:
            log_probs: ``(batch, frames, vocab)`` CTC log-probabilities.
            lengths: ``(batch,)`` valid frames per utterance (``None``: all frames).

        Returns:
            One string per utterance, words separated by single spaces.
        """
        if log_probs.dim() != 3:
            raise ValueError(f"expected (batch, frames, vocab), got {tuple(log_probs.shape)}")
        batch, frames, _ = log_probs.shape
        lengths = [frames] * batch if lengths is None else torch.as_tensor(lengths).tolist()
        if len(lengths) != batch:
            raise ValueError(f"{len(lengths)} lengths for a batch of {batch}")
        return [self.decode_one(log_probs[b, :n]) for b, n in enumerate(lengths)]

    def decode_utterances(self, emissions: Mapping[str, torch.Tensor], desc: str | None = None) -> dict[str, str]:
        """Decode ``{utt_id: (frames, vocab) log-probs}`` into ``{utt_id: text}`` (a progress
        bar per utterance when ``desc`` is given)."""
        items = tqdm(emissions.items(), desc=desc, unit="utt", disable=desc is None, mininterval=2)
        return {utt: self.decode_one(lp) for utt, lp in items}


_WORKER_SEARCH: LexiconBeamSearch | None = None


def _init_worker(args: tuple, kwargs: dict) -> None:
    global _WORKER_SEARCH
    torch.set_num_threads(1)
    _WORKER_SEARCH = LexiconBeamSearch(*args, **kwargs)


def _decode_chunk(chunk: dict[str, torch.Tensor], params: dict) -> dict[str, str]:
    assert _WORKER_SEARCH is not None
    return _WORKER_SEARCH.configure(**params).decode_utterances(chunk)


class ParallelLexiconBeamSearch:
    """:class:`LexiconBeamSearch` over ``jobs`` processes: flashlight's decoder is single-threaded,
    and beam search, not the acoustic model, dominates decoding time on a CPU.

    Same constructor arguments as :class:`LexiconBeamSearch` after ``jobs``; each worker loads
    the LM and lexicon once. Use as a context manager (or call :meth:`close`).
    """

    def __init__(self, jobs: int, *args, **kwargs):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self.jobs = max(1, jobs)
        self.params: dict = {}
        self.pool = ProcessPoolExecutor(self.jobs, mp_context=multiprocessing.get_context("fork"),
                                        initializer=_init_worker, initargs=(args, kwargs))

    def configure(self, **changes) -> "ParallelLexiconBeamSearch":
        self.params.update(changes)
        return self

    def set_weights(self, lm_weight: float, word_score: float) -> "ParallelLexiconBeamSearch":
        return self.configure(lm_weight=lm_weight, word_score=word_score)

    def decode_utterances(self, emissions: Mapping[str, torch.Tensor], desc: str | None = None) -> dict[str, str]:
        from concurrent.futures import as_completed

        # longest first, dealt round-robin into small chunks so the workers finish together
        items = sorted(emissions.items(), key=lambda kv: -kv[1].shape[0])
        n_chunks = min(len(items), self.jobs * 4) or 1
        chunks = [dict(items[i::n_chunks]) for i in range(n_chunks)]
        out: dict[str, str] = {}
        futures = {self.pool.submit(_decode_chunk, c, dict(self.params)): len(c) for c in chunks}
        with tqdm(total=len(items), desc=desc, unit="utt", disable=desc is None, mininterval=2) as bar:
            for fut in as_completed(futures):
                out.update(fut.result())
                bar.update(futures[fut])
        return {k: out[k] for k in emissions}

    def close(self) -> None:
        self.pool.shutdown()

    def __enter__(self) -> "ParallelLexiconBeamSearch":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
