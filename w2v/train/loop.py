"""One training loop for pre-training (every family) and CTC fine-tuning.

Set-up, data, model, optimizer, loop, checkpoint, in a straight line. Everything random in
an update (crops, masks, negatives, Gumbel noise) is drawn from a generator seeded by
``(seed, update, rank)`` and, with ``update_freq`` batches per update, the batch
(`distributed.step_seed`); dropout uses torch's global generator, whose state is checkpointed.
With the data position stored as ``(epoch, batch)`` a killed run resumes exactly where it was.
Under ``torchrun`` the same loop runs as DDP or FSDP ranks (:mod:`w2v.train.distributed`,
:mod:`w2v.train.sharding`); updates with a non-finite loss or gradient are skipped
(:mod:`w2v.train.guards`).
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from w2v.data.batching import BatchPlan, collate_audio, collate_targets, pad_to_multiple, to_device
from w2v.data.cuts import cut_language, transcript
from w2v.data.prefetch import Prefetcher, resolve_kind
from w2v.decode.ctc import load_units
from w2v.io import atomic_path, write_json
from w2v.models import Wav2Vec2Config, Wav2Vec2ForCTC
from w2v.models.accel import (
    release_dropped_grads,
    set_activation_checkpointing,
    step_begins,
    use_matmul_convolutions,
)
from w2v.models.adapters import adapter_weights, freeze_base, is_adapter_key
from w2v.models.components import padding_hop
from w2v.models.families import build_ctc_model, build_pretraining_model, config_from_dict, family_of
from w2v.train.checkpoint import CheckpointDir, load, save_atomic
from w2v.train.collect import ScheduledCollection
from w2v.train import distributed, optim, sharding
from w2v.train.config import TrainConfig
from w2v.train.guards import SkippedBatches, codebook_warnings
from w2v.train.losses import ctc_loss
from w2v.train.schedules import Schedule
from w2v.train.steps import pretrain_step
from w2v.train.targets import collate_labels, labels_for_cuts
from w2v.train.tensorboard import TensorBoardLog

log = logging.getLogger(__name__)
SAMPLE_RATE = 16000


class TrainingError(RuntimeError):
    pass


def conv_output_frames(cfg: Wav2Vec2Config, num_samples: int) -> int:
    """Frames the conv feature encoder makes from ``num_samples`` samples."""
    n = num_samples
    for _, kernel, stride in cfg.conv_feature_layers:
        n = (n - kernel) // stride + 1
        if n <= 0:
            return 0
    return n


def ctc_min_frames(ids: list[int]) -> int:
    """CTC needs one frame per label plus a blank between each pair of repeated labels."""
    return len(ids) + sum(1 for a, b in zip(ids, ids[1:]) if a == b)


def resolve_device(device: str | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def audio_files(cut) -> str:
    """The file(s) behind a cut (a down-mixed multi-channel cut is a MixedCut of tracks)."""
    cuts = [t.cut for t in cut.tracks] if hasattr(cut, "tracks") else [cut]
    files = {s.source for c in cuts if getattr(c, "has_recording", False) for s in c.recording.sources}
    return ", ".join(sorted(files)) or "?"


class AudioStore:
    """Mono 16 kHz float32 audio of a list of cuts, decoded on demand (optionally cached).

    NaN/Inf samples (possible only in float WAV files) are set to zero with a warning naming
    the cut and file, once per cut: one bad sample would otherwise make every loss NaN.
    """

    def __init__(self, cuts: list, cache: bool):
        self.cuts = cuts
        self.cache: dict[int, np.ndarray] | None = {} if cache else None
        self.non_finite: set[str] = set()

    def __getitem__(self, i: int) -> np.ndarray:
        if self.cache is not None and i in self.cache:
            return self.cache[i]
        cut = self.cuts[i]
        try:
            audio = cut.load_audio()
        except Exception as e:
            raise TrainingError(f"cannot load audio of cut {cut.id} ({audio_files(cut)}): {e}") from e
        audio = np.asarray(audio, dtype=np.float32)
        audio = audio.mean(axis=0) if audio.ndim == 2 else audio
        bad = ~np.isfinite(audio)
        if bad.any():
            if cut.id not in self.non_finite:
                self.non_finite.add(cut.id)
                log.warning("cut %s (%s): %d NaN/Inf sample(s) set to 0 (%d cut(s) so far)", cut.id,
                            audio_files(cut), int(bad.sum()), len(self.non_finite))
            audio = np.where(bad, np.float32(0), audio)
        if self.cache is not None:
            self.cache[i] = audio
        return audio


def _load_cuts(path: str | Path) -> list:
    from lhotse import load_manifest

    path = Path(path)
    if not path.is_file():
        raise TrainingError(f"cut manifest not found: {path}")
    return list(load_manifest(path))


def _encode_chars(text: str, unit_to_id: dict[str, int]) -> list[int] | None:
    from w2v.data.lang import encode

    return None if any(ch not in unit_to_id for ch in text.replace(" ", "")) else encode(text, unit_to_id)


def _ctc_items(cuts: list, unit_to_id, cfg: Wav2Vec2Config, tcfg: TrainConfig, what: str):
    """Encode transcripts; drop (and count) what CTC cannot learn from."""
    from w2v.data.units import Tokenizer

    tokenizer = unit_to_id if isinstance(unit_to_id, Tokenizer) else None
    keep, targets, dropped = [], [], {"short": [], "empty": [], "unknown_units": [], "too_many_tokens": []}
    for cut in cuts:
        text = transcript(cut)
        if cut.duration < tcfg.min_seconds:
            dropped["short"].append(cut.id)
            continue
        if not text:
            dropped["empty"].append(cut.id)
            continue
        ids = tokenizer.encode(text) if tokenizer else _encode_chars(text, unit_to_id)
        if ids is None:
            dropped["unknown_units"].append(cut.id)
            continue
        if ctc_min_frames(ids) > conv_output_frames(cfg, int(round(cut.duration * SAMPLE_RATE))):
            dropped["too_many_tokens"].append(cut.id)
            continue
        keep.append(cut)
        targets.append(ids)
    for reason, ids in dropped.items():
        if ids:
            log.warning("%s: dropped %d utterance(s) (%s), e.g. %s", what, len(ids), reason, ", ".join(ids[:5]))
    return keep, targets, {k: len(v) for k, v in dropped.items()}


def _finetune_overrides(cfg, overrides: dict) -> dict:
    """Frozen-feature families (wav2vec 1.0, vq-wav2vec) have no encoder to mask or drop layers
    of: wav2vec 2.0 encoder overrides (mask_prob, layerdrop, ...) are dropped for them, with a note."""
    if family_of(cfg) in ("wav2vec2", "hubert"):
        return overrides
    own = {f.name for f in fields(cfg)}
    encoder = {f.name for f in fields(Wav2Vec2Config)}
    dropped = sorted(k for k in overrides if k not in own and k in encoder)
    if dropped:
        log.info("%s features are frozen: fine-tuning overrides %s do not apply", family_of(cfg), dropped)
    return {k: v for k, v in overrides.items() if k not in dropped}


def build_model(task: str, model_cfg, tcfg: TrainConfig, vocab_size: int | None, init: str | Path | None):
    """The model to train, its config, and (for fine-tuning) the pre-trained weights loaded.

    ``init``: pre-trained weights to start from (fine-tuning, or a previous pre-training stage).
    With ``tcfg.adapter`` (MMS) ``init`` may also be a fine-tuned model: its base is kept, the
    language gets fresh adapters and head, and the other languages' adapters of ``init`` are
    returned (third value, ``{lang: {"weights", "units"}}``) to be carried into the output.
    """
    if task == "pretrain":
        cfg = replace(model_cfg, **tcfg.model_overrides)
        return build_pretraining_model(cfg, load(init)["model"] if init is not None else None), cfg, {}
    adapter = tcfg.adapter
    ck = None
    if init is not None:
        ck = load(init)
        allowed = ("pretrain", "finetune") if adapter else ("pretrain",)
        if ck.get("task") not in allowed:
            raise TrainingError(f"{init}: expected a pre-trained model, found task {ck.get('task')!r}")
        model_cfg = config_from_dict(ck["model_config"], str(init))
    overrides = _finetune_overrides(model_cfg, tcfg.model_overrides)
    if not adapter:
        cfg = replace(model_cfg, **overrides)
        return build_ctc_model(cfg, vocab_size, tcfg.final_dropout, ck["model"] if ck is not None else None), cfg, {}
    if ck is None:
        raise TrainingError("finetune.adapter trains adapters on a frozen model: it needs one (init)")
    if family_of(model_cfg) not in ("wav2vec2", "hubert"):
        raise TrainingError(f"finetune.adapter: MMS adapters sit in a wav2vec 2.0 Transformer; {init} is "
                            f"{family_of(model_cfg)}")
    if model_cfg.adapter_dim not in (0, adapter["dim"]):
        raise TrainingError(f"{init} has adapters of dim {model_cfg.adapter_dim}; adapter.dim is {adapter['dim']}")
    overrides["adapter_dim"] = adapter["dim"]
    cfg = replace(model_cfg, **overrides)
    model = Wav2Vec2ForCTC(cfg, vocab_size, final_dropout=tcfg.final_dropout)
    others: dict = {}
    if ck["task"] == "pretrain":
        model.load_pretrained(ck["model"])
    else:  # a new language on a fine-tuned model: its base, fresh adapters and head
        missing, unexpected = model.load_state_dict(
            {k: v for k, v in ck["model"].items() if not is_adapter_key(k)}, strict=False)
        missing = [k for k in missing if not is_adapter_key(k)]
        if missing or unexpected:
            raise TrainingError(f"{init}: base weights do not fit: missing {missing}, unexpected {unexpected}")
        others = {lang: a for lang, a in (ck.get("adapters") or {}).items() if lang != adapter["lang"]}
    return model, cfg, others


def _select_language(cuts: list, lang: str, where) -> list:
    """The cuts of one language; cuts without any language mark are all taken to be it."""
    langs = [cut_language(c) for c in cuts]
    if not any(langs):
        return cuts
    keep = [c for c, x in zip(cuts, langs) if x == lang]
    if not keep:
        raise TrainingError(f"{where}: no cuts of language {lang!r} (it has {sorted({x for x in langs if x})})")
    log.info("%s: %d of %d cuts are in %s", where, len(keep), len(cuts), lang)
    return keep


def _language_summary(plan: BatchPlan, seconds: dict[str, float]) -> dict:
    """Hours available (of the durations the plan batches: capped at the crop length when
    pre-training), sampling probability, and hours actually trained on, per language."""
    probs, avail = plan.language_probabilities(), plan.language_hours()
    total = sum(seconds.values()) or 1.0
    return {"alpha": plan.alpha, "languages": {
        lang: {"hours_available": round(avail[lang], 6), "probability": round(probs[lang], 6),
               "hours_sampled": round(seconds.get(lang, 0.0) / 3600, 6),
               "share_sampled": round(seconds.get(lang, 0.0) / total, 6)} for lang in avail}}


def _rng_state() -> dict:
    """Every global RNG's state as tensors, lists and numbers (loadable with ``weights_only=True``)."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    version, py_state, py_gauss = random.getstate()
    return {"torch": torch.get_rng_state(),
            "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "gauss": float(gauss)},
            "python": {"version": version, "state": list(py_state), "gauss": py_gauss},
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def _set_rng_state(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    n = s["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = s["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if s.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def _step_generator(seed: int, num_updates: int, rank: int = 0, micro: int = 0) -> tuple[torch.Generator,
                                                                                        np.random.Generator]:
    """The random draws (crops, masks, negatives, LayerDrop) of batch ``micro`` of an update, on ``rank``."""
    s = distributed.step_seed(seed, num_updates, rank, micro)
    return torch.Generator().manual_seed(s), np.random.default_rng(s)


def dev_rank(metrics: dict) -> tuple[float, float]:
    """How dev results rank when picking the best checkpoint (lower is better): WER, capped at
    100%, then CER. Uncapped, an empty output (WER exactly 100%) would beat a model that gets
    most characters right but inserts words (WER above 100%), as early all-blank CTC
    checkpoints of small runs did."""
    return min(metrics["wer"], 1.0), metrics["cer"]


def evaluate_ctc(model, store: AudioStore, refs: list[str], units: list[str], tcfg: TrainConfig,
                 device: torch.device) -> dict:
    """Greedy-decode a dev set with the decode stage's code; its word and character error rates.

    The emissions come from `compute_emissions`, batched by ``tcfg.max_duration`` only when the
    model is padding-invariant, otherwise one utterance per forward: every utterance gets the
    emissions it gets alone, so these rates match the decode stage's for the same checkpoint.
    """
    from w2v.decode.ctc import greedy_decode
    from w2v.decode.emissions import compute_emissions, pad_emissions
    from w2v.score.wer import score

    model.eval()
    emissions = compute_emissions(model, [store[i] for i in range(len(store.cuts))], tcfg.normalize_audio,
                                  tcfg.max_duration, device)
    model.train()
    hyps = greedy_decode(*pad_emissions(emissions), units)
    result = score({str(i): r for i, r in enumerate(refs)}, {str(i): h for i, h in enumerate(hyps)})
    return {"cer": result.cer, "wer": result.wer}


# Settings a resumed run may change without invalidating its checkpoints: how long it runs, how
# often it logs and saves, and how the work is spread and computed (not what is computed).
_RESUMABLE_CHANGES = {"max_updates", "save_every", "log_every", "keep_last", "loader_workers", "loader", "prefetch_batches",
                      "compile", "matmul_conv", "cuda_graphs", "activation_checkpointing", "strategy", "dist_timeout",
                      "max_bad_updates", "collapse_fraction", "diversity_ratio"}


def _fingerprint(path: str | Path | None) -> str | None:
    """Size and modification time: a re-made input (new cuts, a re-run pre-training) differs."""
    if path is None:
        return None
    st = Path(path).stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


def _run_identity(tcfg: TrainConfig, cfg, cuts_path, init, units_path) -> dict:
    """What a checkpoint's run was: resuming is only right when this is unchanged."""
    return json.loads(json.dumps({"train": _train_identity(tcfg), "model": cfg.to_dict(), "cuts": _fingerprint(cuts_path),
                                  "init": _fingerprint(init), "units": _fingerprint(units_path)}, default=str))


def _train_identity(tcfg: TrainConfig) -> dict:
    """The settings a checkpoint must share with the run that resumes it, as JSON would store them."""
    return json.loads(json.dumps({k: v for k, v in tcfg.to_dict().items() if k not in _RESUMABLE_CHANGES},
                                 default=str))


def _identity_changes(old: dict, new: dict) -> list[str]:
    changed = [k for k in ("cuts", "init", "units") if old.get(k) != new.get(k)]
    for part in ("train", "model"):
        a, b = old.get(part, {}), new.get(part, {})
        if part == "train":  # a setting added since the checkpoint was written is at its default there
            a = {**_train_identity(TrainConfig()), **a}
        changed += [f"{part}.{k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    return changed


def _set_aside(ckdir: CheckpointDir, log_path: Path, why: list[str]) -> Path:
    """Move checkpoints (and the log) of a run with other settings or inputs out of the way:
    they are kept, not resumed from and not deleted."""
    n = 1
    while (aside := ckdir.path.with_name(f"{ckdir.path.name}.stale-{n}")).exists():
        n += 1
    ckdir.path.rename(aside)
    if log_path.exists():
        log_path.rename(aside / log_path.name)
    ckdir.path.mkdir()
    log.warning("the checkpoints in %s are of a run with other settings or inputs (%s): moved to %s; "
                "starting afresh", ckdir.path, ", ".join(why[:8]) + (" ..." if len(why) > 8 else ""), aside)
    return aside


def train(tcfg: TrainConfig, cuts_path: str | Path, out_dir: str | Path, model_cfg, *,
          units_path: str | Path | None = None, init: str | Path | None = None,
          dev_cuts_path: str | Path | None = None, device: str | None = None,
          labels_path: str | Path | None = None) -> Path:
    """Train (or resume training) and write ``out_dir/model.pt``.

    Args:
        tcfg: training settings; ``tcfg.task`` is ``pretrain`` or ``finetune``.
        cuts_path: lhotse CutSet of training audio (with transcripts when fine-tuning).
        out_dir: experiment directory; ``checkpoints/``, ``train_log.jsonl`` and ``model.pt``.
        model_cfg: architecture of any family (`w2v.models.families`); ignored when fine-tuning
            from ``init``, whose config is used.
        units_path: ``units.txt`` of the CTC output units (fine-tuning).
        init: pre-trained ``model.pt`` to start fine-tuning from (None trains from scratch), or,
            when pre-training, a previous stage's model (vq-wav2vec's BERT stage).
        dev_cuts_path: fine-tuning: dev set used to pick the best checkpoint (greedy WER).
        device: ``auto``, ``cpu``, ``cuda``, ...
        labels_path: pre-training: frame labels per cut (HuBERT's k-means targets,
            `w2v.train.targets`); crops then start on a label frame.

    Returns:
        Path of the final model file.
    """
    out_dir = Path(out_dir)
    info = distributed.dist_info()
    main = info.is_main  # only rank 0 writes files
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
    dev = distributed.init(info, resolve_device(device), tcfg.dist_timeout)
    task = tcfg.task
    if task not in ("pretrain", "finetune"):
        raise TrainingError(f"unknown task {task!r}; expected pretrain or finetune")
    random.seed(tcfg.seed + info.rank)
    np.random.seed(tcfg.seed + info.rank)
    torch.manual_seed(tcfg.seed + info.rank)

    units = load_units(units_path) if task == "finetune" else None
    model, cfg, other_adapters = build_model(task, model_cfg, tcfg, len(units) if units else None, init)
    # the architecture's feature penalty, written down so that checkpoints and logs carry the number
    # (fine-tuning too, whose checkpoints from before this default recorded 10)
    tcfg = replace(tcfg, feature_penalty_weight=tcfg.feature_penalty_for(cfg))
    cuts = _load_cuts(cuts_path)
    if tcfg.adapter:
        cuts = _select_language(cuts, tcfg.adapter["lang"], cuts_path)
    if task == "pretrain":
        # the conv encoder makes no frame from less than its receptive field (400 samples for the base)
        short = {c.id for c in cuts if c.duration < tcfg.min_seconds
                 or conv_output_frames(cfg, int(round(c.duration * SAMPLE_RATE))) < 1}
        if short:
            log.warning("skipping %d utterance(s) shorter than %.2fs or the receptive field, e.g. %s", len(short),
                        tcfg.min_seconds, ", ".join(sorted(short)[:5]))
        cuts = [c for c in cuts if c.id not in short]
        targets = None
        durations = [min(c.duration, tcfg.crop_seconds) for c in cuts]
    else:
        from w2v.data.units import load_tokenizer

        unit_to_id = load_tokenizer(units_path)  # characters, BPE or phones, as the lang stage chose
        cuts, targets, _ = _ctc_items(cuts, unit_to_id, cfg, tcfg, str(cuts_path))
        durations = [c.duration for c in cuts]
    if not cuts:
        raise TrainingError(f"{cuts_path}: no usable utterances left for {task}")
    labels = labels_for_cuts(labels_path, cuts) if task == "pretrain" and labels_path is not None else None
    # Crops of labeled audio start on a frame boundary, so the labels stay aligned.
    crop_align = math.prod(s for _, _, s in cfg.conv_feature_layers) if labels is not None else 1
    store = AudioStore(cuts, tcfg.cache_audio)
    languages = [cut_language(c) for c in cuts]
    multilingual = len({x for x in languages if x}) >= 2
    try:
        plan = BatchPlan(durations, tcfg.max_duration, seed=tcfg.seed, num_buckets=tcfg.num_buckets,
                         max_batch_size=tcfg.max_batch_size, languages=languages if multilingual else None,
                         alpha=tcfg.language_alpha)
    except ValueError as e:
        raise TrainingError(f"{cuts_path}: {e}") from e
    dev_store = dev_refs = None
    # under fsdp every rank takes part in the dev forward passes (its weights are sharded)
    if task == "finetune" and dev_cuts_path is not None and (main or tcfg.strategy == "fsdp"):
        dev_cuts = _load_cuts(dev_cuts_path)
        if tcfg.adapter:
            dev_cuts = _select_language(dev_cuts, tcfg.adapter["lang"], dev_cuts_path)
        dcuts, _, _ = _ctc_items(dev_cuts, unit_to_id, cfg, replace(tcfg, min_seconds=0.0), str(dev_cuts_path))
        dev_store = AudioStore(dcuts, cache=True)
        dev_refs = [transcript(c) for c in dcuts]
        if unit_to_id.kind == "phone":  # greedy output is phones: compare phone strings
            dev_refs = [" ".join(unit_to_id.pieces(t)) for t in dev_refs]

    if task == "finetune" and tcfg.freeze_feature_encoder:
        model.freeze_feature_encoder()
    if tcfg.adapter:
        freeze_base(model)
    model.to(dev).train()
    set_activation_checkpointing(model, tcfg.activation_checkpointing)
    use_matmul_convolutions(model, tcfg.matmul_conv)
    if tcfg.compile:
        sharding.compile_for(model, tcfg.strategy, info, cuda_graphs=tcfg.cuda_graphs)
    sched = Schedule(tcfg.schedule, tcfg.lr, tcfg.max_updates, warmup=tcfg.warmup, hold=tcfg.hold,
                     end_lr=tcfg.end_lr, final_lr_scale=tcfg.final_lr_scale)
    use_bf16 = tcfg.precision == "bf16" or (tcfg.precision == "auto" and dev.type == "cuda")
    ckdir = CheckpointDir(out_dir / "checkpoints", keep_last=tcfg.keep_last, clean=main)
    log_path = out_dir / "train_log.jsonl"
    skipped = SkippedBatches(out_dir / "skipped_batches.jsonl", tcfg.max_bad_updates, write=main)

    num_updates, epoch, pos, best = 0, 0, 0, None
    # the update at which the contrastive accuracy reached diversity_gate (None: not yet)
    diversity_opened: int | None = 0 if tcfg.diversity_gate <= 0 else None
    lang_seconds: dict[str, float] = {}  # audio seconds trained on, per language (multilingual plans)
    identity = _run_identity(tcfg, cfg, cuts_path, init, units_path)
    latest = ckdir.latest()
    ck = load(latest) if latest is not None else None
    changes = _identity_changes(ck["identity"], identity) if ck is not None and "identity" in ck else []
    if changes:  # e.g. Snakemake reran the stage because its settings or its inputs changed
        if main:
            _set_aside(ckdir, log_path, changes)
        latest = ck = None
    if ck is not None:
        model.load_state_dict(ck["model"])
        num_updates, epoch, pos, best = ck["num_updates"], ck["epoch"], ck["batch"], ck.get("best")
        if ck.get("world_size", 1) == info.world_size:
            _set_rng_state(ck["rng"][info.rank])
        else:
            log.warning("%s was written by %d process(es), this run has %d: resuming, but not bit-exactly",
                        latest, ck.get("world_size", 1), info.world_size)
        lang_seconds = dict(ck.get("language_seconds") or {})
        diversity_opened = ck.get("diversity_opened_at", diversity_opened)
        log.info("resumed from %s (update %d, epoch %d, batch %d)", latest, num_updates, epoch, pos)
        if main:
            skipped.resume(epoch, pos)
        if main and log_path.exists():  # drop log lines written after that checkpoint
            kept = [ln for ln in log_path.read_text().splitlines() if json.loads(ln)["update"] <= num_updates]
            with atomic_path(log_path) as tmp:
                tmp.write_text("".join(k + "\n" for k in kept))
    elif main:
        skipped.reset()
        if log_path.exists():
            log_path.unlink()

    raw_model = model  # fully_shard shards it in place; DDP wraps it
    # after loading: every rank starts from rank 0's weights; frozen-transformer updates leave
    # parameters without gradients (DDP must be told; LayerDrop's dropped blocks wrap ties in)
    model = sharding.wrap(model, tcfg.strategy, info, dev, use_bf16, find_unused=task == "finetune",
                          **sharding.ddp_settings(tcfg))
    sharded = sharding.is_sharded(model)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = optim.adamw(params, tcfg, sharded)
    # a padded fine-tuning batch goes on to whole hops of the conv encoder (`padding_hop`); batches
    # of one length (pre-training's crops) stay unpadded, so attention runs without a mask
    hop = padding_hop(raw_model) if task == "finetune" else 1
    if latest is not None:
        sharding.load_optimizer_state(raw_model, opt, ck["optimizer"])
        del ck

    def state() -> dict:
        rng = distributed.gather(_rng_state(), info)  # collectives: every rank calls them
        return {"model": sharding.model_state(raw_model), "optimizer": sharding.optimizer_state(raw_model, opt),
                "num_updates": num_updates, "epoch": epoch, "batch": pos, "best": best, "rng": rng, "world_size": info.world_size,
                "language_seconds": dict(lang_seconds), "diversity_opened_at": diversity_opened,
                "model_config": cfg.to_dict(),
                "train_config": tcfg.to_dict(), "task": task, "identity": identity}

    def epoch_batches(e: int) -> list[list[int]]:
        return distributed.shard_batches(plan.epoch(e), info.rank, info.world_size)

    n_params = sum(p.numel() for p in raw_model.parameters())
    batches, batches_epoch = epoch_batches(epoch), epoch
    log.info("%s: %d utterances (%.2f h), %d batches/epoch%s, model %.2fM params, device %s%s", task, len(cuts),
             sum(c.duration for c in cuts) / 3600, len(batches),
             f" per process x {info.world_size}" if info.enabled else "", n_params / 1e6, dev,
             " (bf16)" if use_bf16 else "")
    if plan.multilingual:
        probs = plan.language_probabilities()
        log.info("languages (hours, sampling probability at alpha %.2f): %s", plan.alpha,
                 ", ".join(f"{k} {h:.3f} h p={probs[k]:.3f}" for k, h in plan.language_hours().items()))
    bar = tqdm(total=tcfg.max_updates, initial=num_updates, desc=task, unit="upd", dynamic_ncols=True,
               mininterval=2.0, disable=not main)
    num_codes = getattr(cfg, "latent_groups", 0) * getattr(cfg, "latent_vars", 0)  # 0: no codebook to watch
    # distractors per masked frame of wav2vec 2.0's contrastive task (0: another objective)
    num_candidates = sum(getattr(cfg, k, 0) for k in ("num_negatives", "cross_sample_negatives", "codebook_negatives")) \
        if family_of(cfg) == "wav2vec2" else 0
    acc: dict[str, float] = {}
    n_acc, audio_s, t0, data_s = 0, 0.0, time.time(), 0.0
    tb = TensorBoardLog(out_dir / "tensorboard", num_updates)
    logf = open(log_path, "a") if main else None
    # the decoded-audio cache lives in this process: workers in other processes would not fill it
    kind = "threads" if tcfg.cache_audio else resolve_kind(tcfg.loader, dev.type)
    loader = Prefetcher(store.__getitem__, tcfg.loader_workers, kind)

    def run_batch(batch: list[int], update: int, micro: int, frozen: bool) -> tuple[torch.Tensor, dict, float]:
        """One batch's forward and backward, its gradients added to the update's (all-reduced with
        the update's last batch, ``micro`` counting from 0): its loss, its statistics and its
        seconds of audio."""
        nonlocal data_s
        g, npg = _step_generator(tcfg.seed, update, info.rank, micro)
        waves, batch_labels = [], []
        t_data = time.perf_counter()  # waiting for decoded audio, cropping, collating
        for i in batch:
            w = loader.get(i)
            start = 0
            if task == "pretrain" and len(w) > int(tcfg.crop_seconds * SAMPLE_RATE):
                crop = int(tcfg.crop_seconds * SAMPLE_RATE)
                start = int(npg.integers(0, len(w) - crop + 1))
                start -= start % crop_align
                w = w[start:start + crop]
            waves.append(w)
            if labels is not None:
                first = start // crop_align
                batch_labels.append(labels[i][first:first + conv_output_frames(cfg, len(w))])
        # normalised on the device; lengths stay on the CPU: the model sees unpadded batches without a sync
        wav, lens = collate_audio(waves, tcfg.normalize_audio, dev)
        if hop > 1 and int(lens.min()) < wav.shape[1]:  # a padded batch
            wav = pad_to_multiple(wav, hop)
        data_s += time.perf_counter() - t_data
        if tcfg.cuda_graphs:  # the stack's replays may now overwrite the last batch's outputs
            step_begins()
        last = micro == tcfg.update_freq - 1
        with sharding.gradient_sync(model, last):
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_bf16):
                # every rank must skip the same blocks: FSDP's collectives, and the compiled
                # stack's released gradients (accel.release_dropped_grads) after DDP's all-reduce
                if info.enabled:
                    sharding.share_layerdrop(raw_model, _step_generator(tcfg.seed, update, micro=micro)[0])
                if task == "pretrain":
                    lab = to_device(collate_labels(batch_labels), dev) if labels is not None else None
                    loss, stats = pretrain_step(raw_model, wav, lens, g, update, tcfg, lab, forward=model,
                                                diversity_weight=tcfg.diversity_weight_at(update, diversity_opened))
                else:
                    tgt, tlens = collate_targets([targets[i] for i in batch])
                    logits, flens = model(wav, lens, apply_mask=True, generator=g, train_encoder=not frozen)
                    loss = ctc_loss(logits, flens, to_device(tgt, dev), to_device(tlens, dev))
                    stats = {"loss": loss.detach()}
            # backward even on a bad loss: with several processes every rank must join the all-reduce
            (loss / tcfg.update_freq if tcfg.update_freq > 1 else loss).backward()
        release_dropped_grads(raw_model, update_ends=last)
        return loss, stats, float(lens.sum()) / SAMPLE_RATE

    collector = ScheduledCollection(tcfg.gc_interval).start()  # Python's pauses: the same update on every rank
    try:
        while num_updates < tcfg.max_updates:
            lr = sched(num_updates)
            for group in opt.param_groups:
                group["lr"] = lr
            frozen = task == "finetune" and num_updates < tcfg.freeze_transformer_updates
            opt.zero_grad(set_to_none=True)
            update_batches = []  # (batch, audio seconds) in turn
            for micro in range(tcfg.update_freq):  # batches whose gradients this update sums
                if pos >= len(batches):
                    epoch, pos = epoch + 1, 0
                if batches_epoch != epoch:
                    batches, batches_epoch = epoch_batches(epoch), epoch
                if micro == 0:
                    begins = (epoch, pos)  # where this update's batches start (a skipped update's record)
                batch = batches[pos]
                loader.schedule(i for b in batches[pos:pos + 1 + tcfg.prefetch_batches] for i in b)
                pos += 1
                micro_loss, micro_stats, seconds = run_batch(batch, num_updates, micro, frozen)
                update_batches.append((batch, seconds))
                if micro == 0:  # the first batch's (with update_freq 1, the update's as they are)
                    loss, stats = micro_loss.detach(), micro_stats
                else:  # summed on the device
                    loss, stats = loss + micro_loss.detach(), {k: stats[k] + v for k, v in micro_stats.items()}
            if tcfg.update_freq > 1:  # the update's loss and statistics: the mean over its batches
                loss, stats = loss / tcfg.update_freq, {k: v / tcfg.update_freq for k, v in stats.items()}
            gnorm = sharding.grad_norm(params, tcfg.clip_norm if tcfg.clip_norm > 0 else math.inf)
            loss_value, gnorm_value, bad = optim.update(opt, loss, gnorm, stats, info)  # the step's one host sync
            collector.after_update()
            if bad:
                ids = [cid for ids in distributed.gather([store.cuts[i].id for b, _ in update_batches for i in b], info)
                       for cid in ids]
                opt.zero_grad(set_to_none=True)
                skipped.skip(update=num_updates, epoch=begins[0], batch=begins[1], cut_ids=ids, loss=loss_value,
                             gnorm=gnorm_value, lr=lr)
                continue
            skipped.ok()
            num_updates += 1
            for batch, seconds in update_batches:
                audio_s += seconds
                if plan.multilingual:  # a batch holds one language
                    lang = languages[batch[0]]
                    lang_seconds[lang] = lang_seconds.get(lang, 0.0) + seconds
            stats.update(lr=lr, gnorm=gnorm_value)
            for k, v in stats.items():
                acc[k] = acc.get(k, 0.0) + float(v)
            n_acc += 1
            bar.update(1)
            interval_end = num_updates % tcfg.log_every == 0 or num_updates == tcfg.max_updates
            if diversity_opened is None and interval_end and "accuracy" in acc:
                accuracy = acc["accuracy"] / n_acc  # every rank at the same update: one collective
                if distributed.any_true(accuracy >= tcfg.diversity_gate, info, dev):
                    diversity_opened = num_updates
                    if main:
                        log.info("update %d: contrastive accuracy %.3f reached diversity_gate %g: the diversity "
                                 "loss starts (after diversity_start, ramped over diversity_warmup)",
                                 num_updates, accuracy, tcfg.diversity_gate)
            if main and interval_end:
                elapsed = max(1e-9, time.time() - t0)
                row = {"update": num_updates, "epoch": epoch, **{k: round(v / n_acc, 5) for k, v in acc.items()},
                       "audio_s_per_s": round(audio_s / elapsed, 2), "data_share": round(data_s / elapsed, 3)}
                if plan.multilingual:
                    row["lang_hours"] = {k: round(v / 3600, 6) for k, v in sorted(lang_seconds.items())}
                if skipped.rows:
                    row["skipped_updates"] = len(skipped.rows)
                logf.write(json.dumps(row) + "\n")
                logf.flush()
                tb.log(row)
                if task == "pretrain":
                    ramping = tcfg.diversity_weight_at(num_updates, diversity_opened) < tcfg.diversity_weight
                    chance = math.log(1 + num_candidates) if num_candidates and num_updates > sched.warmup_updates else None
                    for msg in codebook_warnings(row, 0 if ramping else num_codes, tcfg.collapse_fraction,
                                                 tcfg.diversity_ratio, chance):
                        log.warning("update %d: %s", num_updates, msg)
                show = ("loss", "accuracy", "prob_ppl", "temp") if task == "pretrain" else ("loss",)
                bar.set_postfix({k: f"{row[k]:.3g}" for k in show if k in row} | {"lr": f"{lr:.1e}"})
            if interval_end:  # on every rank: the gate above reads the interval's sums
                acc, n_acc, audio_s, t0, data_s = {}, 0, 0.0, time.time(), 0.0
            if num_updates % tcfg.save_every == 0 or num_updates == tcfg.max_updates:
                is_best = False
                if dev_store is not None:
                    metrics = evaluate_ctc(raw_model, dev_store, dev_refs, units, tcfg, dev)
                    is_best = best is None or dev_rank(metrics) < dev_rank(best)
                    if is_best:
                        best = {**metrics, "update": num_updates}
                    dev_row = {"update": num_updates, "dev_wer": metrics["wer"], "dev_cer": metrics["cer"]}
                    if main:
                        logf.write(json.dumps(dev_row) + "\n")
                        logf.flush()
                        tb.log(dev_row)
                        tqdm.write(f"update {num_updates}: dev WER {metrics['wer']:.3f} CER {metrics['cer']:.3f}")
                st = state()
                if main:
                    ckdir.save(st, num_updates, is_best=is_best)
                del st
                collector.full()  # every rank has just waited for the others anyway
    finally:
        collector.stop()
        loader.close()
        bar.close()
        if logf is not None:
            logf.close()
        tb.close()

    if not main:
        distributed.shutdown()
        return out_dir / "model.pt"
    final_src = ckdir.best if (dev_store is not None and ckdir.best.exists()) else ckdir.latest()
    final = load(final_src)
    model_file = out_dir / "model.pt"
    extra: dict = {}
    if plan.multilingual:
        extra["language_sampling"] = _language_summary(plan, final.get("language_seconds") or {})
        write_json(out_dir / "language_sampling.json", extra["language_sampling"])
        log.info("hours sampled per language: %s", ", ".join(
            f"{k} {v['hours_sampled']:.4f} h ({100 * v['share_sampled']:.1f}%, p={v['probability']:.3f}, "
            f"{v['hours_available']:.4f} h available)" for k, v in extra["language_sampling"]["languages"].items()))
    if tcfg.adapter:
        lang = tcfg.adapter["lang"]
        extra["adapter_lang"] = lang
        extra["adapters"] = {**other_adapters, lang: {"weights": adapter_weights(final["model"]), "units": units}}
    save_atomic({"model": final["model"], "model_config": final["model_config"], "task": task,
                 "units": units, "train_config": tcfg.to_dict(), "num_updates": final["num_updates"],
                 "best": final.get("best"), "init": str(init) if init else None, **extra}, model_file)
    log.info("wrote %s (from %s)", model_file, final_src.name)
    distributed.shutdown()
    return model_file
