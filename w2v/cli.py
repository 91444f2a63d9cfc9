"""The ``w2v`` command line: one sub-command per recipe stage, plus tools for users.

Every Snakemake rule calls one of these; each writes its outputs atomically and exits with a
one-line error (no traceback) when its input is wrong.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import subprocess
import sys
import textwrap
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
    subsets = {name: subset_seconds(name) if re.fullmatch(r"\d+(\.\d+)?[smh]", name) else None
               for name in c.get("labeled_subsets", [])}
    kwargs = {k: c[k] for k in ("dev_speakers", "test_speakers", "min_duration", "max_duration", "seed") if k in c}
    make_cuts(Path(a.manifests), Path(a.out), labeled_subsets=subsets,
              normalize=cfg.get("text", {}).get("normalize", "upper_letters"), **kwargs)


def cmd_lang(a) -> None:
    from w2v.data.lang import build_lang

    cfg = _cfg(a.config)
    lm_text = cfg.get("lm", {}).get("text")
    lang = cfg.get("lang", {})
    build_lang(Path(a.cuts), Path(a.out), lm_text_path=Path(lm_text) if lm_text else None,
               normalize=cfg.get("text", {}).get("normalize", "upper_letters"),
               units=lang.get("units", "char"), vocab_size=lang.get("vocab_size", 500),
               phone_lexicon=Path(lang["lexicon"]) if lang.get("lexicon") else None)


def cmd_lm(a) -> None:
    from w2v.lm import build_ngram

    cfg = _cfg(a.config)
    lm = cfg.get("lm", {})
    if lm.get("arpa"):  # a ready-made model (the official LibriSpeech 4-gram): only binarised
        from w2v.lm import binarize_arpa

        binarize_arpa(Path(lm["arpa"]), Path(a.out))
        return
    build_ngram(Path(a.text), Path(a.out), order=lm.get("order", 4), prune=lm.get("prune"))


def _train(a, task: str, settings: dict, **kwargs) -> None:
    from w2v.models import load_model_config
    from w2v.train.config import TrainConfig
    from w2v.train.loop import train

    cfg = _cfg(a.config)
    gpus = a.gpus or cfg.get("gpus", 1)
    if gpus > 1 and "WORLD_SIZE" not in os.environ:  # relaunch this command as `gpus` DDP processes
        from w2v.train.distributed import launch

        rc = launch(gpus, a.argv)
        if rc != 0:
            raise SystemExit(f"w2v {task}: {gpus} training processes under torchrun failed (exit status {rc}); "
                             "each failed rank's error is above. Rerun the same command to resume")
        return
    _threads(a.threads and max(1, a.threads // int(os.environ.get("WORLD_SIZE", 1))))  # threads per process
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


def cmd_decode(a) -> None:
    from w2v.decode.emissions import compute_emissions, load_ctc_model, runs_in_bf16, use_fast_paths
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
    # a model trained with matmul convolutions decodes with them (the same function), unless told
    gpu = runs_in_bf16(device)
    use_fast_paths(model, dc.get("matmul_conv", meta["train_config"].get("matmul_conv", False)),
                   dc.get("compile", False), where=f"{a.config} [{a.model}]", half_weights=gpu,
                   gelu_epilogue=gpu and dc.get("gelu_epilogue", True))
    units = meta["units"]
    normalize = meta["train_config"].get("normalize_audio", True)
    dev_name = dc.get("dev_set", "dev")
    sets = {}
    for path in a.cuts:
        name = _cut_name(path)
        cuts, audio, refs = _load_eval_set(path)
        t0 = time.time()
        em = compute_emissions(model, audio, normalize, dc.get("max_duration", 120.0), device, desc=f"{name} emissions",
                               ids=[c.id for c in cuts])
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
    from w2v.config import pretrained_model
    from w2v.html_report import build_html_report
    from w2v.report import group_rows, load_paper_results, paper_matches, write_report

    cfg = _cfg(a.config)
    records = []
    for p in a.scores:
        records += json.loads(Path(p).read_text(encoding="utf-8"))
    rows = group_rows(records)
    paper = cfg.get("paper") or load_paper_results(a.paper)
    out_md = Path(a.out_md)
    html_dir = Path(a.html_dir) if a.html_dir else out_md.parent / "report"
    summary = build_html_report(rows, html_dir, exp_dir=Path(a.exp_dir) if a.exp_dir else out_md.parent, cfg=cfg,
                                paper_rows=paper, pretrained=a.pretrained or pretrained_model(cfg),
                                dev_cuts=a.dev_cuts, codebook_utterances=a.codebook_utts)
    matched = [p for p in paper if any(p in paper_matches(r, [p]) for r in rows)]
    rel = Path(os.path.relpath(html_dir, out_md.parent))
    write_report(rows, out_md, Path(a.out_json), cfg=cfg, paper_rows=matched,
                 figures={(rel / k).as_posix(): v for k, v in summary["figures"].items()})
    print(out_md.read_text(encoding="utf-8"))
    for note in summary["missing"]:
        log.info("not in the report: %s", note)
    log.info("report page: %s", html_dir / "index.html")


def cmd_transcribe(a) -> None:
    from lhotse import Recording

    from w2v.decode.ctc import greedy_decode
    from w2v.decode.emissions import compute_emissions, load_ctc_model, pad_emissions
    from w2v.train.loop import resolve_device

    _threads(a.threads)
    device = resolve_device(a.device)
    model, meta = load_ctc_model(a.checkpoint, device, lang=a.lang)
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
        summary = import_fairseq(src, Path(a.out), units=units, trust=a.trust_checkpoint)
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


def cmd_new_recipe(a) -> None:
    from w2v.scaffold import new_recipe

    for path in new_recipe(a.name, Path(a.root)):
        print(path)


def cmd_bench(a) -> None:
    from w2v.bench import data, gpu, loop

    {"data": data.main, "loop": loop.main}.get(a.what, gpu.main)(a.rest)


_CONFIG_HELP = "the recipe: egs/<corpus>/config.yaml, or the merged exp/<recipe>/config.json the Snakefile writes"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="w2v", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="wav2vec-family recipes: one sub-command per recipe stage (the Snakefile calls them in order:\n"
                    "prepare, cuts, lang, lm, pretrain, finetune, decode, score, report), plus tools for users\n"
                    "(transcribe, import-checkpoint, export-hf). `w2v COMMAND --help` tells more.",
        epilog="examples:\n"
               "  snakemake -c2 --configfile=egs/demo/config.yaml            # every stage of the demo recipe\n"
               "  w2v transcribe exp/demo/finetune/pretrained_1h/model.pt a.flac\n"
               "  w2v report --config exp/demo/config.json --scores exp/demo/decode/*/scores.json \\\n"
               "      --out-md exp/demo/results.md --out-json exp/demo/results.json")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging, and a traceback on errors")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name, fn, help, example, required=(), config=True, description=None):
        """A sub-command: ``--config`` (the recipe) and each ``(option, help)`` of ``required``
        take one value each; ``example`` is the epilog."""
        lines = textwrap.wrap(example, 96, break_on_hyphens=False, break_long_words=False)
        s = sub.add_parser(name, help=help, formatter_class=argparse.RawDescriptionHelpFormatter,
                           description=textwrap.fill(description or help[0].upper() + help[1:] + ".", 100),
                           epilog="example:\n  " + " \\\n    ".join(lines))
        s.set_defaults(fn=fn)
        for opt, text in ([("--config", _CONFIG_HELP)] if config else []) + list(required):
            s.add_argument(opt, required=True, help=text)
        return s

    def compute(s):
        s.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
        s.add_argument("--device", default=None, help="auto (default: the recipe's `device`), cpu, cuda, cuda:1, ...")
        return s

    cfg = "--config exp/demo/config.json"
    add("prepare", cmd_prepare, "corpus on disk -> lhotse manifests",
        f"w2v prepare {cfg} --out data/demo/manifests", [("--out", "directory for recordings/supervisions.jsonl.gz")],
        description="Run the recipe's corpus script (`local:`) if any, then read the corpus (`corpus:`) into "
                    "lhotse manifests.").add_argument(
        "--jobs", type=int, default=4, help="threads reading audio headers and making the corpus (default 4)")
    add("cuts", cmd_cuts, "manifests -> 16 kHz mono CutSets and subsets",
        f"w2v cuts {cfg} --manifests data/demo/manifests --out data/demo/cuts",
        [("--manifests", "directory written by `w2v prepare`"),
         ("--out", "directory for pretrain/train/train_<subset>/dev/test .jsonl.gz and cuts_summary.json")])
    add("lang", cmd_lang, "units, lexicon and LM text (units from the --cuts transcripts)",
        f"w2v lang {cfg} --cuts data/demo/cuts/train.jsonl.gz --out data/demo/lang",
        [("--cuts", "labeled training cuts whose transcripts define the units"),
         ("--out", "directory for units.txt, lexicon.txt, lm_text.txt")])
    add("lm", cmd_lm, "n-gram KenLM from the LM text",
        f"w2v lm {cfg} --text data/demo/lang/lm_text.txt --out data/demo/lm/4gram",
        [("--text", "LM training text, one sentence a line (`w2v lang` writes it)"),
         ("--out", "directory for lm.arpa and lm.bin")])
    def processes(s):
        s.add_argument("--gpus", type=int, default=None,
                       help="training processes (DDP under torchrun, one per GPU; gloo on CPU); default: the "
                            "recipe's gpus, else 1")
        return s

    processes(compute(add("pretrain", cmd_pretrain, "self-supervised pre-training",
                f"w2v pretrain {cfg} --cuts data/demo/cuts/pretrain.jsonl.gz --out exp/demo/pretrain",
                [("--cuts", "unlabeled audio (a CutSet)"),
                 ("--out", "experiment directory: checkpoints/, train_log.jsonl, tensorboard/, model.pt")],
                description="Self-supervised wav2vec 2.0 pre-training with the recipe's `pretrain` settings; "
                            "rerunning resumes from the newest checkpoint.")))
    s = add("finetune", cmd_finetune, "CTC fine-tuning on a labeled subset",
            f"w2v finetune {cfg} --subset 1h --init-from pretrained --cuts data/demo/cuts/train_1h.jsonl.gz "
            "--dev data/demo/cuts/dev.jsonl.gz --units data/demo/lang/units.txt --out exp/demo/finetune/pretrained_1h",
            [("--cuts", "labeled training cuts"),
             ("--out", "experiment directory: checkpoints/, train_log.jsonl, tensorboard/, model.pt"),
             ("--subset", "the labeled subset's name in finetune.subsets (10m, 1h, ...)"),
             ("--units", "units.txt of the CTC output units")],
            description="CTC fine-tuning on a labeled subset, from the pre-trained model or from scratch; "
                        "rerunning resumes from the newest checkpoint.")
    compute(s)
    processes(s)
    s.add_argument("--init-from", choices=["pretrained", "scratch"], default="pretrained",
                   help="start from a pre-trained model (default) or from random weights")
    s.add_argument("--init", default=None, help="pre-trained model.pt (default: finetune.init_from, else the recipe's)")
    s.add_argument("--dev", default=None, help="dev cuts for picking the best checkpoint")
    s = add("graph", cmd_graph, "HLG decoding graph (first-pass n-gram from --text)",
            f"w2v graph {cfg} --units data/demo/lang/units.txt --lexicon data/demo/lang/lexicon.txt "
            "--text data/demo/lang/lm_text.txt --out data/demo/graph",
            [("--units", "units.txt of the acoustic model (H: the CTC topology over them)"),
             ("--lexicon", "lexicon.txt spelling each word in those units (L)"),
             ("--text", "LM text for the first-pass n-gram (G; graph.order, graph.prune) unless graph.arpa"),
             ("--out", "directory for HLG.fst and graph.json")],
            description="Compose H (CTC topology), L (lexicon with disambiguation symbols) and G (a pruned "
                        "n-gram through kaldilm) into a determinized, minimized HLG with kaldifst.")
    s = add("lm-nn", cmd_lm_nn, "Transformer LM for n-best rescoring",
            f"w2v lm-nn {cfg} --text data/demo/lang/lm_text.txt --out exp/demo/lm_nn",
            [("--text", "LM training text, one sentence a line"),
             ("--out", "directory for model.pt, checkpoints and the training log")],
            description="Train a small Transformer LM on the LM text (settings: lm_nn); rerunning resumes.")
    s.add_argument("--dev-text", default=None, help="sentences to report perplexity on")
    s.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    s = add("decode", cmd_decode, "every decode.decoders row (greedy, beam+4gram, hlg, n-best rescoring)",
            f"w2v decode {cfg} --model exp/demo/finetune/pretrained_1h/model.pt --lexicon data/demo/lang/lexicon.txt "
            "--lm data/demo/lm/4gram/lm.bin --graph data/demo/graph --lm-nn exp/demo/lm_nn/model.pt "
            "--cuts data/demo/cuts/dev.jsonl.gz data/demo/cuts/test.jsonl.gz --out exp/demo/decode/pretrained_1h",
            [("--model", "fine-tuned model.pt"),
             ("--out", "directory for decode.json and hypotheses per decoder (with tuning.tsv where tuned)")],
            description="Decode the dev and test sets with every decoder in decode.decoders; LM weights, word "
                        "scores and acoustic scales are chosen on the dev set (decode.dev_set).")
    s.add_argument("--cuts", required=True, nargs="+", help="the dev set and the test sets")
    s.add_argument("--lexicon", default=None, help="lexicon.txt (beam+Ngram, hlg decoders)")
    s.add_argument("--lm", default=None, help="KenLM binary (beam+Ngram, n-best rescoring)")
    s.add_argument("--graph", default=None, help="graph directory with HLG.fst (hlg decoders)")
    s.add_argument("--lm-nn", default=None, help="Transformer LM model.pt (+transformer-lm decoders)")
    compute(s)
    s = add("score", cmd_score, "WER/CER/PER, alignments, per-speaker/language breakdowns",
            f"w2v score {cfg} --decode exp/demo/decode/pretrained_1h/decode.json "
            "--out exp/demo/decode/pretrained_1h/scores.json",
            [("--decode", "decode.json written by `w2v decode`"), ("--out", "scores.json to write")])
    s.add_argument("--fold-map", default=None,
                   help="FROM TO per line (e.g. TIMIT 61 -> 39 phones), applied to references and hypotheses "
                        "(default: score.fold_map)")
    s = add("report", cmd_report, "results.md/results.json and the HTML report with its figures",
            f"w2v report {cfg} --scores exp/demo/decode/*/scores.json --out-md exp/demo/results.md "
            "--out-json exp/demo/results.json --dev-cuts data/demo/cuts/dev.jsonl.gz",
            [("--out-md", "results.md to write (the table in the paper's layout, figures embedded)"),
             ("--out-json", "results.json to write (every number of the table)")],
            description="Gather the score files into results.md/results.json, and write the HTML report "
                        "(results beside the paper's numbers, WER against labeled data, LM-weight sweeps, "
                        "training curves, codebook usage) with its PNGs. Missing pieces are listed, not fatal.")
    s.add_argument("--scores", required=True, nargs="+", help="scores.json files of `w2v score`")
    s.add_argument("--html-dir", default=None, help="report directory (default: report/ beside --out-md)")
    s.add_argument("--exp-dir", default=None,
                   help="experiment directory with pretrain/, finetune/, decode/ (default: the folder of --out-md)")
    s.add_argument("--pretrained", default=None,
                   help="pre-trained model.pt for codebook usage (default: finetune.init_from, else the recipe's)")
    s.add_argument("--dev-cuts", default=None, help="cuts to measure codebook usage on (default: none, skipped)")
    s.add_argument("--codebook-utts", type=int, default=20, help="utterances for codebook usage (default 20)")
    s.add_argument("--paper", default=None,
                   help="JSON of the paper's numbers (default: w2v/paper_results.json; a recipe's `paper` list wins)")
    s = add("import-checkpoint", cmd_import_checkpoint,
            "a Hugging Face model directory or a fairseq .pt -> w2v model.pt",
            "w2v import-checkpoint ~/hf/wav2vec2-base exp/imported/base.pt", config=False)
    s.add_argument("src", help="HF directory (config.json + safetensors/bin) or fairseq checkpoint .pt")
    s.add_argument("out", help="model.pt to write")
    s.add_argument("--units", default=None, help="fairseq CTC: units.txt (default: dict.ltr.txt beside SRC)")
    s.add_argument("--trust-checkpoint", action="store_true",
                   help="allow unpickling SRC (fairseq .pt files pickle Python objects; unpickling can run "
                        "code, so only for files from a source you trust)")
    s = add("export-units", cmd_export_units, "vq-wav2vec: discrete units per cut (jsonl, or text for .txt)",
            "w2v export-units --model exp/demo_vq_wav2vec/pretrain/quantizer/model.pt "
            "--cuts data/demo/cuts/train.jsonl.gz --out exp/demo_vq_wav2vec/units_train.jsonl",
            [("--model", "pre-trained vq-wav2vec model.pt"), ("--cuts", "the cuts to turn into units"),
             ("--out", "units per cut: .jsonl (id and the G code indices per frame) or .txt")], config=False,
            description="Run a pre-trained vq-wav2vec quantizer over cuts and write each cut's discrete unit "
                        "sequence (the input of the BERT stage, or of any unit-based model).")
    compute(s)
    s = add("hubert-labels", cmd_hubert_labels, "HuBERT k-means targets per cut: MFCCs, or --model's --layer",
            "w2v hubert-labels --model-config conf/model/hubert_base.yaml --cuts data/demo/cuts/pretrain.jsonl.gz "
            "--out exp/demo_hubert/labels_iter1.jsonl",
            [("--model-config", "the HuBERT preset (conf/model/hubert_*.yaml): frame rate, k per iteration"),
             ("--cuts", "pre-training cuts to label"), ("--out", "labels .jsonl (one k-means id per frame)")],
            config=False,
            description="Make HuBERT's frame targets: k-means on MFCCs (iteration 1), or on a Transformer layer "
                        "of the previous iteration's model (--model, --layer). `w2v pretrain` runs this itself.")
    s.add_argument("--model", default=None, help="previous iteration's pre-trained model.pt (default: MFCC targets)")
    s.add_argument("--layer", type=int, default=None, help="Transformer layer to cluster (default: the preset's)")
    s.add_argument("--clusters", type=int, default=None, help="k (default: the preset's for this iteration)")
    s.add_argument("--seed", type=int, default=1, help="k-means seed (default 1)")
    compute(s)
    s = add("export-hf", cmd_export_hf, "w2v model.pt -> a directory transformers loads (wav2vec 2.0, HuBERT)",
            "w2v export-hf exp/demo/finetune/pretrained_1h/model.pt exp/demo/hf_pretrained_1h", config=False)
    s.add_argument("checkpoint", help="w2v model.pt (pre-trained or fine-tuned)")
    s.add_argument("out_dir", help="directory to write config.json, weights and (CTC) the processor files")
    s = add("new-recipe", cmd_new_recipe, "scaffold egs/NAME, local/NAME.py and its fake-layout test",
            "w2v new-recipe mycorpus", config=False,
            description="Write egs/NAME/{config.yaml,README.md,RESULTS.md}, local/NAME.py (a prepare function to "
                        "fill in) and tests/recipes/test_NAME.py (a fake-layout test); README's 'Adding a corpus' "
                        "walks through the rest.")
    s.add_argument("name", help="the corpus (recipe) name: letters, digits, underscores")
    s.add_argument("--root", default=".", help="the repository to write into (default: here)")
    s = add("transcribe", cmd_transcribe, "print a transcript per audio file",
            "w2v transcribe exp/demo/finetune/pretrained_1h/model.pt a.flac --lm data/demo/lm/4gram/lm.bin "
            "--lexicon data/demo/lang/lexicon.txt", config=False,
            description="Print `file<TAB>transcript` per audio file: greedy CTC, or lexicon beam search with --lm.")
    s.add_argument("checkpoint", help="fine-tuned model.pt")
    s.add_argument("audio", nargs="+", help="audio files (any format and rate soundfile/lhotse reads; resampled)")
    s.add_argument("--lm", default=None, help="KenLM binary for lexicon beam search")
    s.add_argument("--lexicon", default=None, help="lexicon.txt for --lm (data/<recipe>/lang/lexicon.txt)")
    s.add_argument("--lm-weight", type=float, default=1.0, help="LM weight (default 1.0; decode.json has the tuned one)")
    s.add_argument("--word-score", type=float, default=0.0, help="word insertion score (default 0.0)")
    s.add_argument("--beam", type=int, default=500, help="beam size (default 500)")
    s.add_argument("--lang", default=None, help="language adapter to use (MMS; default: the model's own)")
    compute(s)
    s = sub.add_parser("bench", add_help=False, formatter_class=argparse.RawDescriptionHelpFormatter,
                       help="speed: `bench [gpu]` ours beside transformers, `bench data` the audio pipeline, "
                            "`bench loop` the training loop (their options: w2v bench [data|loop] --help)",
                       description="Benchmarks that print our numbers beside the peer's from one run: `gpu` "
                                   "(default) times pre-training, CTC fine-tuning and inference against Hugging "
                                   "Face transformers on the GPU; `data` measures audio decoding + crop + batch "
                                   "throughput per CPU worker; `loop` runs the training loop end to end on synthetic FLAC "
                                   "files. Their own options: `w2v bench [data|loop] --help`.",
                       epilog="example:\n  w2v bench gpu --compile --steps 20\n  w2v bench data --workers 1,4,16\n"
                              "  w2v bench loop --preset base --compile --matmul-conv")
    s.set_defaults(fn=cmd_bench)
    s.add_argument("what", nargs="?", choices=["gpu", "data", "loop"], default="gpu",
                   help="gpu (default): ours vs transformers on the GPU; data: the audio pipeline per worker; "
                        "loop: the training loop end to end on synthetic FLAC files")
    return p


def main(argv: list[str] | None = None) -> None:
    from w2v.io import setup_logging

    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if rest and args.command != "bench":
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.rest = rest
    args.argv = list(sys.argv[1:] if argv is None else argv)
    setup_logging(level=logging.DEBUG if args.verbose else logging.INFO)
    rank = f" (rank {os.environ['RANK']})" if int(os.environ.get("WORLD_SIZE", 1)) > 1 else ""
    try:
        args.fn(args)
    except KeyboardInterrupt:
        raise SystemExit("w2v: interrupted; rerun the same command to resume")
    except (ValueError, FileNotFoundError, RuntimeError, OSError) as e:
        if args.verbose:
            raise
        raise SystemExit(f"w2v {args.command}: error{rank}: {e}")


if __name__ == "__main__":
    main()
