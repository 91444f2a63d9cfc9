"""The ``w2v`` command line: one sub-command per recipe stage, plus tools for users.

Every Snakemake rule calls one of these; each writes its outputs atomically and exits with a
one-line error (no traceback) when its input is wrong.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger("w2v")
REPO = Path(__file__).resolve().parents[1]


def _cfg(path: str) -> dict:
    from w2v import config

    p = Path(path)
    if p.suffix == ".json":  # the resolved config the Snakefile writes
        return config.validate(json.loads(p.read_text(encoding="utf-8")), str(p))
    return config.load(p)


def _threads(n: int | None) -> None:
    import torch

    if n:
        torch.set_num_threads(n)


def _run_local(cfg: dict) -> None:
    """Run the recipe's corpus-making script (``local:``) into the corpus path, if it has one."""
    local = cfg.get("local")
    if not local:
        return
    corpus = cfg["corpus"] if isinstance(cfg["corpus"], dict) else cfg["corpus"][0]
    script = Path(local["script"])
    if not script.is_file() and (REPO / script).is_file():  # run from another working directory
        script = REPO / script
    cmd = [sys.executable, str(script), "--out", corpus["path"]]
    for k, v in (local.get("args") or {}).items():
        cmd += [f"--{k.replace('_', '-')}", str(v)]
    log.info("running %s", " ".join(cmd))
    if subprocess.run(cmd).returncode != 0:
        raise SystemExit(f"w2v prepare: {local['script']} failed (see its output above)")


def cmd_prepare(a) -> None:
    from w2v.data.ingest import prepare

    cfg = _cfg(a.config)
    _run_local(cfg)
    prepare(cfg["corpus"], Path(a.out), num_threads=a.jobs)


def cmd_cuts(a) -> None:
    from w2v.config import subset_seconds
    from w2v.data.cuts import make_cuts

    cfg = _cfg(a.config)
    c = cfg.get("cuts", {})
    subsets = {name: subset_seconds(name) for name in c.get("labeled_subsets", [])}
    kwargs = {k: c[k] for k in ("dev_speakers", "test_speakers", "min_duration", "max_duration", "seed") if k in c}
    make_cuts(Path(a.manifests), Path(a.out), labeled_subsets=subsets,
              normalize=cfg.get("text", {}).get("normalize", "upper_letters"), **kwargs)


def cmd_lang(a) -> None:
    from w2v.data.lang import build_lang

    cfg = _cfg(a.config)
    lm_text = cfg.get("lm", {}).get("text")
    build_lang(Path(a.cuts), Path(a.out), lm_text_path=Path(lm_text) if lm_text else None)


def cmd_lm(a) -> None:
    from w2v.lm import build_ngram

    cfg = _cfg(a.config)
    lm = cfg.get("lm", {})
    build_ngram(Path(a.text), Path(a.out), order=lm.get("order", 4), prune=lm.get("prune"))


def _train(a, task: str, settings: dict, **kwargs) -> None:
    from w2v.models import load_model_config
    from w2v.train.config import TrainConfig
    from w2v.train.loop import train

    cfg = _cfg(a.config)
    _threads(a.threads)
    where = f"{a.config} ({task} settings)"
    tcfg = TrainConfig.from_dict({"task": task, **settings}, where=where)
    if task == "pretrain":  # families with several stages (vq-wav2vec, HuBERT) run them all
        from w2v.train.steps import run_pretraining

        run_pretraining(tcfg, a.cuts, a.out, load_model_config(cfg["model"]), device=a.device or cfg.get("device"))
        return
    train(tcfg, a.cuts, a.out, load_model_config(cfg["model"]), device=a.device or cfg.get("device"), **kwargs)


def cmd_pretrain(a) -> None:
    cfg = _cfg(a.config)
    _train(a, "pretrain", cfg.get("pretrain", {}))


