"""Codebook usage of a pre-trained quantizer, measured on a few utterances at report time.

The training log has the code and prob perplexities summed over groups; a collapsing codebook
shows better as a histogram per group: how many of the V entries are ever picked, and how
evenly. The counts are of the argmax codes (the quantizer in evaluation mode) over the
unmasked conv features of up to ``max_utterances`` utterances spread over the given cuts.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

__all__ = ["codebook_usage"]


@torch.no_grad()
def codebook_usage(model_path: str | Path, cuts_path: str | Path, max_utterances: int = 20) -> dict:
    """Per-group code counts of a pre-trained ``model.pt`` over utterances of ``cuts_path``.

    Returns:
        ``{"groups": G, "vars": V, "utterances", "frames", "counts": [[V ints] * G],
        "used": [entries picked at least once, per group], "perplexity": [exp(entropy) of
        the usage, per group], "model", "cuts"}``.

    Raises:
        ValueError: the model is not a pre-trained wav2vec 2.0 with a quantizer, or the cuts
            are empty. FileNotFoundError: a missing file.
    """
    from lhotse import load_manifest

    from w2v.data.batching import collate_audio
    from w2v.models import Wav2Vec2Config, Wav2Vec2ForPreTraining
    from w2v.train.checkpoint import load
    from w2v.train.loop import AudioStore

    for p in (model_path, cuts_path):
        if not Path(p).is_file():
            raise FileNotFoundError(f"{p}: not found")
    ck = load(model_path)
    if ck.get("task") != "pretrain":
        raise ValueError(f"{model_path}: not a pre-trained model (task {ck.get('task')!r})")
    cfg = Wav2Vec2Config.from_dict(ck["model_config"])
    if not cfg.quantize_targets:
        raise ValueError(f"{model_path}: the model has no quantizer (quantize_targets is off)")
    model = Wav2Vec2ForPreTraining(cfg)
    model.load_state_dict(ck["model"])
    model.eval()
    cuts = list(load_manifest(cuts_path))
    if not cuts:
        raise ValueError(f"{cuts_path}: no cuts")
    step = max(1, len(cuts) // max_utterances)
    cuts = cuts[::step][:max_utterances]
    store = AudioStore(cuts, cache=False)
    normalize = (ck.get("train_config") or {}).get("normalize_audio", True)
    g, v = cfg.latent_groups, cfg.latent_vars
    counts = torch.zeros(g, v, dtype=torch.long)
    frames = 0
    for i in range(len(cuts)):
        wav, lens = collate_audio([store[i]], normalize)
        feats, _ = model.wav2vec2.extract_features(wav, lens)
        _, normed = model.wav2vec2.feature_projection(feats)
        idx = model.quantizer.code_indices(normed).reshape(-1, g)
        frames += idx.shape[0]
        for k in range(g):
            counts[k] += torch.bincount(idx[:, k], minlength=v)
    probs = counts.double() / max(frames, 1)
    perplexity = [math.exp(-float((p[p > 0] * p[p > 0].log()).sum())) for p in probs]
    return {"groups": g, "vars": v, "utterances": len(cuts), "frames": frames, "counts": counts.tolist(),
            "used": [int((c > 0).sum()) for c in counts], "perplexity": [round(x, 3) for x in perplexity],
            "model": str(model_path), "cuts": str(cuts_path)}
