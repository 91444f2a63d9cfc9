"""Training throughput of w2v's wav2vec 2.0 beside Hugging Face's, same config, one run, one machine.

Both models are built from the same preset (our config mapped to transformers.Wav2Vec2Config),
trained on the same random audio with AdamW, and timed per optimizer step after warm-up.
Unit: seconds of 16 kHz audio processed per wall-clock second. On CUDA both use bf16
autocast; on CPU fp32.

    python bench/train_speed.py --preset tiny --batch 8 --seconds 4 --steps 5        # CPU
    python bench/train_speed.py --preset base --batch 8 --seconds 15.625 --steps 10  # GPU
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from w2v.interop.hf_config import to_hf_config
from w2v.models import Wav2Vec2ForPreTraining, load_model_config
from w2v.train.losses import pretraining_loss


def hf_model(cfg):
    from transformers import Wav2Vec2ForPreTraining as HF

    hc = to_hf_config(cfg)
    hc._attn_implementation = "sdpa"
    m = HF(hc)
    m.set_gumbel_temperature(2.0)
    return m


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="tiny")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cfg = load_model_config(a.preset)
    samples = int(a.seconds * 16000)
    x = torch.randn(a.batch, samples, device=dev)
    lengths = torch.full((a.batch,), samples, device=dev)
    amp = dict(device_type=dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda")

    ours = Wav2Vec2ForPreTraining(cfg).to(dev).train()
    peer = hf_model(cfg).to(dev).train()
    from transformers.models.wav2vec2.modeling_wav2vec2 import _compute_mask_indices, _sample_negative_indices

    frames = int(peer._get_feat_extract_output_lengths(torch.tensor(samples)))
    mask = _compute_mask_indices((a.batch, frames), cfg.mask_prob, cfg.mask_length, min_masks=2)
    neg = _sample_negative_indices((a.batch, frames), cfg.num_negatives, mask_time_indices=mask)
    mask = torch.tensor(mask, device=dev)
    neg = torch.tensor(neg, device=dev)

    def step_ours(opt, i):
        with torch.autocast(**amp):
            out = ours(x, lengths, generator=torch.Generator().manual_seed(i))
            loss, _ = pretraining_loss(out)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def step_peer(opt, i):
        with torch.autocast(**amp):
            loss = peer(x, mask_time_indices=mask, sampled_negative_indices=neg).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    results = {}
    for name, model, step in (("w2v", ours, step_ours), ("transformers", peer, step_peer)):
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=dev.type == "cuda")
        for i in range(a.warmup):
            step(opt, i)
        if dev.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        for i in range(a.steps):
            step(opt, i)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        dt = (time.perf_counter() - t0) / a.steps
        results[name] = {"step_s": round(dt, 3), "audio_s_per_s": round(a.batch * a.seconds / dt, 1)}
        if dev.type == "cuda":
            results[name]["peak_mem_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    device = torch.cuda.get_device_name() if dev.type == "cuda" else f"{platform.processor() or 'cpu'}, {torch.get_num_threads()} threads"
    print(json.dumps({"preset": a.preset, "batch": a.batch, "seconds": a.seconds, "device": device,
                      "torch": torch.__version__, **results,
                      "ratio": round(results["w2v"]["audio_s_per_s"] / results["transformers"]["audio_s_per_s"], 2)}))


if __name__ == "__main__":
    main()