def cmd_finetune(a) -> None:
    from w2v.config import finetune_settings

    cfg = _cfg(a.config)
    settings = {k: v for k, v in finetune_settings(cfg, a.init_from, a.subset).items() if k != "task"}
    from w2v.config import pretrained_model

    init = None
    if a.init_from == "pretrained":
        init = Path(a.init or pretrained_model(cfg))
    _train(a, "finetune", settings, units_path=a.units, init=init, dev_cuts_path=a.dev)


def _cut_name(path: str) -> str:
    name = Path(path).name
    return name[: -len(".jsonl.gz")] if name.endswith(".jsonl.gz") else Path(path).stem


def _load_eval_set(path: str):
    from lhotse import load_manifest

    from w2v.data.cuts import transcript
    from w2v.train.loop import AudioStore

    cuts = list(load_manifest(path))
    store = AudioStore(cuts, cache=False)
    audio = [store[i] for i in range(len(cuts))]
    refs = {c.id: transcript(c) for c in cuts}
    return cuts, audio, refs


def _write_hyps(path: Path, ids: list[str], hyps: list[str]) -> None:
    from w2v.io import write_text

    write_text(path, "".join(f"{i}\t{h}\n" for i, h in zip(ids, hyps)))


def cmd_decode(a) -> None:
    from w2v.decode.ctc import greedy_decode
    from w2v.decode.emissions import compute_emissions, load_ctc_model, pad_emissions
    from w2v.decode.lexicon import ParallelLexiconBeamSearch
    from w2v.decode.tune import beam_search_decode_fn, grid_search, write_tuning_tsv
    from w2v.io import write_json
    from w2v.train.loop import resolve_device

    cfg = _cfg(a.config)
    _threads(a.threads)
    dc = cfg.get("decode", {})
    out = Path(a.out)
    device = resolve_device(a.device or cfg.get("device"))
    model, meta = load_ctc_model(a.model, device)
    units = meta["units"]
    normalize = meta["train_config"].get("normalize_audio", True)
    dev_name = dc.get("dev_set", "dev")
    sets = {}
    for path in a.cuts:
        name = _cut_name(path)
        cuts, audio, refs = _load_eval_set(path)
        t0 = time.time()
        em = compute_emissions(model, audio, normalize, dc.get("max_duration", 120.0), device, desc=f"{name} emissions")
        secs = sum(len(x) for x in audio) / 16000
        log.info("%s: %d utterances, %.1f min audio, acoustic model at %.0fx real time", name, len(cuts),
                 secs / 60, secs / max(1e-9, time.time() - t0))
        sets[name] = ([c.id for c in cuts], em, refs)
    if dev_name not in sets:
        raise SystemExit(f"w2v decode: the dev set {dev_name!r} (decode.dev_set) is not among --cuts {a.cuts}")

    result = {"model": str(a.model), "units": len(units), "decoders": {}}
    greedy = {}
    for name, (ids, em, _) in sets.items():
        hyps = greedy_decode(*pad_emissions(em), units)
        _write_hyps(out / "greedy" / f"hyp_{name}.txt", ids, hyps)
        greedy[name] = str(out / "greedy" / f"hyp_{name}.txt")
    result["decoders"]["greedy"] = {"lm": "none", "hyps": greedy}

    lm_name = f"{cfg.get('lm', {}).get('order', 4)}gram"
    beam = dict(beam=dc.get("beam", 500), beam_threshold=dc.get("beam_threshold", 25.0))
    with ParallelLexiconBeamSearch(a.threads or 1, units, a.lexicon, a.lm, **beam) as search:
        ids_dev, em_dev, refs_dev = sets[dev_name]
        t0 = time.time()
        best, table = grid_search(beam_search_decode_fn(search), dict(zip(ids_dev, em_dev)), refs_dev,
                                  dc.get("lm_weights", [0.5, 1.0, 2.0]), dc.get("word_scores", [-1.0, 0.0, 1.0]))
        log.info("tuned on %s in %.0fs (%d points): lm_weight=%s word_score=%s", dev_name, time.time() - t0,
                 len(table), best["lm_weight"], best["word_score"])
        write_tuning_tsv(table, out / lm_name / "tuning.tsv")
        search.set_weights(lm_weight=best["lm_weight"], word_score=best["word_score"])
        beam_hyps = {}
        for name, (ids, em, _) in sets.items():
            hyps = search.decode_utterances(dict(zip(ids, em)))
            _write_hyps(out / lm_name / f"hyp_{name}.txt", ids, [hyps[i] for i in ids])
            beam_hyps[name] = str(out / lm_name / f"hyp_{name}.txt")
    result["decoders"][lm_name] = {"lm": str(a.lm), "hyps": beam_hyps, "lm_weight": best["lm_weight"],
                                   "word_score": best["word_score"], "tuned_on": dev_name, **beam}
    result["refs"] = {name: str(p) for name, p in zip((_cut_name(p) for p in a.cuts), a.cuts)}
    write_json(out / "decode.json", result)


