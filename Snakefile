# w2v: one workflow for every recipe. Stages are rules; each calls the `w2v` CLI.
#   snakemake -c2 --configfile egs/<recipe>/config.yaml [stage]
# Stages: prepare cuts lang lm graph lm_nn pretrain finetune decode score report (the default target).
# Rerunning the same command resumes: finished stages are skipped, an interrupted training
# stage continues from its last checkpoint (profiles/default sets --rerun-incomplete).
# Several GPUs: `--config gpus=N`; the training rules' `w2v` calls read it from the resolved
# config and run as N DDP processes under torchrun, each with max_duration seconds per batch.
import json
import os
from w2v import config as w2vconfig
from w2v.data import corpora
from w2v.locks import clear_stale_locks, record_lock_owner

clear_stale_locks()  # a SIGKILLed run left its lock: the same command resumes without --unlock

if not workflow.overwrite_configfiles:  # the demo is the default; a --configfile replaces it
    configfile: "egs/demo/config.yaml"

w2vconfig.validate(config, " + ".join(map(str, workflow.configfiles)) or "the recipe config")
R = config["recipe"]
D = f"data/{R}"
E = f"exp/{config.get('exp', R)}"  # `exp:` keeps the runs of a model-family overlay apart
CFG = f"{E}/config.json"
if not config.get("local") and not os.path.exists(f"{D}/manifests/supervisions.jsonl.gz"):
    corpora.check(config["corpus"])  # a wrong corpus path fails now (dry runs too), listing expected vs found
w2vconfig.write_resolved(config, CFG)  # the merged config (--configfile + --config) the CLI reads

DEV = config.get("decode", {}).get("dev_set", "dev")
TESTS = config.get("decode", {}).get("test_sets", ["test"])
SUBSETS = list(config.get("finetune", {}).get("subsets", {}))
EXPS = [f"{init}_{subset}" for init, subset in w2vconfig.experiments(config)]
LM_ORDER = config.get("lm", {}).get("order", 4)
DECODERS = config.get("decode", {}).get("decoders") or ["greedy", f"beam+{LM_ORDER}gram"]
HLG = any(d.startswith("hlg") for d in DECODERS)
NNLM = any(d.endswith("transformer-lm") for d in DECODERS)
CUTS = [f"{D}/cuts/{name}.jsonl.gz" for name in ["pretrain", "train", *[f"train_{s}" for s in SUBSETS], DEV, *TESTS]]

wildcard_constraints:
    init="pretrained|scratch",
    subset="|".join(SUBSETS) or "none",


def finetune_inputs(wildcards):
    """Fine-tuning from pre-trained weights needs the pre-training stage; from scratch it does not."""
    inputs = {"train": f"{D}/cuts/train_{wildcards.subset}.jsonl.gz", "dev": f"{D}/cuts/{DEV}.jsonl.gz",
              "units": f"{D}/lang/units.txt"}
    if wildcards.init == "pretrained":
        inputs["init"] = w2vconfig.pretrained_model(config)
    return inputs


def finetune_dir(wildcards):
    return f"{E}/finetune/{wildcards.init}_{wildcards.subset}"


def finetune_settings(wildcards):
    """Only this experiment's settings, so that editing another subset's does not rerun this one."""
    return w2vconfig.finetune_settings(config, wildcards.init, wildcards.subset)


def finetune_init_arg(wildcards):
    return f"--init {w2vconfig.pretrained_model(config)}" if wildcards.init == "pretrained" else ""


def decode_dir(wildcards):
    return f"{E}/decode/{wildcards.exp}"


onstart:
    record_lock_owner()

rule all:
    input: f"{E}/results.md"
    default_target: True

rule prepare:
    output: f"{D}/manifests/recordings.jsonl.gz", f"{D}/manifests/supervisions.jsonl.gz"
    log: f"{D}/logs/prepare.log"
    message: "prepare: corpus -> lhotse manifests in {D}/manifests"
    params: cfg=CFG, out=f"{D}/manifests", settings={k: config.get(k) for k in ("local", "corpus")}
    threads: workflow.cores
    shell: "w2v prepare --config {params.cfg} --out {params.out} --jobs {threads} 2>&1 | tee {log}"

rule cuts:
    input: rules.prepare.output
    output: CUTS, summary=f"{D}/cuts/cuts_summary.json"
    log: f"{D}/logs/cuts.log"
    message: "cuts: 16 kHz mono CutSets, labeled subsets {SUBSETS}, {DEV} and {TESTS}"
    params: cfg=CFG, manifests=f"{D}/manifests", out=f"{D}/cuts", settings={k: config.get(k) for k in ("cuts", "text")}
    shell: "w2v cuts --config {params.cfg} --manifests {params.manifests} --out {params.out} 2>&1 | tee {log}"

rule lang:
    input: f"{D}/cuts/train.jsonl.gz", rules.cuts.output.summary
    output: units=f"{D}/lang/units.txt", lexicon=f"{D}/lang/lexicon.txt", lm_text=f"{D}/lang/lm_text.txt"
    log: f"{D}/logs/lang.log"
    message: f"lang: {config.get('lang', {}).get('units', 'char')} units, lexicon and LM text in {D}/lang"
    # (`lang` joins the params only when set, so character recipes keep their earlier params)
    params: cfg=CFG, out=f"{D}/lang", settings=[config.get("lm", {}).get("text"), config["lang"]] if config.get("lang")
                                                else config.get("lm", {}).get("text")
    shell: "w2v lang --config {params.cfg} --cuts {input[0]} --out {params.out} 2>&1 | tee {log}"

