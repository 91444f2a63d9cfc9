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
    lang = cfg.get("lang", {})
    build_lang(Path(a.cuts), Path(a.out), lm_text_path=Path(lm_text) if lm_text else None,
               units=lang.get("units", "char"), vocab_size=lang.get("vocab_size", 500),
               phone_lexicon=Path(lang["lexicon"]) if lang.get("lexicon") else None)


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


def cmd_decode(a) -> None:
    from w2v.decode.emissions import compute_emissions, load_ctc_model
    import torch

    from w2v.decode.run import DEFAULT_DECODERS, needs, run_decoders
    from w2v.io import atomic_path, write_json
    from w2v.train.loop import resolve_device

    cfg = _cfg(a.config)
    _threads(a.threads)
    dc = cfg.get("decode", {})
    lm_order = cfg.get("lm", {}).get("order", 4)
    decoders = dc.get("decoders") or [d.format(order=lm_order) for d in DEFAULT_DECODERS]
    inputs = {"lexicon": a.lexicon, "lm": a.lm, "graph": a.graph, "lm_nn": a.lm_nn}
    lacking = sorted(k for k in needs(decoders, lm_order) if not inputs[k])
    if lacking:
        raise SystemExit(f"w2v decode: decoders {decoders} need " + ", ".join(f"--{k.replace('_', '-')}" for k in lacking))
    for k in needs(decoders, lm_order):
        if not Path(inputs[k]).exists():
            raise FileNotFoundError(f"{k} not found: {inputs[k]}")
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
        with atomic_path(out / f"emissions_{name}.pt") as tmp:  # for re-decoding and bench/decode_speed.py
            torch.save({"ids": sets[name][0], "emissions": em, "refs": refs, "units": units}, tmp)
    if dev_name not in sets:
        raise SystemExit(f"w2v decode: the dev set {dev_name!r} (decode.dev_set) is not among --cuts {a.cuts}")
    result = {"model": str(a.model), "units": len(units),
              "decoders": run_decoders(decoders, sets, units, dev_name, out, dc, lm_order, threads=a.threads or 1,
                                       **inputs)}
    result["refs"] = {name: str(p) for name, p in zip((_cut_name(p) for p in a.cuts), a.cuts)}
    write_json(out / "decode.json", result)


def cmd_graph(a) -> None:
    from w2v.decode.graph import build_hlg
    from w2v.lm import build_ngram

    cfg = _cfg(a.config)
    g = cfg.get("graph", {})
    arpa = g.get("arpa")
    if not arpa:  # the first-pass LM: a smaller (lower order, pruned) n-gram than the rescoring one
        build_ngram(Path(a.text), Path(a.out) / "lm", order=g.get("order", 3), prune=g.get("prune"), keep_arpa=True)
        arpa = Path(a.out) / "lm" / "lm.arpa"
    build_hlg(Path(a.units), Path(a.lexicon), Path(arpa), Path(a.out), max_order=g.get("max_order", -1))


def cmd_lm_nn(a) -> None:
    from w2v.lm_nn import LMConfig, train_lm

    cfg = _cfg(a.config)
    _threads(a.threads or 1)
    train_lm(Path(a.text), Path(a.out), LMConfig(**cfg.get("lm_nn", {})), dev_text=a.dev_text)


