"""Discrete frame labels per cut: HuBERT's k-means targets and vq-wav2vec's exported units.

One file format for both, written atomically: JSON lines ``{"id": CUT_ID, "units": [int, ...]}``
(one integer per 20 ms / 10 ms frame), or, for a ``.txt`` path, Kaldi-style text lines
``CUT_ID u1 u2 ...``. Cut ids are lhotse's, so a CutSet and its units join on ``id``.

HuBERT (Hsu et al. 2021, section 3): iteration 1 clusters MFCCs (13 coefficients + deltas +
delta-deltas, per-utterance mean/variance normalised) computed with a 25 ms window and a
20 ms hop, so that label j covers the same samples as the conv encoder's frame j; iteration 2
clusters a Transformer layer of the iteration-1 model. k-means is `w2v.models.kmeans.kmeans_fit`.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from w2v.data.batching import collate_audio
from w2v.io import write_text
from w2v.models.kmeans import kmeans_assign, kmeans_fit

log = logging.getLogger(__name__)
SAMPLE_RATE = 16000


def write_units(path: str | Path, units: dict[str, list[int]]) -> None:
    """``{cut_id: units}`` -> JSON lines (or text lines for a ``.txt`` path), atomically."""
    path = Path(path)
    if path.suffix == ".txt":
        text = "".join(f"{cid} {' '.join(map(str, u))}\n" for cid, u in units.items())
    else:
        text = "".join(json.dumps({"id": cid, "units": list(map(int, u))}) + "\n" for cid, u in units.items())
    write_text(path, text)


def read_units(path: str | Path) -> dict[str, list[int]]:
    """Inverse of `write_units`; a malformed line raises ``ValueError`` naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"unit file not found: {path}")
    out = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            if path.suffix == ".txt":
                cid, *rest = line.split()
                out[cid] = [int(u) for u in rest]
            else:
                d = json.loads(line)
                out[d["id"]] = [int(u) for u in d["units"]]
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path}:{n}: not a unit line ({e})") from e
    return out


def labels_for_cuts(path: str | Path, cuts: list) -> list[torch.Tensor]:
    """Frame labels for each cut, in order; a cut without labels is an error naming the file."""
    units = read_units(path)
    missing = [c.id for c in cuts if c.id not in units]
    if missing:
        raise ValueError(f"{path}: no labels for {len(missing)} cut(s), e.g. {', '.join(missing[:5])}")
    return [torch.tensor(units[c.id], dtype=torch.long) for c in cuts]


def collate_labels(labels: list[torch.Tensor]) -> torch.Tensor:
    """Pad label sequences with -1 (no label) into (batch, max_len)."""
    out = torch.full((len(labels), max(1, max(len(x) for x in labels))), -1, dtype=torch.long)
    for i, x in enumerate(labels):
        out[i, : len(x)] = x
    return out


def _mel_filterbank(num_bins: int, num_mels: int, n_fft: int, low: float = 20.0, high: float = 8000.0) -> torch.Tensor:
    """(num_bins, num_mels) triangular filters equally spaced on the mel scale."""
    def mel(f):
        return 1127.0 * np.log(1.0 + np.asarray(f) / 700.0)

    def hz(m):
        return 700.0 * (np.exp(np.asarray(m) / 1127.0) - 1.0)

    edges = hz(np.linspace(mel(low), mel(high), num_mels + 2))
    freqs = np.arange(num_bins) * SAMPLE_RATE / n_fft
    fb = np.zeros((num_bins, num_mels))
    for m in range(num_mels):
        lo, mid, hi = edges[m], edges[m + 1], edges[m + 2]
        fb[:, m] = np.clip(np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)), 0.0, None)
    return torch.from_numpy(fb).float()


def _deltas(x: torch.Tensor, width: int = 2) -> torch.Tensor:
    """Regression deltas over +-width frames (edges replicated), as Kaldi's add-deltas."""
    t = x.shape[0]
    pad = torch.cat([x[:1].expand(width, -1), x, x[-1:].expand(width, -1)])
    num = sum(n * (pad[width + n: width + n + t] - pad[width - n: width - n + t]) for n in range(1, width + 1))
    return num / (2 * sum(n * n for n in range(1, width + 1)))


