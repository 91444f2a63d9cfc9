"""Does our wav2vec 2.0 pre-training learn where the Hugging Face peer's does?

Same audio, same crops (the same seeded sampler), same optimizer, schedule, clipping,
Gumbel temperature and precision for both implementations; only the model, its masks,
negatives and loss differ. Prints the contrastive loss and accuracy every `--log-every`
updates for each run, so a collapse (loss pinned at ln(K+1)) shows up beside a run that
learns. Runs on a GPU box; the audio is a demo corpus folder (``local/demo.py``).

    python bench/pretrain_compare.py --corpus data/demo_gpu/corpus --runs hf:512x8 ours:512x8 \
        --steps 1500 --lr 2e-4 --batch 32 --crop 5.0
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

SR = 16000


def load_pool(corpus: Path, hours: float, min_seconds: float) -> list[torch.Tensor]:
    files = sorted((corpus / "audio").glob("pool/*/*.flac")) + sorted((corpus / "audio").glob("train/*/*.flac"))
    random.Random(0).shuffle(files)
    out, total = [], 0.0
    for f in files:
        x, sr = sf.read(f, dtype="float32")
        if sr != SR:
            raise ValueError(f"{f}: {sr} Hz, expected {SR}")
        if len(x) < min_seconds * SR:
            continue
        out.append(torch.from_numpy(x))
        total += len(x) / SR
        if total >= hours * 3600:
            break
    print(f"pool: {len(out)} utterances >= {min_seconds} s, {total / 3600:.2f} h", flush=True)
    return out


def crops(pool, batch: int, crop: int, rng: random.Random) -> torch.Tensor:
    xb = torch.empty(batch, crop)
    for j in range(batch):
        x = pool[rng.randrange(len(pool))]
        o = rng.randint(0, len(x) - crop)
        xb[j] = x[o:o + crop]
    return (xb - xb.mean(1, keepdim=True)) / (xb.std(1, keepdim=True) + 1e-5)


def schedule(step: int, total: int, peak: float, warmup: float) -> float:
    w = max(1, int(warmup * total))
    return peak * (step / w if step < w else max(0.0, (total - step) / max(1, total - w)))


def temperature(step: int, total: int) -> float:
    return max(0.5, 2.0 * 0.25 ** (step / (0.7 * total)))


def build(impl: str, dim: int, layers: int, dev: str, overrides: dict):
    heads = dim // 64
    if impl == "hf":
        from transformers import Wav2Vec2Config, Wav2Vec2ForPreTraining
        cfg = Wav2Vec2Config(hidden_size=dim, num_hidden_layers=layers, num_attention_heads=heads,
                             intermediate_size=4 * dim, mask_time_prob=0.65, mask_time_length=10, num_negatives=100,
                             codevector_dim=256, proj_codevector_dim=256, diversity_loss_weight=0.1, layerdrop=0.0)
        cfg._attn_implementation = "sdpa"
        return Wav2Vec2ForPreTraining(cfg).to(dev).train()
    from w2v.models import Wav2Vec2ForPreTraining
    from w2v.models.config import Wav2Vec2Config
    cfg = Wav2Vec2Config(encoder_layers=layers, encoder_embed_dim=dim, encoder_ffn_embed_dim=4 * dim,
                         encoder_attention_heads=heads, layerdrop=0.0, **overrides)
    return Wav2Vec2ForPreTraining(cfg).to(dev).train()


def step_hf(model, x, gen):
    from transformers.models.wav2vec2.modeling_wav2vec2 import _compute_mask_indices, _sample_negative_indices
    b = x.shape[0]
    frames = int(model._get_feat_extract_output_lengths(torch.tensor(x.shape[1])))
    mask = _compute_mask_indices((b, frames), 0.65, 10, min_masks=2)
    neg = _sample_negative_indices((b, frames), 100, mask_time_indices=mask)
    out = model(x, mask_time_indices=torch.tensor(mask, device=x.device),
                sampled_negative_indices=torch.tensor(neg, device=x.device))
    n = float(mask.sum())
    contrastive = out.contrastive_loss / n
    return out.loss / n, {"contrastive": contrastive, "code_ppl": out.codevector_perplexity}


def step_ours(model, x, gen, feature_penalty: float, diversity: float):
    from w2v.train.losses import pretraining_loss
    out = model(x, None, generator=gen)
    loss, stats = pretraining_loss(out, diversity, feature_penalty)
    return loss, {k: stats[k] for k in ("contrastive", "diversity", "feature_pen", "code_ppl", "prob_ppl", "accuracy")}


TRAIN_KEYS = ("lr", "warmup", "clip", "feature_penalty", "diversity", "diversity_start", "diversity_warmup", "steps",
              "batch", "crop", "temp")


def run(spec: str, pool, args) -> dict:
    """``impl:DIMxLAYERS[@key=value,...]``: training keys (TRAIN_KEYS) replace the command
    line's, any other key is a model config field of 'ours' runs (JSON value)."""
    head, _, tail = spec.partition("@")
    impl, size = head.split(":")
    dim, layers = (int(v) for v in size.split("x"))
    a = argparse.Namespace(**vars(args))
    overrides = json.loads(a.ours_overrides) if impl == "ours" else {}
    for item in filter(None, tail.split(",")):
        key, value = item.split("=")
        if key in TRAIN_KEYS:
            setattr(a, key, type(getattr(a, key))(value))
        else:
            overrides[key] = json.loads(value)
    torch.manual_seed(0)
    np.random.seed(0)
    dev = a.device
    model = build(impl, dim, layers, dev, overrides)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.01, fused=dev == "cuda")
    rng = random.Random(1)
    gen = torch.Generator(device=dev)
    gen.manual_seed(0)
    crop = int(a.crop * SR)
    from w2v.train.config import TrainConfig
    ramp = TrainConfig(max_updates=a.steps, diversity_weight=a.diversity, diversity_start=a.diversity_start,
                       diversity_warmup=a.diversity_warmup)  # the loop's diversity schedule
    hist, t0, skipped = [], time.time(), 0
    for step in range(a.steps):
        lr = schedule(step, a.steps, a.lr, a.warmup)
        for g in opt.param_groups:
            g["lr"] = lr
        temp = temperature(step, a.steps) if a.temp <= 0 else a.temp
        if impl == "hf":
            model.set_gumbel_temperature(temp)
        else:
            model.quantizer.temperature = temp
        x = crops(pool, a.batch, crop, rng).to(dev, non_blocking=True)
        with torch.autocast(dev, dtype=torch.bfloat16):
            loss, stats = step_hf(model, x, gen) if impl == "hf" else step_ours(model, x, gen, a.feature_penalty, ramp.diversity_weight_at(step))
        if not torch.isfinite(loss):
            skipped += 1
            opt.zero_grad(set_to_none=True)
            continue
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), a.clip)
        if torch.isfinite(gn):
            opt.step()
        opt.zero_grad(set_to_none=True)
        if (step + 1) % a.log_every == 0:
            row = {"step": step + 1, "loss": float(loss.detach()), "gnorm": float(gn), "lr": lr, "temp": temp,
                   **{k: float(v) for k, v in stats.items()}}
            hist.append(row)
            print(spec, json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}),
                  flush=True)
    secs = time.time() - t0
    result = {"run": spec, "steps": a.steps, "seconds": secs, "audio_s_per_s": a.steps * a.batch * a.crop / secs,
              "skipped": skipped, "final_contrastive": hist[-1]["contrastive"] if hist else math.nan,
              "chance": math.log(101), "hist": hist}
    print(spec, "done", json.dumps({k: v for k, v in result.items() if k != "hist"}), flush=True)
    del model, opt
    torch.cuda.empty_cache()
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", type=Path, required=True)
    p.add_argument("--runs", nargs="+", default=["hf:512x8", "ours:512x8"], help="impl:DIMxLAYERS")
    p.add_argument("--hours", type=float, default=8.0)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--crop", type=float, default=5.0)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--warmup", type=float, default=0.08)
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--feature-penalty", type=float, default=10.0)
    p.add_argument("--diversity", type=float, default=0.1)
    p.add_argument("--diversity-start", type=float, default=0.0, help="fraction of the steps without diversity loss")
    p.add_argument("--diversity-warmup", type=float, default=0.0, help="fraction of the steps over which the "
                   "diversity weight ramps from 0 ('ours' runs; the loop's pretrain.diversity_warmup)")
    p.add_argument("--temp", type=float, default=0.0, help="fixed Gumbel temperature (0: 2 -> 0.5 over 70%%)")
    p.add_argument("--ours-overrides", default="{}", help="JSON Wav2Vec2Config fields for 'ours' runs")
    p.add_argument("--log-every", type=int, default=100)
    p.add_argument("--device", default="cuda")
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args()
    pool = load_pool(a.corpus, a.hours, a.crop)
    results = [run(spec, pool, a) for spec in a.runs]
    if a.out:
        a.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