def cmd_score(a) -> None:
    from lhotse import load_manifest

    from w2v.data.cuts import transcript
    from w2v.io import write_json
    from w2v.score.wer import read_text_file, score, write_alignments, write_per_utt

    cfg = _cfg(a.config)
    dec = json.loads(Path(a.decode).read_text(encoding="utf-8"))
    exp_dir = Path(a.decode).parent
    init, _, subset = exp_dir.name.partition("_")
    dev_name = cfg.get("decode", {}).get("dev_set", "dev")
    refs = {}
    for name, path in dec["refs"].items():
        refs[name] = {c.id: transcript(c) for c in load_manifest(path)}
    summary = Path(next(iter(dec["refs"].values()))).with_name("cuts_summary.json")
    hours = json.loads(summary.read_text())["sets"]["pretrain"]["hours"] if summary.exists() else None
    pretrain_data = f"{cfg['recipe']} {hours:.1f} h" if hours is not None else f"{cfg['recipe']} unlabeled"
    if cfg.get("finetune", {}).get("init_from"):
        pretrain_data = f"imported {Path(cfg['finetune']['init_from']).stem}"
    rows = []
    for decoder, d in dec["decoders"].items():
        for name, hyp_path in d["hyps"].items():
            res = score(refs[name], read_text_file(hyp_path))
            write_alignments(res, Path(hyp_path).with_name(f"errs_{name}.txt"))
            write_per_utt(res, Path(hyp_path).with_name(f"per_utt_{name}.tsv"))
            rows.append({"model": Path(cfg["model"]).stem,
                         "pretrain_data": pretrain_data if init == "pretrained" else "none", "labeled": subset, "init": init, "decoder": decoder, "lm": d["lm"],
                         "test_set": name, "is_dev": name == dev_name, "lm_weight": d.get("lm_weight"),
                         "word_score": d.get("word_score"), "wer": res.wer, "cer": res.cer,
                         "num_words": res.ref_words, "num_utts": len(refs[name])})
            log.info("%s %s %s: WER %.2f%% CER %.2f%%", exp_dir.name, decoder, name, 100 * res.wer, 100 * res.cer)
    write_json(a.out, rows)


def cmd_report(a) -> None:
    from w2v.report import write_report

    cfg = _cfg(a.config)
    rows = []
    for p in a.scores:
        rows += json.loads(Path(p).read_text(encoding="utf-8"))
    write_report(rows, Path(a.out_md), Path(a.out_json), cfg=cfg)
    print(Path(a.out_md).read_text(encoding="utf-8"))


