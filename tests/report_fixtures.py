"""A synthetic experiment directory as the stages leave it: training logs, decode outputs with
tuning tables, a pre-trained model.pt, score records. For the report tests (fast, CPU)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from synth import write_tiny_cuts
from w2v.decode.tune import write_tuning_tsv
from w2v.models import Wav2Vec2ForPreTraining, load_model_config

SMALL = dict(conv_feature_layers=[[32, 10, 5], [32, 3, 2], [32, 3, 2], [32, 3, 2], [32, 3, 2], [32, 2, 2], [32, 2, 2]],
             encoder_layers=1, encoder_embed_dim=32, encoder_ffn_embed_dim=64, encoder_attention_heads=2,
             conv_pos=8, conv_pos_groups=4, final_dim=16, latent_vars=8, num_negatives=4, mask_length=3)
EXPS = [(init, subset) for subset in ("10m", "1h") for init in ("pretrained", "scratch")]


def _jsonl(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def pretrain_log(path: Path, updates: int = 50) -> None:
    _jsonl(path, [{"update": u, "epoch": 0, "loss": 4.0 * math.exp(-u / 20) + 2, "accuracy": min(0.9, u / 60),
                   "code_ppl": 20 + u, "prob_ppl": 25 + u, "temp": 2.0 * 0.99 ** u, "lr": 1e-3 * min(1, u / 10),
                   "gnorm": 1.0 / u, "audio_s_per_s": 30.0} for u in range(5, updates + 1, 5)])


def finetune_log(path: Path, offset: float) -> None:
    rows = []
    for u in range(10, 101, 10):
        rows.append({"update": u, "epoch": 0, "loss": 5 - u / 30 + offset, "lr": 1e-4, "gnorm": 2.0})
        if u % 50 == 0:
            rows.append({"update": u, "dev_wer": 0.9 - u / 500 + offset / 10, "dev_cer": 0.5 - u / 500})
    _jsonl(path, rows)


def decode_dir(exp: Path, name: str, named: bool = False) -> None:
    """decode.json with a greedy and a tuned 4-gram decoder, and the 4-gram's tuning table: beside
    its hypotheses (older decode.json files), or elsewhere and named by ``tuning`` (``named``)."""
    d = exp / "decode" / name
    table = [{"lm_weight": w, "word_score": s, "wer": 0.5 + abs(w - 1) / 10 + abs(s) / 20, "errors": 0, "ref_words": 1}
             for w in (0.5, 1.0, 2.0) for s in (-1.0, 0.0, 1.0)]
    tuning = d / ("sweep.tsv" if named else "4gram/tuning.tsv")
    write_tuning_tsv(table, tuning)
    dec = {"decoders": {"greedy": {"lm": "none", "hyps": {"dev": str(d / "greedy" / "hyp_dev.txt")}},
                        "4gram": {"lm": "lm.bin", "hyps": {"dev": str(d / "4gram" / "hyp_dev.txt")},
                                  "lm_weight": 1.0, "word_score": 0.0, "tuned_on": "dev",
                                  **({"tuning": str(tuning)} if named else {})}}}
    (d / "decode.json").write_text(json.dumps(dec))


def score_records(exps=EXPS, decoders=("greedy", "4gram")) -> list[dict]:
    recs = []
    for init, subset in exps:
        for decoder in decoders:
            for test_set in ("dev", "test"):
                wer = (0.3 if init == "pretrained" else 0.8) * (0.5 if subset == "1h" else 1) * (
                    0.7 if decoder == "4gram" else 1)
                recs.append({"model": "tiny", "pretrain_data": "synthetic 1 h" if init == "pretrained" else "none",
                             "labeled": subset, "init": init, "decoder": decoder,
                             "lm": "lm.bin" if decoder == "4gram" else "none", "test_set": test_set,
                             "is_dev": test_set == "dev", "lm_weight": 1.0 if decoder == "4gram" else None,
                             "word_score": 0.0 if decoder == "4gram" else None, "wer": wer, "cer": wer / 2,
                             "num_words": 100, "num_utts": 10})
    return recs


def pretrained_model(path: Path) -> Path:
    """A randomly initialised small pre-training model.pt (the codebook statistics need only a quantizer)."""
    torch.manual_seed(0)
    cfg = load_model_config("tiny", **SMALL)
    model = Wav2Vec2ForPreTraining(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict(), "model_config": cfg.to_dict(), "task": "pretrain",
                "train_config": {"normalize_audio": True}}, path)
    return path


def full_experiment(root: Path) -> dict:
    """Every piece the report reads; returns the paths the report needs."""
    exp = root / "exp" / "synth"
    pretrain_log(exp / "pretrain" / "train_log.jsonl")
    model = pretrained_model(exp / "pretrain" / "model.pt")
    for i, (init, subset) in enumerate(EXPS):
        finetune_log(exp / "finetune" / f"{init}_{subset}" / "train_log.jsonl", offset=i / 4)
        decode_dir(exp, f"{init}_{subset}", named=init == "pretrained")
    cuts = write_tiny_cuts(root / "audio", n=4)
    return {"exp": exp, "model": model, "cuts": cuts, "records": score_records()}