def mfcc(wave: np.ndarray, num_ceps: int = 13, num_mels: int = 23, win: int = 400, hop: int = 320,
         n_fft: int = 512) -> torch.Tensor:
    """MFCC + deltas + delta-deltas, (frames, 3 * num_ceps), frames = (samples - win) // hop + 1."""
    x = torch.as_tensor(np.asarray(wave, dtype=np.float32))
    if x.numel() < win:
        return torch.zeros(0, 3 * num_ceps)
    frames = x.unfold(0, win, hop)
    frames = frames - frames.mean(1, keepdim=True)
    frames = torch.cat([frames[:, :1] * (1 - 0.97), frames[:, 1:] - 0.97 * frames[:, :-1]], dim=1)  # pre-emphasis
    power = torch.fft.rfft(frames * torch.hamming_window(win, periodic=False), n_fft).abs().pow(2)
    logmel = torch.log((power @ _mel_filterbank(n_fft // 2 + 1, num_mels, n_fft)).clamp(min=1e-10))
    k = torch.arange(num_ceps, dtype=torch.float64)[:, None]
    n = torch.arange(num_mels, dtype=torch.float64)[None, :]
    dct = torch.cos(math.pi / num_mels * (n + 0.5) * k) * math.sqrt(2.0 / num_mels)  # DCT-II, orthonormal
    dct[0] /= math.sqrt(2.0)
    ceps = logmel @ dct.float().T
    feats = torch.cat([ceps, _deltas(ceps), _deltas(_deltas(ceps))], dim=1)
    return (feats - feats.mean(0)) / feats.std(0, unbiased=False).clamp(min=1e-5)


def _cut_audio(cuts: list) -> list[np.ndarray]:
    from w2v.train.loop import AudioStore

    store = AudioStore(cuts, cache=False)
    return [store[i] for i in range(len(cuts))]


def hubert_features(cuts: list, model=None, layer: int = 0, normalize_audio: bool = True,
                    num_ceps: int = 13) -> list[torch.Tensor]:
    """Per cut (frames, dim) features to cluster: MFCCs (``model`` None) or the hidden states of
    ``layer`` of a `HubertForPreTraining` (one utterance at a time: no padding effects)."""
    feats = []
    if model is not None:
        model.eval()
    for wave in tqdm(_cut_audio(cuts), desc="label features", unit="utt", mininterval=2):
        if model is None:
            feats.append(mfcc(wave, num_ceps))
        else:
            wav, lens = collate_audio([wave], normalize_audio)
            dev = next(model.parameters()).device
            h, flens = model.layer_features(wav.to(dev), lens.to(dev), layer)
            feats.append(h[0, : int(flens[0])].float().cpu())
    return feats


def kmeans_labels(feats: list[torch.Tensor], k: int, seed: int, max_fit_frames: int = 200_000) -> list[list[int]]:
    """Cluster the frames of all utterances (a seeded sample of at most ``max_fit_frames`` for
    the fit) and label every frame."""
    allf = torch.cat([f for f in feats if f.shape[0]])
    if allf.shape[0] > max_fit_frames:
        idx = torch.from_numpy(np.random.default_rng(seed).choice(allf.shape[0], max_fit_frames, replace=False))
        fit = allf[idx]
    else:
        fit = allf
    centroids = kmeans_fit(fit, k, seed=seed)
    return [kmeans_assign(f, centroids).tolist() if f.shape[0] else [] for f in feats]


def make_hubert_labels(cuts_path: str | Path, out_path: str | Path, cfg, model_path: str | Path | None = None,
                       seed: int = 1, normalize_audio: bool = True, device: str | torch.device = "cpu") -> Path:
    """Write the k-means targets of ``cfg.iteration`` for every cut of ``cuts_path``.

    Args:
        cfg: the `HubertConfig` being trained (clusters, label layer, MFCC size).
        model_path: the previous iteration's pre-trained ``model.pt`` (None: MFCC targets).
    """
    from lhotse import load_manifest

    from w2v.models.families import config_from_dict
    from w2v.models.hubert import HubertForPreTraining
    from w2v.train.checkpoint import load

    cuts = list(load_manifest(cuts_path))
    model, layer = None, 0
    if model_path is not None:
        ck = load(model_path)
        prev_cfg = config_from_dict(ck["model_config"], str(model_path))
        if getattr(prev_cfg, "family", "") != "hubert":
            raise ValueError(f"{model_path}: HuBERT targets need a HuBERT model, found {prev_cfg.family or 'wav2vec2'}")
        model = HubertForPreTraining(prev_cfg)
        model.load_state_dict(ck["model"])
        model.to(device)
        layer = cfg.label_layer
    k = cfg.num_classes
    what = f"layer {layer} of {model_path}" if model is not None else "MFCCs"
    log.info("HuBERT iteration %d targets: k-means (k=%d) on %s of %d cuts", cfg.iteration, k, what, len(cuts))
    feats = hubert_features(cuts, model, layer, normalize_audio, cfg.mfcc_coefficients)
    labels = kmeans_labels(feats, k, seed)
    write_units(out_path, {c.id: lab for c, lab in zip(cuts, labels)})
    return Path(out_path)


@torch.no_grad()
def export_vq_units(model_path: str | Path, cuts_path: str | Path, out_path: str | Path,
                    device: str | torch.device = "cpu") -> Path:
    """vq-wav2vec units of every cut: one token per frame (the index of its G codes)."""
    from lhotse import load_manifest

    from w2v.models.families import config_from_dict
    from w2v.models.vq_wav2vec import VqWav2VecBert, VqWav2VecForPreTraining, unit_tokens
    from w2v.train.checkpoint import load

    ck = load(model_path)
    if ck.get("task") != "pretrain":
        raise ValueError(f"{model_path}: expected a pre-trained vq-wav2vec model, found task {ck.get('task')!r}")
    cfg = config_from_dict(ck["model_config"], str(model_path))
    if getattr(cfg, "family", "") != "vq_wav2vec":
        raise ValueError(f"{model_path}: unit export needs a vq-wav2vec model, found {cfg.family or 'wav2vec2'}")
    model = VqWav2VecBert(cfg) if cfg.with_bert else VqWav2VecForPreTraining(cfg)
    model.load_state_dict(ck["model"])
    vq = model.vq if cfg.with_bert else model
    vq.to(device).eval()
    normalize = ck.get("train_config", {}).get("normalize_audio", True)
    cuts = list(load_manifest(cuts_path))
    units = {}
    for cut, wave in tqdm(zip(cuts, _cut_audio(cuts)), total=len(cuts), desc="units", unit="utt", mininterval=2):
        wav, lens = collate_audio([wave], normalize)
        codes, flens = vq.units(wav.to(device), lens.to(device))
        units[cut.id] = unit_tokens(codes[0, : int(flens[0])], cfg.vq_vars).tolist()
    write_units(out_path, units)
    return Path(out_path)


__all__ = ["collate_labels", "export_vq_units", "hubert_features", "labels_for_cuts", "kmeans_labels", "make_hubert_labels", "mfcc", "read_units",
           "write_units"]