def cmd_score(a) -> None:
    from lhotse import load_manifest

    from w2v.data.cuts import transcript
    from w2v.io import write_json
    from w2v.score.details import fold, read_fold_map, score_details, write_details
    from w2v.score.wer import read_text_file, score, write_alignments, write_per_utt

    cfg = _cfg(a.config)
    dec = json.loads(Path(a.decode).read_text(encoding="utf-8"))
    exp_dir = Path(a.decode).parent
    init, _, subset = exp_dir.name.partition("_")
    dev_name = cfg.get("decode", {}).get("dev_set", "dev")
    lang = cfg.get("lang", {})
    fold_path = a.fold_map or cfg.get("score", {}).get("fold_map")
    fold_map = read_fold_map(fold_path) if fold_path else {}
    phones = None  # phone units: greedy output is phones, scored as PER against the lexicon's spelling
    if lang.get("units") == "phone":
        from w2v.data.units import read_phone_lexicon

        phones = read_phone_lexicon(Path(lang["lexicon"]))
    refs, speakers, languages = {}, {}, {}
    for name, path in dec["refs"].items():
        cuts = list(load_manifest(path))
        refs[name] = {c.id: transcript(c) for c in cuts}
        for c in cuts:
            sup = c.supervisions[0] if c.supervisions else None
            speakers[c.id] = (sup and sup.speaker) or ""
            if sup and sup.language:
                languages[c.id] = sup.language
    summary = Path(next(iter(dec["refs"].values()))).with_name("cuts_summary.json")
    hours = json.loads(summary.read_text())["sets"]["pretrain"]["hours"] if summary.exists() else None
    pretrain_data = f"{cfg['recipe']} {hours:.1f} h" if hours is not None else f"{cfg['recipe']} unlabeled"
    if cfg.get("finetune", {}).get("init_from"):
        pretrain_data = f"imported {Path(cfg['finetune']['init_from']).stem}"
    rows = []
    for decoder, d in dec["decoders"].items():
        metric = "PER" if phones is not None and decoder == "greedy" else "WER"
        for name, hyp_path in d["hyps"].items():
            ref = refs[name]
            if metric == "PER":
                from w2v.data.units import words_to_phones

                try:
                    ref = {k: words_to_phones(v, phones) for k, v in ref.items()}
                except KeyError as e:
                    raise ValueError(f"{dec['refs'][name]}: {e.args[0]} ({lang['lexicon']})") from None
            hyp = read_text_file(hyp_path)
            if fold_map:
                ref = {k: fold(v, fold_map) for k, v in ref.items()}
                hyp = {k: fold(v, fold_map) for k, v in hyp.items()}
            res = score(ref, hyp)
            write_alignments(res, Path(hyp_path).with_name(f"errs_{name}.txt"))
            write_per_utt(res, Path(hyp_path).with_name(f"per_utt_{name}.tsv"))
            details = score_details(res, speakers, languages, metric)
            write_details(details, Path(hyp_path).with_name(f"score_{name}.md"),
                          Path(hyp_path).with_name(f"score_{name}.json"), f"{exp_dir.name} {decoder} {name}")
            rows.append({"model": Path(cfg["model"]).stem,
                         "pretrain_data": pretrain_data if init == "pretrained" else "none", "labeled": subset,
                         "init": init, "decoder": decoder, "lm": d["lm"], "metric": metric,
                         "test_set": name, "is_dev": name == dev_name, "lm_weight": d.get("lm_weight"),
                         "word_score": d.get("word_score"), "wer": res.wer, "cer": res.cer, "rtf": d.get("rtf"),
                         "num_words": res.ref_words, "num_utts": len(refs[name])})
            log.info("%s %s %s: %s %.2f%% CER %.2f%%", exp_dir.name, decoder, name, metric, 100 * res.wer,
                     100 * res.cer)
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
    s = add("graph", cmd_graph, "HLG decoding graph (first-pass n-gram from --text)",
            ["--units", "--lexicon", "--text", "--out"])
    s = add("lm-nn", cmd_lm_nn, "Transformer LM for n-best rescoring", ["--text", "--out"])
    s.add_argument("--dev-text", default=None, help="sentences to report perplexity on")
    s.add_argument("--threads", type=int, default=1)
    s = add("decode", cmd_decode, "every decode.decoders row (greedy, beam+4gram, hlg, n-best rescoring)",
            ["--model", "--out"])
    s.add_argument("--cuts", required=True, nargs="+", help="the dev set and the test sets")
    for opt in ("--lexicon", "--lm", "--graph", "--lm-nn"):
        s.add_argument(opt, default=None)
    compute(s)
    s = add("score", cmd_score, "WER/CER/PER, alignments, per-speaker/language breakdowns", ["--decode", "--out"])
    s.add_argument("--fold-map", default=None, help="FROM TO per line, applied to references and hypotheses")
    s = add("report", cmd_report, "results.md and results.json", ["--out-md", "--out-json"])
    s.add_argument("--scores", required=True, nargs="+")
    s = add("import-checkpoint", cmd_import_checkpoint,
            "a Hugging Face model directory or a fairseq .pt -> w2v model.pt", config=False)
    s.add_argument("src", help="HF directory (config.json + safetensors/bin) or fairseq checkpoint .pt")
    s.add_argument("out", help="model.pt to write")
    s.add_argument("--units", default=None, help="fairseq CTC: units.txt (default: dict.ltr.txt beside SRC)")
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