def cmd_transcribe(a) -> None:
    from lhotse import Recording

    from w2v.decode.ctc import greedy_decode
    from w2v.decode.emissions import compute_emissions, load_ctc_model, pad_emissions
    from w2v.train.loop import resolve_device

    _threads(a.threads)
    device = resolve_device(a.device)
    model, meta = load_ctc_model(a.checkpoint, device)
    units = meta["units"]
    audio = []
    for f in a.audio:
        try:
            rec = Recording.from_file(f)
            if rec.sampling_rate != 16000:
                rec = rec.resample(16000)
            x = rec.load_audio()
        except Exception as e:
            raise SystemExit(f"w2v transcribe: cannot read audio {f}: {e}")
        audio.append(x.mean(axis=0))
    em = compute_emissions(model, audio, meta["train_config"].get("normalize_audio", True), device=device)
    x, lengths = pad_emissions(em)
    if a.lm:
        from w2v.decode.lexicon import LexiconBeamSearch

        if not a.lexicon:
            raise SystemExit("w2v transcribe: --lm needs --lexicon (e.g. data/<recipe>/lang/lexicon.txt)")
        search = LexiconBeamSearch(units, a.lexicon, a.lm, beam=a.beam)
        search.set_weights(lm_weight=a.lm_weight, word_score=a.word_score)
        hyps = search.decode(x, lengths)
    else:
        hyps = greedy_decode(x, lengths, units)
    for f, h in zip(a.audio, hyps):
        print(f"{f}\t{h}")


def cmd_import_checkpoint(a) -> None:
    src = Path(a.src)
    if src.is_dir():
        from w2v.interop.hf import import_hf

        summary = import_hf(src, Path(a.out))
    elif src.is_file():
        from w2v.interop.fairseq import import_fairseq

        units = None
        if a.units:
            from w2v.decode.ctc import load_units

            units = load_units(a.units)
        summary = import_fairseq(src, Path(a.out), units=units)
    else:
        raise FileNotFoundError(f"{src}: neither a Hugging Face model directory nor a fairseq .pt file")
    print(json.dumps({k: v for k, v in summary.items() if k != "units"}, indent=2, default=str))


def cmd_export_units(a) -> None:
    from w2v.train.loop import resolve_device
    from w2v.train.targets import export_vq_units

    _threads(a.threads)
    print(export_vq_units(a.model, a.cuts, a.out, resolve_device(a.device)))


def cmd_hubert_labels(a) -> None:
    from w2v.models import load_model_config
    from w2v.train.loop import resolve_device
    from w2v.train.targets import make_hubert_labels

    _threads(a.threads)
    cfg = load_model_config(a.model_config)
    if getattr(cfg, "family", "") != "hubert":
        raise ValueError(f"{a.model_config}: not a HuBERT preset (family: hubert)")
    iteration = 2 if a.model else 1  # targets from a model are the next iteration's
    clusters = list(cfg.kmeans_clusters)
    clusters += clusters[-1:] * (iteration - len(clusters))
    if a.clusters:
        clusters[iteration - 1] = a.clusters
    cfg = cfg.replace(kmeans_clusters=clusters, iteration=iteration)
    if a.layer is not None:
        cfg = cfg.replace(label_layer=a.layer)
    print(make_hubert_labels(a.cuts, a.out, cfg, a.model, seed=a.seed, device=resolve_device(a.device)))


