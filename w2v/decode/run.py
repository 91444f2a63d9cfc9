"""The decode stage's decoders, one results-table row each, all sharing one set of emissions.

Names (``decode.decoders`` in a recipe config):

* ``greedy``: best path, no LM.
* ``beam+<N>gram``: flashlight-text lexicon beam search with the lm stage's KenLM (N = lm.order).
* ``hlg``: WFST decoding over the graph stage's HLG (its pruned first-pass n-gram).
* ``hlg+nbest-<N>gram``: HLG n-best, rescored with the lm stage's N-gram.
* ``hlg+nbest-<N>gram+transformer-lm``: the same plus the lm_nn stage's Transformer LM.

Every LM weight (and HLG's acoustic scale) is tuned on the dev set, then applied to every set.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Mapping, Sequence

from w2v.io import write_text

__all__ = ["DEFAULT_DECODERS", "parse_decoder", "run_decoders"]

log = logging.getLogger(__name__)

DEFAULT_DECODERS = ("greedy", "beam+{order}gram")
_PATTERNS = {
    "greedy": r"greedy",
    "beam": r"beam\+(\d+)gram",
    "hlg": r"hlg",
    "nbest": r"hlg\+nbest-(\d+)gram",
    "nbest_nn": r"hlg\+nbest-(\d+)gram\+transformer-lm",
}


def parse_decoder(name: str, lm_order: int) -> str:
    """The kind of a decoder name (a key of ``_PATTERNS``).

    Raises:
        ValueError: an unknown name, or an n-gram order other than the lm stage's.
    """
    for kind, pattern in _PATTERNS.items():
        m = re.fullmatch(pattern, name)
        if m:
            if m.groups() and int(m.group(1)) != lm_order:
                raise ValueError(f"decoder {name!r}: the lm stage builds a {lm_order}-gram (lm.order)")
            return kind
    raise ValueError(f"unknown decoder {name!r}; expected one of greedy, beam+{lm_order}gram, hlg, "
                     f"hlg+nbest-{lm_order}gram, hlg+nbest-{lm_order}gram+transformer-lm")


def needs(decoders: Sequence[str], lm_order: int) -> set[str]:
    """Which inputs the decoders need: ``lexicon``, ``lm``, ``graph``, ``lm_nn``."""
    kinds = {parse_decoder(d, lm_order) for d in decoders}
    out = set()
    if "beam" in kinds:
        out |= {"lexicon", "lm"}
    if kinds & {"hlg", "nbest", "nbest_nn"}:
        out.add("graph")
    if kinds & {"nbest", "nbest_nn"}:
        out.add("lm")
    if "nbest_nn" in kinds:
        out.add("lm_nn")
    return out


def _write_hyps(path: Path, ids: Sequence[str], hyps: Mapping[str, str] | Sequence[str]) -> str:
    texts = [hyps[i] for i in ids] if isinstance(hyps, Mapping) else list(hyps)
    write_text(path, "".join(f"{i}\t{h}\n" for i, h in zip(ids, texts)))
    return str(path)


def _tsv(table: Sequence[Mapping], path: Path) -> None:
    keys = list(table[0])
    rows = ["\t".join(keys)] + ["\t".join(f"{r[k]:.4g}" if isinstance(r[k], float) else str(r[k]) for k in keys)
                                for r in table]
    write_text(path, "\n".join(rows) + "\n")


def run_decoders(decoders: Sequence[str], sets: Mapping[str, tuple], units: Sequence[str], dev_name: str,
                 out: Path, dc: Mapping, lm_order: int, lexicon: str | None = None, lm: str | None = None,
                 graph: str | None = None, lm_nn: str | None = None, threads: int = 1) -> dict:
    """Run every decoder over ``sets`` (``{name: (ids, emissions, refs)}``) and write hypotheses.

    Returns:
        ``{decoder: {"lm", "hyps": {set: path}, "lm_weight", "word_score", "rtf", ...}}``.
    """
    from w2v.decode.ctc import greedy_decode
    from w2v.decode.emissions import pad_emissions

    kinds = {d: parse_decoder(d, lm_order) for d in decoders}
    audio_sec = {name: sum(e.shape[0] for e in em) * 0.02 for name, (_, em, _) in sets.items()}
    total_sec = sum(audio_sec.values()) or 1.0
    result: dict[str, dict] = {}
    ids_dev, em_dev, refs_dev = sets[dev_name]

    for name in decoders:
        if kinds[name] == "greedy":
            t0 = time.time()
            hyps = {s: _write_hyps(out / name / f"hyp_{s}.txt", ids, greedy_decode(*pad_emissions(em), units))
                    for s, (ids, em, _) in sets.items()}
            result[name] = {"lm": "none", "hyps": hyps, "rtf": (time.time() - t0) / total_sec}
        elif kinds[name] == "beam":
            result[name] = _beam(name, sets, units, dev_name, out, dc, lexicon, lm, threads, total_sec)

    if any(k in ("hlg", "nbest", "nbest_nn") for k in kinds.values()):
        from w2v.decode.wfst import HLGDecoder

        backend = dc.get("wfst_backend", "kaldi")
        knobs = dict(beam=dc.get("hlg_beam", 10.0), max_active=dc.get("max_active", 300),
                     lattice_beam=dc.get("lattice_beam", 3.0), nbest_beam=dc.get("nbest_beam", 8.0))
        scales = dc.get("acoustic_scales", [1.0, 2.0, 3.0])
        if "hlg" in kinds.values():
            from w2v.score.wer import score

            t0 = time.time()
            trials = []
            for a in scales:
                dec = HLGDecoder(graph, acoustic_scale=a, backend=backend, **knobs)
                trials.append((score(refs_dev, dec.decode_utterances(dict(zip(ids_dev, em_dev)))).words.errors, a))
            best_scale = min(trials)[1]
            dec = HLGDecoder(graph, acoustic_scale=best_scale, backend=backend, **knobs)
            t1 = time.time()
            first_pass = {s: dec.decode_utterances(dict(zip(ids, em))) for s, (ids, em, _) in sets.items()}
            hyps = {s: _write_hyps(out / "hlg" / f"hyp_{s}.txt", ids, first_pass[s])
                    for s, (ids, _, _) in sets.items()}
            log.info("hlg: acoustic scale %s (dev errors %s), tuned in %.0fs", best_scale, dict((a, e) for e, a in trials),
                     t1 - t0)
            result["hlg"] = {"lm": str(Path(graph) / "HLG.fst"), "hyps": hyps, "acoustic_scale": best_scale,
                             "rtf": (time.time() - t1) / total_sec, "backend": backend, **knobs}
        rescorers = [d for d in decoders if kinds[d] in ("nbest", "nbest_nn")]
        if rescorers:
            # the lattice is cut at the acoustic scale tuned for hlg, unless one is set
            scale = dc.get("nbest_acoustic_scale", result.get("hlg", {}).get("acoustic_scale", 1.0))
            result.update(_rescore(rescorers, kinds, sets, dev_name, out, dc, graph, lm, lm_nn, knobs, backend,
                                   total_sec, scale, first_pass if "hlg" in result and scale == best_scale else None))
    return {d: result[d] for d in decoders}


def _beam(name, sets, units, dev_name, out, dc, lexicon, lm, threads, total_sec) -> dict:
    from w2v.decode.lexicon import ParallelLexiconBeamSearch
    from w2v.decode.tune import beam_search_decode_fn, grid_search, write_tuning_tsv

    beam = dict(beam=dc.get("beam", 500), beam_threshold=dc.get("beam_threshold", 25.0))
    ids_dev, em_dev, refs_dev = sets[dev_name]
    with ParallelLexiconBeamSearch(threads or 1, units, lexicon, lm, **beam) as search:
        t0 = time.time()
        best, table = grid_search(beam_search_decode_fn(search), dict(zip(ids_dev, em_dev)), refs_dev,
                                  dc.get("lm_weights", [0.5, 1.0, 2.0]), dc.get("word_scores", [-1.0, 0.0, 1.0]))
        log.info("%s: tuned on %s in %.0fs (%d points): lm_weight=%s word_score=%s", name, dev_name,
                 time.time() - t0, len(table), best["lm_weight"], best["word_score"])
        write_tuning_tsv(table, out / name / "tuning.tsv")
        search.set_weights(lm_weight=best["lm_weight"], word_score=best["word_score"])
        t1 = time.time()
        hyps = {s: _write_hyps(out / name / f"hyp_{s}.txt", ids, search.decode_utterances(dict(zip(ids, em))))
                for s, (ids, em, _) in sets.items()}
    return {"lm": str(lm), "hyps": hyps, "lm_weight": best["lm_weight"], "word_score": best["word_score"],
            "tuned_on": dev_name, "tuning": str(out / name / "tuning.tsv"),
            "rtf": (time.time() - t1) * max(1, threads) / total_sec, **beam}


def _rescore(rescorers, kinds, sets, dev_name, out, dc, graph, lm, lm_nn, knobs, backend, total_sec,
             scale: float, first_pass: dict | None = None) -> dict:
    """N-best rescoring rows. ``first_pass``: the hlg row's hypotheses per set (same lattice
    scale); when the best rescoring weights still do worse on dev than that first pass (a model
    that is mostly blanks, an LM that does not fit), the first pass is kept: rescoring never
    makes dev worse than the graph it rescores."""
    from w2v.decode.rescore import NgramScorer, nbest_features, pick, tune_weights
    from w2v.decode.wfst import HLGDecoder

    n = dc.get("nbest", 20)
    dec = HLGDecoder(graph, acoustic_scale=scale, backend=backend, **knobs)
    t0 = time.time()
    nbest = {s: dec.nbest_utterances(dict(zip(ids, em)), n) for s, (ids, em, _) in sets.items()}
    t_nbest = time.time() - t0
    scorers: dict[str, object] = {"ngram": NgramScorer(lm)}
    if any(kinds[d] == "nbest_nn" for d in rescorers):
        from w2v.lm_nn import load_lm

        scorers["nnlm"] = load_lm(lm_nn)
    feats = {s: nbest_features(nb, {}) for s, nb in nbest.items()}
    t_feats = {}
    for key, scorer in scorers.items():  # one scorer at a time, to time each
        t0 = time.time()
        for s, nb in nbest.items():
            for rows, more in zip(feats[s].values(), nbest_features(nb, {key: scorer}).values()):
                for row, extra in zip(rows, more):
                    row[key] = extra[key]
        t_feats[key] = time.time() - t0
    lm_w = dc.get("rescore_lm_weights", [0.0, 0.25, 0.5, 1.0])
    ws = dc.get("rescore_word_scores", [-1.0, 0.0, 1.0, 2.0])
    nn_w = dc.get("rescore_nn_weights", [0.0, 0.25, 0.5, 1.0])
    result = {}
    for name in rescorers:
        grid = {"ngram": lm_w, "words": ws}
        if kinds[name] == "nbest_nn":
            grid["nnlm"] = nn_w
        best, table = tune_weights(feats[dev_name], sets[dev_name][2], grid)
        _tsv(table, out / name / "tuning.tsv")
        weights = {k: best[k] for k in grid}
        log.info("%s: n-best %d, weights tuned on %s: %s (dev WER %.2f%%)", name, n, dev_name, weights,
                 100 * best["wer"])
        chosen = {s: pick(f, weights) for s, f in feats.items()}
        kept = False
        if first_pass is not None:
            from w2v.score.wer import score

            fp_errors = score(sets[dev_name][2], first_pass[dev_name]).words.errors
            if fp_errors < best["errors"]:
                log.warning("%s: the best rescoring weights make %d errors on %s, the first pass %d: keeping the "
                            "first pass", name, best["errors"], dev_name, fp_errors)
                chosen, kept = first_pass, True
        hyps = {s: _write_hyps(out / name / f"hyp_{s}.txt", sets[s][0], chosen[s]) for s in feats}
        spent = t_nbest + sum(t for k, t in t_feats.items() if k in grid)
        result[name] = {"lm": str(lm) + (f" + {lm_nn}" if kinds[name] == "nbest_nn" else ""), "hyps": hyps,
                        "lm_weight": weights["ngram"], "word_score": weights["words"],
                        "nn_weight": weights.get("nnlm"), "nbest": n, "tuned_on": dev_name, "first_pass_kept": kept,
                        "rtf": spent / total_sec, "acoustic_scale": scale, **knobs}
    return result
