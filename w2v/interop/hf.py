"""Import Hugging Face wav2vec 2.0 checkpoints into our `model.pt`, and export ours to HF.

Our state dicts use HF's key names (see `w2v.interop.hf_config`), so conversion is a
config translation plus a strict `load_state_dict`:

* `from_hf_config` -- HF `Wav2Vec2Config` (object or `config.json` dict) -> our `Wav2Vec2Config`.
* `import_hf(src_dir, out_path)` -- an HF model directory (`config.json` plus
  `model.safetensors` or `pytorch_model.bin`, and `vocab.json` for CTC) -> our `model.pt`.
* `export_hf(checkpoint_path, out_dir)` -- our `model.pt` -> a directory that
  `transformers.Wav2Vec2ForCTC` / `Wav2Vec2ForPreTraining` / `Wav2Vec2Model.from_pretrained`
  and (for CTC) `Wav2Vec2Processor.from_pretrained` load.

Heads: `Wav2Vec2ForPreTraining` -> task "pretrain"; a bare `Wav2Vec2Model` (keys without the
`wav2vec2.` prefix) -> task "pretrain" with `has_quantizer: False` (usable to initialise
fine-tuning, not to continue pre-training); `Wav2Vec2ForCTC` -> task "finetune" with units
from `vocab.json` (the pad token, HF's CTC blank, must be id 0 and becomes "<blank>").

MMS language adapters (`adapter_attn_dim` in config.json): every `adapter.<lang>.safetensors`
beside the model is imported with its vocabulary from the per-language `vocab.json`; export
writes the same layout, which `Wav2Vec2ForCTC.from_pretrained(dir, target_lang=...)` and
`load_adapter(lang)` read.

`masked_spec_embed`: HF creates it only when `mask_time_prob > 0` or `mask_feature_prob > 0`;
we always have it. On import it is filled with a fresh (uniform) vector when the HF
checkpoint lacks it for that reason (reported as `filled`); on export it is left out when
HF would not create it (reported in the log).

`transformers` is imported only by `export_hf` (for `to_hf_config`); importing needs just
torch and safetensors.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from w2v.interop.hf_config import rename_legacy_keys, to_hf_config
from w2v.models.adapters import ADAPTER_FILE, adapter_weights
from w2v.models.config import Wav2Vec2Config
from w2v.models.families import config_from_dict
from w2v.models.wav2vec2 import (
    Wav2Vec2ForCTC,
    Wav2Vec2ForPreTraining,
    Wav2Vec2Model,
    count_parameters,
)
from w2v.train.checkpoint import load as load_checkpoint
from w2v.train.checkpoint import save_atomic

log = logging.getLogger(__name__)

BLANK = "<blank>"
HF_PAD = "<pad>"
WORD_DELIMITER = "|"
PREFIX = "wav2vec2."

# HF config key -> our field, copied as is.
_DIRECT: dict[str, str] = {
    "conv_bias": "conv_bias",
    "num_hidden_layers": "encoder_layers",
    "hidden_size": "encoder_embed_dim",
    "intermediate_size": "encoder_ffn_embed_dim",
    "num_attention_heads": "encoder_attention_heads",
    "hidden_act": "activation_fn",
    "do_stable_layer_norm": "layer_norm_first",
    "num_conv_pos_embeddings": "conv_pos",
    "num_conv_pos_embedding_groups": "conv_pos_groups",
    "hidden_dropout": "dropout",
    "attention_dropout": "attention_dropout",
    "activation_dropout": "activation_dropout",
    "feat_proj_dropout": "dropout_input",
    "feat_quantizer_dropout": "dropout_features",
    "layerdrop": "layerdrop",
    "num_codevectors_per_group": "latent_vars",
    "num_codevector_groups": "latent_groups",
    "proj_codevector_dim": "final_dim",
    "num_negatives": "num_negatives",
    "contrastive_logits_temperature": "logit_temp",
    "mask_time_prob": "mask_prob",
    "mask_time_length": "mask_length",
    "mask_time_min_masks": "mask_min_masks",
    "mask_feature_prob": "mask_channel_prob",
    "mask_feature_length": "mask_channel_length",
}
# Handled explicitly in from_hf_config.
_SPECIAL = {"conv_dim", "conv_kernel", "conv_stride", "num_feat_extract_layers", "feat_extract_norm", "codevector_dim",
            "adapter_attn_dim"}
# Settings we can only represent at one value: key -> (required value, what it means).
_REQUIRED: dict[str, Any] = {
    "feat_extract_activation": "gelu",
    "add_adapter": False,
    "layer_norm_eps": 1e-5,
    "mask_feature_min_masks": 0,
}
# Ignored: generic PretrainedConfig keys, tokenizer/CTC-loss settings, heads we do not build
# (sequence classification / x-vector), adapter sizes (add_adapter must be False), HF
# training-only knobs, and legacy keys current HF ignores too.
IGNORED_HF_KEYS: frozenset[str] = frozenset({
    # generic
    "_name_or_path", "architectures", "chunk_size_feed_forward", "dtype", "torch_dtype", "id2label",
    "label2id", "is_encoder_decoder", "model_type", "output_attentions", "output_hidden_states",
    "problem_type", "return_dict", "transformers_version", "initializer_range", "gradient_checkpointing",
    "use_cache", "name_or_path",
    # tokenizer / CTC loss (kept in vocab.json / our units; ctc reduction is a training choice)
    "vocab_size", "pad_token_id", "bos_token_id", "eos_token_id", "ctc_loss_reduction", "ctc_zero_infinity",
    "word_delimiter_token",
    "final_dropout",  # our TrainConfig.final_dropout
    # training-only
    "apply_spec_augment", "diversity_loss_weight",
    # other heads, adapters (add_adapter is checked)
    "use_weighted_layer_sum", "classifier_proj_size", "tdnn_dim", "tdnn_kernel", "tdnn_dilation",
    "xvector_output_dim", "adapter_kernel_size", "adapter_stride", "num_adapter_layers", "output_hidden_size",
    # legacy keys unused by HF
    "feat_extract_dropout", "hidden_dropout_prob", "mask_time_selection", "mask_time_other",
    "mask_time_min_space", "mask_channel_selection", "mask_channel_other", "mask_channel_min_space",
    "mask_channel_length", "mask_channel_prob",
})

SUPPORTED_ARCHITECTURES = ("Wav2Vec2ForPreTraining", "Wav2Vec2Model", "Wav2Vec2ForCTC")
HF_FAMILIES = ("wav2vec2", "hubert")  # families export_hf can write


class HFConversionError(ValueError):
    """An HF directory or one of our checkpoints cannot be converted (the message says why)."""


def from_hf_config(hf_config: Any) -> Wav2Vec2Config:
    """Our `Wav2Vec2Config` for an HF `Wav2Vec2Config` (an object or a `config.json` dict).

    The inverse of `to_hf_config`. Settings HF has and we lack raise unless they are at the
    one value we implement (`feat_extract_activation="gelu"`, no conv `add_adapter`, `layer_norm_eps=1e-5`,
    `mask_feature_min_masks=0`); keys in `IGNORED_HF_KEYS` are ignored; any other key raises.
    Fields HF has no counterpart for (feature_grad_mult, latent_temp, ...) keep our defaults.

    Raises:
        ValueError: naming every unsupported or unknown setting.
    """
    d = dict(hf_config if isinstance(hf_config, dict) else hf_config.to_dict())
    if d.get("model_type", "wav2vec2") != "wav2vec2":
        raise ValueError(f"not a wav2vec2 config: model_type {d['model_type']!r}")
    problems = []
    for key, value in _REQUIRED.items():
        if key in d:
            v = d[key]
            ok = abs(v - value) <= 1e-12 if isinstance(value, float) and isinstance(v, (int, float)) else v == value
            if not ok:
                problems.append(f"{key}={v!r} (only {value!r} is supported)")
    unknown = sorted(set(d) - set(_DIRECT) - _SPECIAL - set(_REQUIRED) - IGNORED_HF_KEYS)
    if unknown:
        problems.append(f"unknown setting(s) {unknown}")
    norm = d.get("feat_extract_norm", "group")
    if norm not in ("group", "layer"):
        problems.append(f"feat_extract_norm={norm!r} (only 'group' or 'layer')")
    dims, kernels, strides = (list(d.get(k, ())) for k in ("conv_dim", "conv_kernel", "conv_stride"))
    if not (len(dims) == len(kernels) == len(strides)) or not dims:
        problems.append(f"conv_dim/conv_kernel/conv_stride lengths {len(dims)}/{len(kernels)}/{len(strides)}")
    elif "num_feat_extract_layers" in d and d["num_feat_extract_layers"] != len(dims):
        problems.append(f"num_feat_extract_layers={d['num_feat_extract_layers']} but {len(dims)} conv layers")
    if d.get("adapter_attn_dim") and not d.get("do_stable_layer_norm", False):
        problems.append("adapter_attn_dim without do_stable_layer_norm (HF builds no adapters then)")
    if problems:
        raise ValueError("HF wav2vec2 config cannot be converted: " + "; ".join(problems))

    kw: dict[str, Any] = {ours: d[theirs] for theirs, ours in _DIRECT.items() if theirs in d}
    kw["conv_feature_layers"] = tuple(zip(dims, kernels, strides))
    kw["extractor_mode"] = "layer_norm" if norm == "layer" else "default"
    final_dim = kw.get("final_dim", Wav2Vec2Config.final_dim)
    cv = d.get("codevector_dim")
    kw["latent_dim"] = 0 if cv is None or cv == final_dim else int(cv)
    kw["adapter_dim"] = int(d.get("adapter_attn_dim") or 0)
    return Wav2Vec2Config(**kw)


# ----------------------------------------------------------------------------- import


def _read_weights(src: Path) -> tuple[dict[str, torch.Tensor], Path]:
    st, pt = src / "model.safetensors", src / "pytorch_model.bin"
    if st.is_file():
        from safetensors.torch import load_file

        try:
            return load_file(str(st)), st
        except Exception as e:  # safetensors raises SafetensorError / OSError for truncated headers
            raise HFConversionError(f"cannot read {st} (truncated or corrupt?): {e}") from e
    if pt.is_file():
        try:
            sd = torch.load(pt, map_location="cpu", weights_only=True)
        except Exception as e:
            raise HFConversionError(f"cannot read {pt} (truncated or corrupt?): {e}") from e
        if not isinstance(sd, dict):
            raise HFConversionError(f"{pt} does not hold a state dict")
        return sd, pt
    sharded = [p.name for p in src.glob("*.index.json")]
    hint = f" (sharded checkpoints {sharded} are not supported)" if sharded else ""
    raise HFConversionError(f"no model.safetensors or pytorch_model.bin in {src}{hint}")


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise HFConversionError(f"cannot read {path}: {e}") from e


def _read_units(src: Path, pad_token_id: int | None) -> list[str] | dict[str, list[str]]:
    """Units of `vocab.json`; a multilingual (MMS) `{lang: {token: id}}` file gives them per language."""
    path = src / "vocab.json"
    if not path.is_file():
        raise HFConversionError(f"{src} holds a Wav2Vec2ForCTC model but no vocab.json")
    vocab = _read_json(path)
    if vocab and all(isinstance(v, dict) for v in vocab.values()):
        return {lang: _units(v, f"{path} [{lang}]", pad_token_id) for lang, v in vocab.items()}
    return _units(vocab, path, pad_token_id)


def _units(vocab: dict[str, int], path, pad_token_id: int | None) -> list[str]:
    ids = sorted(vocab.values())
    if ids != list(range(len(ids))):
        missing = sorted(set(range(max(ids) + 1 if ids else 0)) - set(ids))
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise HFConversionError(f"{path}: ids must be 0..{len(ids) - 1} without gaps (missing {missing}, duplicated {dup})")
    units = [""] * len(ids)
    for tok, i in vocab.items():
        units[i] = tok
    blank = 0 if pad_token_id is None else pad_token_id
    if blank != 0:
        raise HFConversionError(f"{path}: the CTC blank (pad_token_id={pad_token_id}, {units[blank]!r}) must be id 0")
    units[0] = BLANK
    return units


def _detect_head(cfg_dict: dict, sd: dict[str, torch.Tensor], src: Path) -> str:
    archs = cfg_dict.get("architectures") or []
    known = [a for a in archs if a in SUPPORTED_ARCHITECTURES]
    if archs and not known:
        raise HFConversionError(f"{src}: unsupported architecture(s) {archs}; supported: {list(SUPPORTED_ARCHITECTURES)}")
    if known:
        return known[0]
    if "lm_head.weight" in sd:
        return "Wav2Vec2ForCTC"
    if any(k.startswith("quantizer.") for k in sd):
        return "Wav2Vec2ForPreTraining"
    return "Wav2Vec2Model" if not any(k.startswith(PREFIX) for k in sd) else "Wav2Vec2ForPreTraining"


def _load_strict(model: torch.nn.Module, sd: dict[str, torch.Tensor], cfg: Wav2Vec2Config, src: Path) -> list[str]:
    """Strict load with errors naming keys and shapes; returns keys filled from the fresh model."""
    expected = model.state_dict()
    filled = []
    msk = PREFIX + "masked_spec_embed"
    if msk in expected and msk not in sd and cfg.mask_prob == 0 and cfg.mask_channel_prob == 0:
        sd = {**sd, msk: expected[msk]}  # HF does not create it when masking is off
        filled.append(msk)
    unknown = sorted(set(sd) - set(expected))
    missing = sorted(set(expected) - set(sd))
    if unknown or missing:
        raise HFConversionError(f"{src}: state dict does not match the config: unknown key(s) {unknown}, missing key(s) {missing}")
    bad = [f"{k}: checkpoint {tuple(sd[k].shape)} vs config {tuple(v.shape)}"
           for k, v in expected.items() if tuple(sd[k].shape) != tuple(v.shape)]
    if bad:
        raise HFConversionError(f"{src}: tensor shape mismatch: " + "; ".join(bad))
    model.load_state_dict(sd, strict=True)
    return filled


def _read_adapters(src: Path) -> dict[str, dict[str, torch.Tensor]]:
    """language -> weights of every `adapter.<lang>.safetensors` (or `.bin`) beside the model."""
    from safetensors.torch import load_file

    out: dict[str, dict[str, torch.Tensor]] = {}
    for path in sorted(src.glob("adapter.*.safetensors")) + sorted(src.glob("adapter.*.bin")):
        lang = path.name[len("adapter."):].rsplit(".", 1)[0]
        if lang in out:
            continue  # transformers prefers the safetensors file too
        try:
            out[lang] = (load_file(str(path)) if path.suffix == ".safetensors"
                         else torch.load(path, map_location="cpu", weights_only=True))
        except Exception as e:
            raise HFConversionError(f"cannot read {path} (truncated or corrupt?): {e}") from e
    return out


def _import_adapters(src: Path, sd: dict[str, torch.Tensor], units, target_lang: str | None):
    """The MMS adapters of an HF directory: ({lang: {"weights", "units"}}, default language).

    The default language is the one whose adapter file holds the weights in `model.safetensors`
    (else the tokenizer's `target_lang`, else the first); its weights go into `sd` (in place).
    """
    files = _read_adapters(src)
    if not files:
        if isinstance(units, dict):
            if target_lang not in units:
                raise HFConversionError(f"{src}: per-language vocab.json but no adapter.<lang>.safetensors and no "
                                        "tokenizer target_lang saying which language model.safetensors holds")
            units = units[target_lang]
        if target_lang is None:  # adapters of an unnamed language: the model as it is
            return {}, None
        return {target_lang: {"weights": adapter_weights(sd), "units": units}}, target_lang
    adapters = {}
    for lang, weights in files.items():
        lang_units = units.get(lang) if isinstance(units, dict) else units
        if lang_units is None:
            raise HFConversionError(f"{src}: adapter.{lang} has no vocabulary in vocab.json")
        n_out = weights["lm_head.weight"].shape[0] if "lm_head.weight" in weights else None
        if n_out != len(lang_units):
            raise HFConversionError(f"{src}: adapter.{lang} has {n_out} outputs but vocab.json [{lang}] "
                                    f"has {len(lang_units)} tokens")
        adapters[lang] = {"weights": {k: v.contiguous() for k, v in weights.items()}, "units": lang_units}
    base = adapter_weights(sd)
    default = next((lang for lang, a in adapters.items() if a["weights"].keys() == base.keys()
                    and all(torch.equal(a["weights"][k], base[k]) for k in base)), None)
    default = default or (target_lang if target_lang in adapters else sorted(adapters)[0])
    sd.update(adapters[default]["weights"])
    return adapters, default


def import_hf(src_dir: str | os.PathLike, out_path: str | os.PathLike) -> dict[str, Any]:
    """Convert an HF wav2vec 2.0 model directory into our `model.pt`.

    Args:
        src_dir: a directory written by HF `save_pretrained` (`config.json`, `model.safetensors`
            or `pytorch_model.bin`; `vocab.json` for `Wav2Vec2ForCTC`).
        out_path: our checkpoint to write (atomically).

    Returns:
        ``{"task", "architecture", "has_quantizer", "n_params", "dropped", "filled", "units", "out"}``;
        `dropped`: HF keys not carried over; `filled`: our keys HF lacks, kept at their fresh init.

    Raises:
        HFConversionError (a ValueError): missing/unreadable files, unsupported config,
            vocabulary problems, unknown or missing keys, shape mismatches.
    """
    src = Path(src_dir)
    if not src.is_dir():
        raise HFConversionError(f"not a directory: {src}")
    cfg_path = src / "config.json"
    if not cfg_path.is_file():
        raise HFConversionError(f"no config.json in {src}")
    cfg_dict = _read_json(cfg_path)
    try:
        cfg = from_hf_config(cfg_dict)
    except ValueError as e:
        raise HFConversionError(f"{cfg_path}: {e}") from e
    sd, weights_path = _read_weights(src)
    sd = rename_legacy_keys(sd)
    head = _detect_head(cfg_dict, sd, src)

    dropped: list[str] = []
    units = None
    has_quantizer = True
    adapters, adapter_lang = None, None
    if head == "Wav2Vec2ForCTC":
        units = _read_units(src, cfg_dict.get("pad_token_id"))
        if cfg.adapter_dim:
            tok = src / "tokenizer_config.json"
            target = _read_json(tok).get("target_lang") if tok.is_file() else None
            adapters, adapter_lang = _import_adapters(src, sd, units, target)
            if adapter_lang is not None:
                units = adapters[adapter_lang]["units"]
        elif isinstance(units, dict):
            raise HFConversionError(f"{src / 'vocab.json'}: per-language vocabularies need adapter_attn_dim in "
                                    "config.json (an MMS model with adapter.<lang>.safetensors files)")
        n_out = sd["lm_head.weight"].shape[0] if "lm_head.weight" in sd else cfg_dict.get("vocab_size")
        if n_out != len(units):
            raise HFConversionError(f"{src}: vocab.json has {len(units)} tokens but lm_head.weight has {n_out} outputs")
        model: torch.nn.Module = Wav2Vec2ForCTC(cfg, len(units))
        task = "finetune"
    elif head == "Wav2Vec2Model":
        if not any(k.startswith(PREFIX) for k in sd):
            sd = {PREFIX + k: v for k, v in sd.items()}
        dropped = sorted(k for k in sd if not k.startswith(PREFIX))
        sd = {k: v for k, v in sd.items() if k.startswith(PREFIX)}
        model = torch.nn.Module()  # holds the encoder under `wav2vec2.`, as our checkpoints do
        model.wav2vec2 = Wav2Vec2Model(cfg)
        task, has_quantizer = "pretrain", False
    else:
        model = Wav2Vec2ForPreTraining(cfg)
        task = "pretrain"
    filled = _load_strict(model, sd, cfg, src)
    for k in dropped:
        log.warning("%s: dropped %s", src, k)
    for k in filled:
        log.info("%s: %s not in the checkpoint, kept at its initial value", src, k)

    ck: dict[str, Any] = {
        "model": {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()},
        "model_config": cfg.to_dict(),
        "task": task,
        "train_config": {},
        "num_updates": 0,
        "best": None,
        "init": None,
        "source": f"hf:{src.resolve()} ({head}, {weights_path.name})",
    }
    if units is not None:
        ck["units"] = units
    if adapters is not None:
        ck["adapters"], ck["adapter_lang"] = adapters, adapter_lang
    if task == "pretrain":
        ck["has_quantizer"] = has_quantizer
    save_atomic(ck, out_path)
    summary = {
        "task": task,
        "architecture": head,
        "has_quantizer": has_quantizer,
        "n_params": count_parameters(model),
        "dropped": dropped,
        "filled": filled,
        "units": units,
        "adapters": sorted(adapters) if adapters else [],
        "adapter_lang": adapter_lang,
        "out": str(out_path),
    }
    log.info("imported %s (%s, %d parameters) -> %s", src, head, summary["n_params"], out_path)
    return summary


# ----------------------------------------------------------------------------- export


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _hf_vocab(units: list[str], src: Path) -> dict[str, int]:
    vocab = {(HF_PAD if i == 0 else u): i for i, u in enumerate(units)}
    if len(vocab) != len(units):
        raise HFConversionError(f"{src}: duplicate units")
    return vocab


def _as_hubert(hc: Any, arch: str, sd: dict[str, torch.Tensor], src: Path):
    """The HuBERT version of a wav2vec 2.0 export: the same encoder under HF's Hubert names.

    HF has no HuBERT pre-training head, so a pre-training checkpoint becomes a bare
    `HubertModel` (its k-means targets' projection and label embeddings stay behind, as in
    HF's own conversion); a fine-tuned one becomes `HubertForCTC` (keys `hubert.*`).
    """
    from transformers import HubertConfig

    d = {k: v for k, v in hc.to_dict().items() if k not in ("model_type", "architectures", "transformers_version")}
    hubert = HubertConfig(**d)
    if arch == "Wav2Vec2ForCTC":
        renamed = {("hubert." + k[len(PREFIX):] if k.startswith(PREFIX) else k): v for k, v in sd.items()}
        return hubert, "HubertForCTC", "hubert.", renamed
    dropped = sorted(k for k in sd if not k.startswith(PREFIX))
    if dropped:
        log.info("%s: HF's HubertModel has no pre-training head; left out: %s", src, ", ".join(dropped))
    return hubert, "HubertModel", PREFIX, sd


def export_hf(checkpoint_path: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Write our `model.pt` as an HF model directory (atomically: a temporary dir renamed).

    finetune -> `Wav2Vec2ForCTC` with `vocab.json` (our blank written as "<pad>", id 0),
    `tokenizer_config.json`, `special_tokens_map.json`, `preprocessor_config.json`;
    pretrain -> `Wav2Vec2ForPreTraining`, or `Wav2Vec2Model` when `has_quantizer` is False.
    HuBERT: `HubertForCTC` / `HubertModel` (`_as_hubert`). wav2vec 1.0 and vq-wav2vec have no
    transformers class: an HFConversionError says so.

    Returns:
        `out_dir`.

    Raises:
        HFConversionError: unsupported task/config, or `out_dir` exists and is not empty.
    """
    src = Path(checkpoint_path)
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise HFConversionError(f"{out} exists and is not an empty directory")
    ck = load_checkpoint(src)
    task = ck.get("task")
    family = ck["model_config"].get("family") or "wav2vec2"
    if family not in HF_FAMILIES:
        raise HFConversionError(
            f"{src}: transformers has no {family} model, so export-hf cannot write this checkpoint "
            f"(it writes {', '.join(HF_FAMILIES)}); use the model.pt with w2v itself")
    cfg = config_from_dict(ck["model_config"], source=str(src))  # HubertConfig is a Wav2Vec2Config
    sd: dict[str, torch.Tensor] = dict(ck["model"])
    units = ck.get("units")
    adapters = ck.get("adapters") or {}
    if task == "finetune":
        for lang, u in [(None, units)] + [(lang, a["units"]) for lang, a in adapters.items()]:
            if not u or u[0] != BLANK:
                raise HFConversionError(f"{src}: fine-tuned checkpoint needs units with {BLANK!r} at id 0"
                                        + (f" (language {lang})" if lang else ""))
        arch, vocab_size = "Wav2Vec2ForCTC", len(units)
    elif task == "pretrain":
        has_q = ck.get("has_quantizer", True) and any(k.startswith("quantizer.") for k in sd)
        arch, vocab_size = ("Wav2Vec2ForPreTraining" if has_q else "Wav2Vec2Model"), None
    else:
        raise HFConversionError(f"{src}: unknown task {task!r}")
    try:
        hc = to_hf_config(cfg, vocab_size=vocab_size)
    except ValueError as e:
        raise HFConversionError(f"{src}: {e}") from e
    prefix = PREFIX
    if family == "hubert":
        hc, arch, prefix, sd = _as_hubert(hc, arch, sd, src)
    hc.architectures = [arch]
    bare = arch in ("Wav2Vec2Model", "HubertModel")  # the encoder alone: keys without the prefix
    if bare:
        sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    msk = ("" if bare else prefix) + "masked_spec_embed"
    if cfg.mask_prob == 0 and cfg.mask_channel_prob == 0 and msk in sd:
        del sd[msk]  # HF creates it only when masking is on
        log.info("%s: %s left out (HF has no such parameter when masking is off)", src, msk)
    tcfg = ck.get("train_config") or {}
    if task == "finetune":
        hc.pad_token_id = 0
        # Ours is the sum over the batch divided by its target tokens; HF's "sum" is the same
        # objective up to that per-batch scale ("mean" would weight utterances, not tokens).
        hc.ctc_loss_reduction = "sum"
        hc.final_dropout = float(tcfg.get("final_dropout", 0.0))
        # HF Wav2Vec2ForCTC reads this only when present; store it for tools that look for it.
        hc.word_delimiter_token = WORD_DELIMITER

    from safetensors.torch import save_file

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp", dir=out.parent))
    try:
        hc.to_json_file(str(tmp / "config.json"))
        save_file({k: v.detach().cpu().contiguous() for k, v in sd.items()}, str(tmp / "model.safetensors"),
                  metadata={"format": "pt"})
        if task == "finetune":
            vocab = _hf_vocab(units, src)
            if adapters:  # MMS: one vocabulary and one adapter file per language
                _write_json(tmp / "vocab.json", {lang: _hf_vocab(a["units"], src) for lang, a in adapters.items()})
                for lang, a in adapters.items():
                    save_file({k: v.detach().cpu().contiguous() for k, v in a["weights"].items()},
                              str(tmp / ADAPTER_FILE.format(lang)), metadata={"format": "pt"})
            else:
                _write_json(tmp / "vocab.json", vocab)
            specials = {"pad_token": HF_PAD}
            if "<unk>" in vocab:
                specials["unk_token"] = "<unk>"
            _write_json(tmp / "special_tokens_map.json", specials)
            _write_json(tmp / "tokenizer_config.json", {
                "tokenizer_class": "Wav2Vec2CTCTokenizer",
                "processor_class": "Wav2Vec2Processor",
                "word_delimiter_token": WORD_DELIMITER,
                "do_lower_case": False,
                "bos_token": None,
                "eos_token": None,
                "unk_token": "<unk>" if "<unk>" in vocab else None,
                "pad_token": HF_PAD,
                **({"target_lang": ck["adapter_lang"]} if adapters else {}),
            })
        _write_json(tmp / "preprocessor_config.json", {
            "feature_extractor_type": "Wav2Vec2FeatureExtractor",
            **({"processor_class": "Wav2Vec2Processor"} if task == "finetune" else {}),
            "feature_size": 1,
            "sampling_rate": 16000,
            "padding_side": "right",
            "padding_value": 0.0,
            "do_normalize": bool(tcfg.get("normalize_audio", True)),
            "return_attention_mask": cfg.extractor_mode == "layer_norm",
        })
        if out.exists():
            out.rmdir()  # empty (checked above)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("exported %s (%s) -> %s", src, arch, out)
    return out


__all__ = ["IGNORED_HF_KEYS", "HFConversionError", "export_hf", "from_hf_config", "import_hf"]