def cmd_export_hf(a) -> None:
    from w2v.interop.hf import export_hf

    print(export_hf(Path(a.checkpoint), Path(a.out_dir)))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="w2v", description="wav2vec-family recipes: one sub-command per stage.")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    def add(name, fn, help, required=(), config=True):
        """A sub-command; ``--config`` (the recipe) and the ``required`` options take one value each."""
        s = sub.add_parser(name, help=help)
        s.set_defaults(fn=fn)
        for opt in (["--config"] if config else []) + list(required):
            s.add_argument(opt, required=True)
        return s

    def compute(s):
        s.add_argument("--threads", type=int, default=None)
        s.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:1, ...")

    add("prepare", cmd_prepare, "corpus on disk -> lhotse manifests", ["--out"]).add_argument(
        "--jobs", type=int, default=4)
    add("cuts", cmd_cuts, "manifests -> 16 kHz mono CutSets and subsets", ["--manifests", "--out"])
    add("lang", cmd_lang, "units, lexicon and LM text (units from the --cuts transcripts)", ["--cuts", "--out"])
    add("lm", cmd_lm, "n-gram KenLM from the LM text", ["--text", "--out"])
    compute(add("pretrain", cmd_pretrain, "self-supervised pre-training", ["--cuts", "--out"]))
    s = add("finetune", cmd_finetune, "CTC fine-tuning on a labeled subset", ["--cuts", "--out", "--subset", "--units"])
    compute(s)
    s.add_argument("--init-from", choices=["pretrained", "scratch"], default="pretrained")
    s.add_argument("--init", default=None, help="pre-trained model.pt (default: finetune.init_from, else the recipe's)")
    s.add_argument("--dev", default=None, help="dev cuts for picking the best checkpoint")
    s = add("decode", cmd_decode, "greedy and lexicon beam search + n-gram, tuned on dev",
            ["--model", "--lexicon", "--lm", "--out"])
    s.add_argument("--cuts", required=True, nargs="+", help="the dev set and the test sets")
    compute(s)
    add("score", cmd_score, "WER/CER with per-utterance alignments", ["--decode", "--out"])
    s = add("report", cmd_report, "results.md and results.json", ["--out-md", "--out-json"])
    s.add_argument("--scores", required=True, nargs="+")
    s = add("import-checkpoint", cmd_import_checkpoint,
            "a Hugging Face model directory or a fairseq .pt -> w2v model.pt", config=False)
    s.add_argument("src", help="HF directory (config.json + safetensors/bin) or fairseq checkpoint .pt")
    s.add_argument("out", help="model.pt to write")
    s.add_argument("--units", default=None, help="fairseq CTC: units.txt (default: dict.ltr.txt beside SRC)")
    s = add("export-units", cmd_export_units, "vq-wav2vec: discrete units per cut (jsonl, or text for .txt)",
            ["--model", "--cuts", "--out"], config=False)
    compute(s)
    s = add("hubert-labels", cmd_hubert_labels, "HuBERT k-means targets per cut: MFCCs, or --model's --layer",
            ["--model-config", "--cuts", "--out"], config=False)
    s.add_argument("--model", default=None, help="previous iteration's pre-trained model.pt (default: MFCC targets)")
    s.add_argument("--layer", type=int, default=None, help="Transformer layer to cluster (default: the preset's)")
    s.add_argument("--clusters", type=int, default=None, help="k (default: the preset's for this iteration)")
    s.add_argument("--seed", type=int, default=1)
    compute(s)
    s = add("export-hf", cmd_export_hf, "w2v model.pt -> a directory transformers loads", config=False)
    s.add_argument("checkpoint")
    s.add_argument("out_dir")
    s = add("transcribe", cmd_transcribe, "print a transcript per audio file", config=False)
    s.add_argument("checkpoint")
    s.add_argument("audio", nargs="+")
    s.add_argument("--lm", default=None, help="KenLM binary for lexicon beam search")
    s.add_argument("--lexicon", default=None)
    s.add_argument("--lm-weight", type=float, default=1.0)
    s.add_argument("--word-score", type=float, default=0.0)
    s.add_argument("--beam", type=int, default=500)
    compute(s)
    return p


def main(argv: list[str] | None = None) -> None:
    from w2v.io import setup_logging

    args = build_parser().parse_args(argv)
    setup_logging(level=logging.DEBUG if args.verbose else logging.INFO)
    try:
        args.fn(args)
    except KeyboardInterrupt:
        raise SystemExit("w2v: interrupted; rerun the same command to resume")
    except (ValueError, FileNotFoundError, RuntimeError, OSError) as e:
        if args.verbose:
            raise
        raise SystemExit(f"w2v {args.command}: error: {e}")


if __name__ == "__main__":
    main()
