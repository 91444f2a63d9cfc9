"""Decoding speed on one CPU core: real-time factor of every decoder on the demo's logits,
with pyctcdecode beside our lexicon beam search + KenLM (same logits, same LM).

Reads what the decode stage left in a decode directory: ``emissions_<set>.pt`` (the CTC
log-probs, computed once) and ``decode.json`` (each decoder's weights, tuned on dev), so
every decoder runs at the setting the results table reports. RTF = decoding seconds /
audio seconds (20 ms per frame); the acoustic model is not timed. pyctcdecode's LM weight
``alpha`` and word bonus ``beta`` are tuned on dev (its first ``--tune-utts`` utterances) over a
2 x 2 grid, as ours were on a larger one.

    python bench/decode_speed.py --config egs/demo/config.yaml --decode-dir exp/demo/decode/scratch_1h \\
        --lexicon data/demo/lang/lexicon.txt --lm data/demo/lm/4gram/lm.bin --graph data/demo/graph \\
        --lm-nn exp/demo/lm_nn/model.pt
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from w2v import config as w2vconfig
from w2v.decode.ctc import greedy_decode
from w2v.decode.emissions import pad_emissions
from w2v.score.wer import score


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def timed(fn, emissions) -> tuple[dict, float]:
    t0 = time.perf_counter()
    hyps = fn(emissions)
    return hyps, time.perf_counter() - t0


def pyctcdecode_fn(units, lexicon, lm, alpha, beta, beam):
    from pyctcdecode import build_ctcdecoder

    labels = ["" if u == "<blank>" else " " if u == "|" else u for u in units]
    words = [line.split()[0] for line in Path(lexicon).read_text(encoding="utf-8").splitlines() if line.strip()]
    decoder = build_ctcdecoder(labels, kenlm_model_path=str(lm), unigrams=words, alpha=alpha, beta=beta)

    def run(emissions):
        return {u: " ".join(decoder.decode(e.numpy(), beam_width=beam).split()) for u, e in emissions.items()}

    return run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True)
    p.add_argument("--decode-dir", required=True, type=Path)
    p.add_argument("--lexicon", required=True)
    p.add_argument("--lm", required=True, help="KenLM binary (the lm stage's)")
    p.add_argument("--graph", default=None)
    p.add_argument("--lm-nn", default=None)
    p.add_argument("--set", default="test")
    p.add_argument("--no-pyctcdecode", action="store_true")
    p.add_argument("--beams", type=int, nargs="*", default=[], help="also time beam+LM at these beam sizes")
    p.add_argument("--tune-utts", type=int, default=20, help="dev utterances pyctcdecode's alpha/beta are tuned on")
    a = p.parse_args()
    torch.set_num_threads(1)  # one core, one worker

    cfg = w2vconfig.load(a.config)
    dc = cfg.get("decode", {})
    dec = json.loads((a.decode_dir / "decode.json").read_text())
    data = torch.load(a.decode_dir / f"emissions_{a.set}.pt", weights_only=False)
    dev = torch.load(a.decode_dir / f"emissions_{dc.get('dev_set', 'dev')}.pt", weights_only=False)
    units, refs = data["units"], data["refs"]
    em = dict(zip(data["ids"], data["emissions"]))
    audio = sum(e.shape[0] for e in em.values()) * 0.02
    rows = []

    def report(name, hyps, secs, note=""):
        res = score(refs, hyps)
        rows.append({"decoder": name, "wer_pct": round(res.wer_pct, 2), "rtf": round(secs / audio, 4),
                     "seconds": round(secs, 2), "note": note})
        print(f"{name:38s} WER {res.wer_pct:6.2f}%  RTF {secs / audio:.4f}  {note}", flush=True)

    print(f"{cpu_name()}, 1 thread; {a.set}: {len(em)} utterances, {audio / 60:.1f} min of audio, "
          f"{len(units)} units", flush=True)
    ids = list(em)
    hyps, secs = timed(lambda e: dict(zip(ids, greedy_decode(*pad_emissions([e[i] for i in ids]), units))), em)
    report("greedy", hyps, secs)

    decoders = dec["decoders"]
    beam_name = next((d for d in decoders if d.startswith("beam+")), None)
    if beam_name:
        from w2v.decode.lexicon import LexiconBeamSearch

        d = decoders[beam_name]
        for beam in [d["beam"]] + a.beams:
            search = LexiconBeamSearch(units, a.lexicon, a.lm, beam=beam, beam_threshold=d["beam_threshold"])
            search.set_weights(d["lm_weight"], d["word_score"])
            hyps, secs = timed(search.decode_utterances, em)
            report(beam_name, hyps, secs, f"beam {beam}, lm_weight {d['lm_weight']}, word_score {d['word_score']}")
    if a.graph and "hlg" in decoders:
        from w2v.decode.wfst import HLGDecoder

        d = decoders["hlg"]
        hlg = HLGDecoder(a.graph, beam=d["beam"], max_active=d["max_active"], acoustic_scale=d["acoustic_scale"])
        hyps, secs = timed(hlg.decode_utterances, em)
        report("hlg", hyps, secs, f"beam {d['beam']}, max_active {d['max_active']}, "
                                  f"acoustic_scale {d['acoustic_scale']}")
    rescorers = [n for n in decoders if n.startswith("hlg+nbest")]
    if a.graph and rescorers:
        from w2v.decode.rescore import NgramScorer, nbest_features, pick
        from w2v.decode.wfst import HLGDecoder

        n = dc.get("nbest", 20)
        d = decoders[rescorers[0]]
        hlg = HLGDecoder(a.graph, beam=d["beam"], max_active=d["max_active"], lattice_beam=d["lattice_beam"],
                         nbest_beam=d["nbest_beam"], acoustic_scale=d["acoustic_scale"])
        nbest, t_nbest = timed(lambda e: hlg.nbest_utterances(e, n), em)
        scorers = {"ngram": NgramScorer(a.lm)}
        for name in rescorers:
            d = decoders[name]
            weights = {"ngram": d["lm_weight"], "words": d["word_score"]}
            if name.endswith("transformer-lm"):
                from w2v.lm_nn import load_lm

                scorers["nnlm"] = load_lm(a.lm_nn)
                weights["nnlm"] = d["nn_weight"]
            feats, t_feats = timed(lambda nb: nbest_features(nb, scorers), nbest)
            report(name, pick(feats, weights), t_nbest + t_feats, f"n-best {n} (lattice {t_nbest:.1f}s)")

    if beam_name and not a.no_pyctcdecode:
        dev_em = dict(list(zip(dev["ids"], dev["emissions"]))[: a.tune_utts])
        dev_refs = {u: dev["refs"][u] for u in dev_em}
        beam = decoders[beam_name]["beam"]
        best = None
        for alpha in (0.5, 1.0):
            for beta in (0.0, 1.5):
                h = pyctcdecode_fn(units, a.lexicon, a.lm, alpha, beta, beam)(dev_em)
                errors = score(dev_refs, h).words.errors
                if best is None or errors < best[0]:
                    best = (errors, alpha, beta)
        run = pyctcdecode_fn(units, a.lexicon, a.lm, best[1], best[2], beam)
        hyps, secs = timed(run, em)
        report("pyctcdecode+4gram", hyps, secs, f"beam_width {beam}, alpha {best[1]}, beta {best[2]} (tuned on dev)")
    print(json.dumps({"cpu": cpu_name(), "threads": 1, "set": a.set, "audio_seconds": round(audio, 1),
                      "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