rule lm:
    input: rules.lang.output.lm_text
    output: f"{D}/lm/{LM_ORDER}gram/lm.bin"
    log: f"{D}/logs/lm.log"
    message: "lm: {LM_ORDER}-gram KenLM from {input}"
    params: cfg=CFG, out=f"{D}/lm/{LM_ORDER}gram", settings=config.get("lm")
    shell: "w2v lm --config {params.cfg} --text {input} --out {params.out} 2>&1 | tee {log}"

rule graph:
    input: units=rules.lang.output.units, lexicon=rules.lang.output.lexicon, text=rules.lang.output.lm_text
    output: f"{D}/graph/HLG.fst", f"{D}/graph/words.txt"
    log: f"{D}/logs/graph.log"
    message: "graph: H, L, G -> HLG in {D}/graph"
    params: cfg=CFG, out=f"{D}/graph", settings=config.get("graph")
    shell: "w2v graph --config {params.cfg} --units {input.units} --lexicon {input.lexicon} --text {input.text} "
           "--out {params.out} 2>&1 | tee {log}"

rule lm_nn:
    input: rules.lang.output.lm_text
    output: f"{E}/lm_nn/model.pt"
    log: f"{E}/lm_nn/log.txt"
    message: "lm_nn: Transformer LM on {input}"
    params: cfg=CFG, out=f"{E}/lm_nn", settings=config.get("lm_nn")
    shell: "w2v lm-nn --config {params.cfg} --text {input} --out {params.out} 2>&1 | tee {log}"

rule pretrain:
    input: f"{D}/cuts/pretrain.jsonl.gz"
    output: f"{E}/pretrain/model.pt"
    log: f"{E}/pretrain/log.txt"
    message: "pretrain: {config[model]} on {input}"
    threads: workflow.cores
    resources: gpu=1
    params: cfg=CFG, out=f"{E}/pretrain", settings={"model": config["model"], **config.get("pretrain", {})}
    shell: "w2v pretrain --config {params.cfg} --cuts {input} --out {params.out} --threads {threads} 2>&1 | tee -a {log}"

rule finetune_one:
    input: unpack(finetune_inputs)
    output: f"{E}/finetune/{{init}}_{{subset}}/model.pt"
    log: f"{E}/finetune/{{init}}_{{subset}}/log.txt"
    message: "finetune: CTC on {wildcards.subset} labeled, init {wildcards.init}"
    threads: workflow.cores
    resources: gpu=1
    params: cfg=CFG, out=finetune_dir, settings=finetune_settings, init=finetune_init_arg
    shell: "w2v finetune --config {params.cfg} --subset {wildcards.subset} --init-from {wildcards.init} "
           "--cuts {input.train} --dev {input.dev} --units {input.units} --out {params.out} {params.init} "
           "--threads {threads} 2>&1 | tee -a {log}"

rule finetune:
    input: expand(f"{E}/finetune/{{exp}}/model.pt", exp=EXPS)

rule decode_one:
    input: model=f"{E}/finetune/{{exp}}/model.pt", lexicon=rules.lang.output.lexicon, lm=rules.lm.output,
           cuts=[f"{D}/cuts/{name}.jsonl.gz" for name in [DEV, *TESTS]],
           graph=rules.graph.output[0] if HLG else [], lm_nn=rules.lm_nn.output if NNLM else []
    output: f"{E}/decode/{{exp}}/decode.json"
    log: f"{E}/decode/{{exp}}/log.txt"
    message: "decode: {wildcards.exp}, {DECODERS} (tuned on {DEV})"
    threads: workflow.cores
    params: cfg=CFG, out=decode_dir, settings=config.get("decode"),
            extra=(f"--graph {D}/graph " if HLG else "") + (f"--lm-nn {E}/lm_nn/model.pt" if NNLM else "")
    shell: "w2v decode --config {params.cfg} --model {input.model} --lexicon {input.lexicon} --lm {input.lm} "
           "{params.extra} --cuts {input.cuts} --out {params.out} --threads {threads} 2>&1 | tee {log}"

rule decode:
    input: expand(f"{E}/decode/{{exp}}/decode.json", exp=EXPS)

rule score_one:
    input: f"{E}/decode/{{exp}}/decode.json"
    output: f"{E}/decode/{{exp}}/scores.json"
    log: f"{E}/decode/{{exp}}/score_log.txt"
    message: "score: WER/CER of {wildcards.exp}"
    params: cfg=CFG, settings=config.get("score")
    shell: "w2v score --config {params.cfg} --decode {input} --out {output} 2>&1 | tee {log}"

rule score:
    input: expand(f"{E}/decode/{{exp}}/scores.json", exp=EXPS)

rule report:
    input: scores=rules.score.input, dev=f"{D}/cuts/{DEV}.jsonl.gz"
    output: md=f"{E}/results.md", json=f"{E}/results.json", html=f"{E}/report/index.html"
    log: f"{E}/report_log.txt"
    message: "report: {output.md} and {output.html} (training curves, codebook usage, WER against labeled data, LM sweeps)"
    params: cfg=CFG, exp=E, html=f"{E}/report", pretrained=w2vconfig.pretrained_model(config)
    shell: "w2v report --config {params.cfg} --scores {input.scores} --out-md {output.md} --out-json {output.json} "
           "--html-dir {params.html} --exp-dir {params.exp} --pretrained {params.pretrained} --dev-cuts {input.dev} "
           "2>&1 | tee {log}"
