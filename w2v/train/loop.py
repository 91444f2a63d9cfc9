"""One training loop for pre-training (every family) and CTC fine-tuning.

Set-up, data, model, optimizer, loop, checkpoint, in a straight line. Everything random in
an update (crops, masks, negatives, Gumbel noise) is drawn from a generator seeded by
``(seed, update)``; dropout uses torch's global generator, whose state is checkpointed. With
the data position stored as ``(epoch, batch)`` a killed run resumes exactly where it was.
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

from w2v.data.batching import BatchPlan, collate_audio, collate_targets
from w2v.data.cuts import transcript
from w2v.decode.ctc import load_units
from w2v.io import atomic_path
from w2v.models import Wav2Vec2Config
from w2v.models.families import build_ctc_model, build_pretraining_model, config_from_dict, family_of
from w2v.train.checkpoint import CheckpointDir, load, save_atomic
from w2v.train.config import TrainConfig
from w2v.train.losses import ctc_loss
from w2v.train.schedules import Schedule
from w2v.train.steps import pretrain_step
from w2v.train.targets import collate_labels, labels_for_cuts

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


class AudioStore:
    """Mono 16 kHz float32 audio of a list of cuts, decoded on demand (optionally cached)."""

    def __init__(self, cuts: list, cache: bool):
        self.cuts = cuts
        self.cache: dict[int, np.ndarray] | None = {} if cache else None

    def __getitem__(self, i: int) -> np.ndarray:
        if self.cache is not None and i in self.cache:
            return self.cache[i]
        cut = self.cuts[i]
        try:
            audio = cut.load_audio()
        except Exception as e:
            raise TrainingError(f"cannot load audio of cut {cut.id}: {e}") from e
        audio = np.asarray(audio, dtype=np.float32)
        audio = audio.mean(axis=0) if audio.ndim == 2 else audio
        if self.cache is not None:
            self.cache[i] = audio
        return audio


def _load_cuts(path: str | Path) -> list:
    from lhotse import load_manifest

    path = Path(path)
    if not path.is_file():
        raise TrainingError(f"cut manifest not found: {path}")
    return list(load_manifest(path))


def _ctc_items(cuts: list, unit_to_id: dict[str, int], cfg: Wav2Vec2Config, tcfg: TrainConfig, what: str):
    """Encode transcripts; drop (and count) what CTC cannot learn from."""
    from w2v.data.lang import encode

    keep, targets, dropped = [], [], {"short": [], "empty": [], "unknown_units": [], "too_many_tokens": []}
    for cut in cuts:
        text = transcript(cut)
        if cut.duration < tcfg.min_seconds:
            dropped["short"].append(cut.id)
            continue
        if not text:
            dropped["empty"].append(cut.id)
            continue
        if any(ch not in unit_to_id for ch in text.replace(" ", "")):
            dropped["unknown_units"].append(cut.id)
            continue
        ids = encode(text, unit_to_id)
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
    """The model to train and its config; ``init``: pre-trained weights to start from (fine-tuning,
    or a previous pre-training stage)."""
    if task == "pretrain":
        cfg = replace(model_cfg, **tcfg.model_overrides)
        return build_pretraining_model(cfg, load(init)["model"] if init is not None else None), cfg
    if init is not None:
        ck = load(init)
        if ck.get("task") != "pretrain":
            raise TrainingError(f"{init}: expected a pre-trained model, found task {ck.get('task')!r}")
        model_cfg = config_from_dict(ck["model_config"], str(init))
    cfg = replace(model_cfg, **_finetune_overrides(model_cfg, tcfg.model_overrides))
    model = build_ctc_model(cfg, vocab_size, tcfg.final_dropout, ck["model"] if init is not None else None)
    return model, cfg


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def _set_rng_state(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    np.random.set_state(s["numpy"])
    random.setstate(s["python"])
    if s.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def _step_generator(seed: int, num_updates: int) -> tuple[torch.Generator, np.random.Generator]:
    s = seed * 1_000_003 + num_updates
    return torch.Generator().manual_seed(s), np.random.default_rng(s)


def evaluate_ctc(model, store: AudioStore, refs: list[str], units: list[str], tcfg: TrainConfig,
                 device: torch.device) -> dict:
    """Greedy-decode a dev set with the decode stage's code; its word and character error rates."""
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
    out_dir.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(device)
    task = tcfg.task
    if task not in ("pretrain", "finetune"):
        raise TrainingError(f"unknown task {task!r}; expected pretrain or finetune")
    random.seed(tcfg.seed)
    np.random.seed(tcfg.seed)
    torch.manual_seed(tcfg.seed)

    units = load_units(units_path) if task == "finetune" else None
    model, cfg = build_model(task, model_cfg, tcfg, len(units) if units else None, init)
    cuts = _load_cuts(cuts_path)
    if task == "pretrain":
        short = [c.id for c in cuts if c.duration < tcfg.min_seconds]
        if short:
            log.warning("skipping %d utterance(s) shorter than %.2fs, e.g. %s", len(short), tcfg.min_seconds,
                        ", ".join(short[:5]))
        cuts = [c for c in cuts if c.duration >= tcfg.min_seconds]
        targets = None
        durations = [min(c.duration, tcfg.crop_seconds) for c in cuts]
    else:
        unit_to_id = {u: i for i, u in enumerate(units)}
        cuts, targets, _ = _ctc_items(cuts, unit_to_id, cfg, tcfg, str(cuts_path))
        durations = [c.duration for c in cuts]
    if not cuts:
        raise TrainingError(f"{cuts_path}: no usable utterances left for {task}")
    labels = labels_for_cuts(labels_path, cuts) if task == "pretrain" and labels_path is not None else None
    # Crops of labeled audio start on a frame boundary, so the labels stay aligned.
    crop_align = math.prod(s for _, _, s in cfg.conv_feature_layers) if labels is not None else 1
    store = AudioStore(cuts, tcfg.cache_audio)
    plan = BatchPlan(durations, tcfg.max_duration, seed=tcfg.seed, num_buckets=tcfg.num_buckets,
                     max_batch_size=tcfg.max_batch_size)
    dev_store = dev_refs = None
    if task == "finetune" and dev_cuts_path is not None:
        dcuts, _, _ = _ctc_items(_load_cuts(dev_cuts_path), unit_to_id, cfg,
                                        replace(tcfg, min_seconds=0.0), str(dev_cuts_path))
        dev_store = AudioStore(dcuts, cache=True)
        dev_refs = [transcript(c) for c in dcuts]

    if task == "finetune" and tcfg.freeze_feature_encoder:
        model.freeze_feature_encoder()
    model.to(dev).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=tcfg.lr, betas=tcfg.betas, eps=tcfg.eps, weight_decay=tcfg.weight_decay)
    sched = Schedule(tcfg.schedule, tcfg.lr, tcfg.max_updates, warmup=tcfg.warmup, hold=tcfg.hold,
                     end_lr=tcfg.end_lr, final_lr_scale=tcfg.final_lr_scale)
    use_bf16 = tcfg.precision == "bf16" or (tcfg.precision == "auto" and dev.type == "cuda")
    ckdir = CheckpointDir(out_dir / "checkpoints", keep_last=tcfg.keep_last)
    log_path = out_dir / "train_log.jsonl"

    num_updates, epoch, pos, best = 0, 0, 0, None
    latest = ckdir.latest()
    if latest is not None:
        ck = load(latest)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        num_updates, epoch, pos, best = ck["num_updates"], ck["epoch"], ck["batch"], ck.get("best")
        _set_rng_state(ck["rng"])
        log.info("resumed from %s (update %d, epoch %d, batch %d)", latest, num_updates, epoch, pos)
        if log_path.exists():  # drop log lines written after that checkpoint
            kept = [ln for ln in log_path.read_text().splitlines() if json.loads(ln)["update"] <= num_updates]
            with atomic_path(log_path) as tmp:
                tmp.write_text("".join(k + "\n" for k in kept))
    elif log_path.exists():
        log_path.unlink()

    def state() -> dict:
        return {"model": model.state_dict(), "optimizer": opt.state_dict(), "num_updates": num_updates,
                "epoch": epoch, "batch": pos, "best": best, "rng": _rng_state(),
                "model_config": cfg.to_dict(), "train_config": tcfg.to_dict(), "task": task}

    n_params = sum(p.numel() for p in model.parameters())
    log.info("%s: %d utterances (%.2f h), %d batches/epoch, model %.2fM params, device %s%s", task, len(cuts),
             sum(c.duration for c in cuts) / 3600, len(plan.epoch(epoch)), n_params / 1e6, dev,
             " (bf16)" if use_bf16 else "")
    bar = tqdm(total=tcfg.max_updates, initial=num_updates, desc=task, unit="upd", dynamic_ncols=True,
               mininterval=2.0)
    acc: dict[str, float] = {}
    n_acc, audio_s, t0, bad_steps = 0, 0.0, time.time(), 0
    logf = open(log_path, "a")
    try:
        while num_updates < tcfg.max_updates:
            batches = plan.epoch(epoch)
            if pos >= len(batches):
                epoch, pos = epoch + 1, 0
                continue
            batch = batches[pos]
            g, npg = _step_generator(tcfg.seed, num_updates)
            waves, batch_labels = [], []
            for i in batch:
                w = store[i]
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
            wav, lens = collate_audio(waves, tcfg.normalize_audio)
            wav, lens = wav.to(dev), lens.to(dev)
            lr = sched(num_updates)
            for group in opt.param_groups:
                group["lr"] = lr
            frozen = task == "finetune" and num_updates < tcfg.freeze_transformer_updates
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_bf16):
                if task == "pretrain":
                    lab = collate_labels(batch_labels).to(dev) if labels is not None else None
                    loss, stats = pretrain_step(model, wav, lens, g, num_updates, tcfg, lab)
                else:
                    tgt, tlens = collate_targets([targets[i] for i in batch])
                    logits, flens = model(wav, lens, apply_mask=True, generator=g, train_encoder=not frozen)
                    loss = ctc_loss(logits, flens, tgt.to(dev), tlens.to(dev))
                    stats = {"loss": float(loss.detach())}
            opt.zero_grad(set_to_none=True)
            if not torch.isfinite(loss):
                bad_steps += 1
                log.warning("update %d: non-finite loss, batch skipped (%d in a row)", num_updates, bad_steps)
                if bad_steps >= 10:
                    raise TrainingError(f"loss was non-finite for {bad_steps} batches in a row at update "
                                        f"{num_updates}; lower lr (now {lr:.2e}) or check the data")
                pos += 1
                continue
            bad_steps = 0
            loss.backward()
            gnorm = torch.nn.utils.clip_grad_norm_(params, tcfg.clip_norm if tcfg.clip_norm > 0 else math.inf)
            opt.step()
            num_updates += 1
            pos += 1
            audio_s += float(lens.sum()) / SAMPLE_RATE
            stats.update(lr=lr, gnorm=float(gnorm))
            for k, v in stats.items():
                acc[k] = acc.get(k, 0.0) + float(v)
            n_acc += 1
            bar.update(1)
            if num_updates % tcfg.log_every == 0 or num_updates == tcfg.max_updates:
                row = {"update": num_updates, "epoch": epoch, **{k: round(v / n_acc, 5) for k, v in acc.items()},
                       "audio_s_per_s": round(audio_s / max(1e-9, time.time() - t0), 2)}
                logf.write(json.dumps(row) + "\n")
                logf.flush()
                show = ("loss", "accuracy", "prob_ppl", "temp") if task == "pretrain" else ("loss",)
                bar.set_postfix({k: f"{row[k]:.3g}" for k in show if k in row} | {"lr": f"{lr:.1e}"})
                acc, n_acc, audio_s, t0 = {}, 0, 0.0, time.time()
            if num_updates % tcfg.save_every == 0 or num_updates == tcfg.max_updates:
                is_best = False
                if dev_store is not None:
                    metrics = evaluate_ctc(model, dev_store, dev_refs, units, tcfg, dev)
                    is_best = best is None or metrics["wer"] < best["wer"] or (
                        metrics["wer"] == best["wer"] and metrics["cer"] < best["cer"])
                    if is_best:
                        best = {**metrics, "update": num_updates}
                    logf.write(json.dumps({"update": num_updates, "dev_wer": metrics["wer"],
                                           "dev_cer": metrics["cer"]}) + "\n")
                    logf.flush()
                    tqdm.write(f"update {num_updates}: dev WER {metrics['wer']:.3f} CER {metrics['cer']:.3f}")
                ckdir.save(state(), num_updates, is_best=is_best)
    finally:
        bar.close()
        logf.close()

    final_src = ckdir.best if (dev_store is not None and ckdir.best.exists()) else ckdir.latest()
    final = load(final_src)
    model_file = out_dir / "model.pt"
    save_atomic({"model": final["model"], "model_config": final["model_config"], "task": task,
                 "units": units, "train_config": tcfg.to_dict(), "num_updates": final["num_updates"],
                 "best": final.get("best"), "init": str(init) if init else None}, model_file)
    log.info("wrote %s (from %s)", model_file, final_src.name)
    return model_file
