"""Run a fine-tuned CTC model over audio: log-probabilities per frame, batched by duration."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from w2v.data.batching import BatchPlan, collate_audio, pad_to_multiple
from w2v.models import Wav2Vec2ForCTC
from w2v.models.adapters import load_adapter
from w2v.models.components import conv_feature_encoder, padding_hop, padding_invariant
from w2v.models.families import build_ctc_model, config_from_dict
from w2v.train.checkpoint import load

log = logging.getLogger(__name__)


def load_ctc_model(path: str | Path, device: torch.device | str = "cpu",
                   lang: str | None = None) -> tuple[torch.nn.Module, dict]:
    """A fine-tuned ``model.pt`` of any family in eval mode, and its metadata (units, training settings).

    ``lang`` selects one of the model's MMS language adapters (and its output layer and units);
    None keeps the one the model was saved with.
    """
    ck = load(path)
    if ck.get("task") != "finetune" or not ck.get("units"):
        raise ValueError(f"{path}: not a fine-tuned CTC model (task {ck.get('task')!r})")
    cfg = config_from_dict(ck["model_config"], str(path))
    model = build_ctc_model(cfg, len(ck["units"]))
    model.load_state_dict(ck["model"])
    if lang is not None and lang != ck.get("adapter_lang"):
        adapters = ck.get("adapters") or {}
        if lang not in adapters:
            have = f"adapters for {sorted(adapters)}" if adapters else "no language adapters"
            raise ValueError(f"{path}: no adapter for language {lang!r} (the model has {have})")
        load_adapter(model, adapters[lang]["weights"], where=f"{path} [{lang}]")
        ck = {**ck, "units": adapters[lang]["units"], "adapter_lang": lang}
    model.to(device).eval()
    return model, ck


def use_fast_paths(model: torch.nn.Module, matmul_conv: bool, compile: bool,
                   where: str = "decode", half_weights: bool = False, gelu_epilogue: bool = False
                   ) -> torch.nn.Module:
    """The acoustic model's fast paths for decoding, in place (the decode stage's
    ``decode.matmul_conv`` and ``decode.compile``): the conv feature encoder and the positional
    convolution as matrix products, with the Triton kernels on a GPU (`accel.use_matmul_convolutions`,
    the same function), and `torch.compile` of the conv stack and the Transformer (wav2vec 2.0
    family only; batches of new lengths recompile until the graphs take dynamic shapes.
    `compute_emissions` pads batches to whole hops of the conv encoder, so every conv layer sees
    lengths of one parity and one graph serves them all; a model decoded one utterance at a time
    (group norm over time) may still recompile the matrix-product conv stack once for each new
    pattern of odd and even lengths through its layers, up to dynamo's recompile limit, after
    which that graph runs uncompiled). ``half_weights`` (for
    `compute_emissions` on a GPU, which runs under bf16 autocast): every linear layer's weights in
    bf16 once instead of at every forward (`accel.cast_linear_weights`; the same emissions).
    ``gelu_epilogue`` (``decode.gelu_epilogue``, acting on a GPU): each feed-forward network's
    first product and GELU as one cuBLASLt call (`accel.use_gelu_epilogue`: LARGE-LV60's
    inference 6% faster on an H100; its GELU is the tanh form, within 5e-4 of the erf form's, and
    the logits sat closer to float32's than without it)."""
    from w2v.models.accel import cast_linear_weights, compile_model, use_gelu_epilogue, use_matmul_convolutions

    if half_weights:
        cast_linear_weights(model, torch.bfloat16)
    if gelu_epilogue:
        use_gelu_epilogue(model)
    if matmul_conv:
        use_matmul_convolutions(model)
    if compile:
        try:
            compile_model(model)
        except ValueError as e:  # not a wav2vec 2.0-family model
            raise ValueError(f"{where}: decode.compile: {e}") from None
    return model


def runs_in_bf16(device: torch.device | str) -> bool:
    """Whether `compute_emissions` runs the model under bf16 autocast on ``device`` (a GPU)."""
    return torch.device(device).type == "cuda"


@torch.no_grad()
def compute_emissions(model: Wav2Vec2ForCTC, audio: list[np.ndarray], normalize: bool,
                      max_duration: float = 120.0, device: torch.device | str = "cpu",
                      desc: str | None = None, ids: list[str] | None = None) -> list[torch.Tensor]:
    """Log-probabilities ``(frames, units)`` (float32, CPU) for each mono 16 kHz waveform, in order.

    Utterances run in batches of up to ``max_duration`` seconds of audio, padded to the longest,
    when the model is padding-invariant (`padding_invariant`); otherwise (wav2vec 1.0,
    vq-wav2vec, wav2vec 2.0 / HuBERT with ``extractor_mode: default``) one at a time, so that
    each gets the log-probabilities it gets alone whatever it is decoded with.

    Audio shorter than the conv encoder's receptive field gets zero frames (an empty
    hypothesis); such utterances are logged, by ``ids`` when given. Batches are padded to whole
    hops of the conv encoder (20 ms for wav2vec 2.0), which leaves each utterance's emissions
    as they were.
    """
    out: list[torch.Tensor | None] = [None] * len(audio)
    use_bf16 = runs_in_bf16(device)
    batched = padding_invariant(model)
    if batched:
        batches = BatchPlan([len(a) / 16000 for a in audio], max_duration, seed=0, num_buckets=1).epoch(0)
    else:
        # Group norm over the time axis sees the padding, so an utterance's log-probabilities
        # would depend on what it is batched with (one wav2vec 1.0 checkpoint: dev CER 58.4 in
        # the decode stage's 120 s batches, 53.0 in the training loop's 60 s ones). Unpadded,
        # one per forward, every utterance gets its own.
        batches = [[i] for i in range(len(audio))]
    encoder = conv_feature_encoder(model)
    min_samples = encoder.receptive_field if encoder is not None else 1
    hop = padding_hop(model)  # whole hops of the conv encoder: one compiled graph for every batch
    short = [ids[i] if ids else str(i) for i, a in enumerate(audio) if len(a) < min_samples]
    if short:
        log.warning("%d utterance(s) shorter than the receptive field (%d samples) get an empty hypothesis: %s",
                    len(short), min_samples, ", ".join(short[:5]) + (" ..." if len(short) > 5 else ""))
    for batch in tqdm(batches, desc=desc or "emissions", unit="batch", disable=desc is None, mininterval=2):
        wav, lens = collate_audio([audio[i] for i in batch], normalize, device)
        if wav.shape[1] < min_samples:  # shorter than the receptive field: no frames, an empty hypothesis
            wav = torch.nn.functional.pad(wav, (0, min_samples - wav.shape[1]))
        wav = pad_to_multiple(wav, hop)
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=use_bf16):
            logits, flens = model(wav, lens.to(device))
        logp = torch.log_softmax(logits.float(), dim=-1).cpu()
        for j, i in enumerate(batch):
            out[i] = logp[j, : int(flens[j])].clone()
    return out  # type: ignore[return-value]


def pad_emissions(emissions: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack ``(frames, units)`` tensors into ``(batch, max_frames, units)`` plus their lengths."""
    lengths = torch.tensor([e.shape[0] for e in emissions], dtype=torch.long)
    units = emissions[0].shape[1] if emissions else 0
    x = torch.zeros(len(emissions), int(lengths.max()) if len(emissions) else 0, units)
    for i, e in enumerate(emissions):
        x[i, : e.shape[0]] = e
    return x, lengths
