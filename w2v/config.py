"""Recipe configuration: loading, JSON-schema validation with errors that name the key and file.

A recipe is ``egs/<corpus>/config.yaml``. Training settings (``pretrain``, ``finetune``)
are further checked against :class:`w2v.train.config.TrainConfig` by the stages that use them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jsonschema
import yaml

_builtin_corpus_keys = {"type": {}, "path": {}, "split": {}, "sampling_rate": {}, "language": {}}
_corpus_item = {
    "type": "object",
    "required": ["type", "path"],
    "properties": {
        # enum filled in by _schema(): folder, kaldi and every local/<type>.py corpus
        "type": {"description": "folder: audio + transcripts.tsv; kaldi: data dir; mms_bible: chapters + "
                          "verses; else local/<type>.py"},
        "path": {"type": "string"},
        "split": {"type": "string", "description": "kaldi: which set this directory is (train, dev, test...)"},
        "sampling_rate": {"type": "integer", "description": "kaldi: rate of wav.scp commands"},
        "language": {"type": "string", "pattern": "^[A-Za-z0-9_-]+$",
                     "description": "language of this part (multilingual pre-training, MMS adapters)"},
        "languages": {"type": "array", "items": {"type": "string"}, "description": "mms_bible: <lang> dirs to use"},
        "segment": {"type": "object", "description": "mms_bible: alignment model and segmentation settings "
                                                     "(w2v/data/mms_bible.py)"},
    },
    # folder/kaldi take only these keys; a local/<type>.py corpus checks its own options
    "if": {"properties": {"type": {"enum": ["folder", "kaldi"]}}},
    "then": {"properties": _builtin_corpus_keys, "additionalProperties": False},
}
_train = {"type": "object", "description": "w2v.train.config.TrainConfig fields"}

SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["recipe", "corpus", "model"],
    "additionalProperties": False,
    "properties": {
        "recipe": {"type": "string", "pattern": "^[A-Za-z0-9_.-]+$"},
        "description": {"type": "string"},
        "local": {
            "type": "object", "required": ["script"], "additionalProperties": False,
            "properties": {"script": {"type": "string"}, "args": {"type": "object"}},
            "description": "corpus-specific preparation run before ingestion: python SCRIPT --out CORPUS_PATH --KEY VALUE...",
        },
        "corpus": {"oneOf": [_corpus_item, {"type": "array", "items": _corpus_item, "minItems": 1}]},
        "cuts": {
            "type": "object", "additionalProperties": False,
            "properties": {
                "labeled_subsets": {"type": "array", "items": {"type": "string", "pattern": r"^[A-Za-z0-9_.]+$"},
                                    "description": "durations (10m, 1h) or subsets the corpus defines (llp)"},
                "dev_speakers": {"type": "integer", "minimum": 0},
                "test_speakers": {"type": "integer", "minimum": 0},
                "min_duration": {"type": "number", "minimum": 0},
                "max_duration": {"type": "number", "exclusiveMinimum": 0},
                "seed": {"type": "integer"},
            },
        },
        "text": {"type": "object", "additionalProperties": False,
                 "properties": {"normalize": {"enum": ["upper_letters", "letters", "tokens"]}}},
        "lm": {"type": "object", "additionalProperties": False,
               "properties": {"order": {"type": "integer", "minimum": 1, "maximum": 6},
                              "text": {"type": "string"}, "prune": {"type": "string"},
                              "arpa": {"type": "string", "description": "a ready-made ARPA (.gz) used instead"}}},
        "lang": {"type": "object", "additionalProperties": False,
                 "properties": {"units": {"enum": ["char", "bpe", "phone"]},
                                "vocab_size": {"type": "integer", "minimum": 2, "description": "bpe: pieces"},
                                "lexicon": {"type": "string", "description": "phone: WORD PH1 PH2 ... per line; "
                                            "without it, transcripts are phone sequences already"}}},
        "graph": {"type": "object", "additionalProperties": False,
                  "properties": {"order": {"type": "integer", "minimum": 1, "maximum": 6},
                                 "prune": {"type": "string"}, "max_order": {"type": "integer"},
                                 "arpa": {"type": "string", "description": "a ready first-pass ARPA instead"}}},
        "lm_nn": {"type": "object", "description": "w2v.lm_nn.LMConfig fields"},
        "model": {"type": "string", "description": "preset name in conf/model/ or a YAML path"},
        "exp": {"type": "string", "pattern": "^[A-Za-z0-9_.-]+$",
                "description": "experiment directory under exp/ (default: the recipe name), e.g. one per model family"},
        "pretrain": _train,
        "finetune": {
            "type": "object", "additionalProperties": False,
            "properties": {
                "subsets": {"type": "object", "additionalProperties": _train,
                            "description": "labeled subset -> its training settings"},
                "settings": _train,
                "scratch": {"type": ["object", "boolean"],
                            "description": "false, or overrides for the no-pre-training baseline"},
                "init_from": {"type": "string",
                              "description": "a pre-trained model.pt (e.g. from `w2v import-checkpoint`) to "
                                             "fine-tune instead of the recipe's own pretrain stage"},
            },
        },
        "decode": {
            "type": "object", "additionalProperties": False,
            "properties": {
                "dev_set": {"type": "string"},
                "test_sets": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                "beam": {"type": "integer", "minimum": 1},
                "beam_threshold": {"type": "number"},
                "lm_weights": {"type": "array", "items": {"type": "number"}, "minItems": 1},
                "word_scores": {"type": "array", "items": {"type": "number"}, "minItems": 1},
                "max_duration": {"type": "number"},
                "matmul_conv": {"type": "boolean",
                                "description": "the acoustic model's convolutions as matrix products (the "
                                               "same function; default: as the model was trained)"},
                "compile": {"type": "boolean", "description": "torch.compile the acoustic model (wav2vec 2.0 "
                                                              "family; pays on long test sets)"},
                "gelu_epilogue": {"type": "boolean",
                                  "description": "on a GPU, each feed-forward product and its GELU as one cuBLASLt "
                                                 "call (tanh-form GELU, within 5e-4 of erf's; default: true)"},
                "decoders": {"type": "array", "minItems": 1, "items": {"type": "string", "pattern":
                             r"^(greedy|beam\+\d+gram|hlg|hlg\+nbest-\d+gram(\+transformer-lm)?)$"}},
                "wfst_backend": {"enum": ["kaldi", "k2"]},
                "hlg_beam": {"type": "number"}, "max_active": {"type": "integer"},
                "lattice_beam": {"type": "number"}, "nbest_beam": {"type": "number"},
                "nbest": {"type": "integer", "minimum": 1},
                "acoustic_scales": {"type": "array", "items": {"type": "number"}, "minItems": 1},
                "nbest_acoustic_scale": {"type": "number"},
                "rescore_lm_weights": {"type": "array", "items": {"type": "number"}, "minItems": 1},
                "rescore_word_scores": {"type": "array", "items": {"type": "number"}, "minItems": 1},
                "rescore_nn_weights": {"type": "array", "items": {"type": "number"}, "minItems": 1},
            },
        },
        "score": {"type": "object", "additionalProperties": False,
                  "properties": {"fold_map": {"type": "string",
                                              "description": "FROM TO per line (e.g. TIMIT 61 -> 39 phones), "
                                                             "applied to references and hypotheses"}}},
        "device": {"type": "string"},
        "gpus": {"type": "integer", "minimum": 1,
                 "description": "training processes per stage (DDP under torchrun); the CLI's --gpus overrides"},
        "paper": {"type": "array", "items": {"type": "object"}},
    },
}


class ConfigError(ValueError):
    pass


def _schema() -> dict[str, Any]:
    """:data:`SCHEMA` with the corpus types known now (local/*.py can add some)."""
    from w2v.data.corpora import corpus_types

    _corpus_item["properties"]["type"]["enum"] = corpus_types()
    return SCHEMA


def validate(cfg: dict, source: str) -> dict:
    """Validate a recipe config; raise :class:`ConfigError` naming the key, the file and the expectation."""
    validator = jsonschema.Draft202012Validator(_schema())
    errors = sorted(validator.iter_errors(cfg), key=lambda e: list(e.absolute_path))
    if errors:
        lines = []
        for e in errors[:10]:
            # oneOf (a mapping or a list of them): report the form the value has, and its wrong key
            same_form = [c for c in e.context if not (c.validator == "type" and not c.relative_path)]
            if e.validator == "oneOf" and same_form:
                e = jsonschema.exceptions.best_match(same_form)
            key = ".".join(str(p) for p in e.absolute_path) or "(top level)"
            if e.validator == "additionalProperties":
                extra = sorted(set(e.instance) - set(e.schema.get("properties", {})))
                known = sorted(e.schema.get("properties", {}))
                lines.append(f"  {key}: unknown key(s) {extra}; expected one of {known}")
            else:
                lines.append(f"  {key}: {e.message}")
        raise ConfigError(f"invalid recipe config {source}:\n" + "\n".join(lines))
    return cfg


def load(path: str | Path) -> dict:
    """Read and validate a recipe config file (YAML or JSON)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"recipe config not found: {path}")
    try:
        cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"cannot parse {path}: {e}") from e
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return validate(cfg, str(path))


_UNIT = {"s": 1, "m": 60, "h": 3600}


def subset_seconds(name: str) -> float:
    """``10m`` -> 600.0, ``1h`` -> 3600.0, ``30s`` -> 30.0."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([smh])", name)
    if not m:
        raise ConfigError(f"labeled subset name {name!r} must look like 10m, 1h or 30s")
    return float(m.group(1)) * _UNIT[m.group(2)]


def experiments(cfg: dict) -> list[tuple[str, str]]:
    """Fine-tuning experiments as ``(init, subset)``: ``pretrained`` and, if enabled, ``scratch``."""
    ft = cfg.get("finetune", {})
    subsets = list(ft.get("subsets", {}))
    inits = ["pretrained"] + (["scratch"] if ft.get("scratch", True) is not False else [])
    return [(init, s) for s in subsets for init in inits]


def pretrained_model(cfg: dict) -> str:
    """The pre-trained model the ``pretrained`` experiments start from: ``finetune.init_from``
    (an imported release, say) or the recipe's own pre-training output."""
    return cfg.get("finetune", {}).get("init_from") or f"exp/{cfg.get('exp', cfg['recipe'])}/pretrain/model.pt"


def finetune_settings(cfg: dict, init: str, subset: str) -> dict:
    """Merge the fine-tuning settings: common, then per-subset, then the scratch overrides."""
    ft = cfg.get("finetune", {})
    if subset not in ft.get("subsets", {}):
        raise ConfigError(f"finetune.subsets has no subset {subset!r}")
    d = {"task": "finetune", **ft.get("settings", {}), **(ft["subsets"][subset] or {})}
    if init == "scratch" and isinstance(ft.get("scratch"), dict):
        overrides = ft["scratch"]
        d = {**d, **overrides, "model_overrides": {**d.get("model_overrides", {}),
                                                   **overrides.get("model_overrides", {})}}
    return d


def write_resolved(cfg: dict, path: str | Path) -> None:
    """Write the merged config where the CLI reads it, only when it changed (keeps mtimes stable)."""
    import json

    from w2v.io import write_text

    path = Path(path)
    text = json.dumps(cfg, indent=2, sort_keys=True) + "\n"
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        write_text(path, text)
