"""Import fairseq wav2vec 2.0 checkpoints (pre-trained or CTC fine-tuned) into our `model.pt` format.

fairseq (`fairseq/models/wav2vec/wav2vec2.py`, `wav2vec2_asr.py`) names parameters after its
module tree; ours use Hugging Face's names. The mapping is the ordered table `RENAME_RULES`:
each rule is a pair of key templates with placeholders (`{n}` a layer index, `{p}` weight/bias,
`{proj}` k/q/v/out), compiled into a regex in each direction, so `to_fairseq_keys` is the exact
inverse of `from_fairseq_keys`. Keys fairseq stores but our model does not need are listed in
`DROPPED` (all tasks) and `DROPPED_FINETUNE` (CTC only); any other key is an error naming it.

The hyper-parameters come from the checkpoint's stored config (`ckpt["cfg"]["model"]` in
hydra-era fairseq, `ckpt["args"]` before); `conv_feature_layers` is a Python-literal string
there, parsed by walking its syntax tree (literals, `+`, `*` only), never evaluated.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from w2v.models.config import Wav2Vec2Config

FINETUNE_PREFIX = "w2v_encoder.w2v_model."  # fairseq Wav2VecEncoder wraps the Wav2Vec2Model
BLANK = "<blank>"
FAIRSEQ_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")  # fairseq Dictionary(): bos, pad, eos, unk
MAX_CONV_LAYERS = 1000  # bound on `[(...)] * k` in conv_feature_layers

_PLACEHOLDERS = {"n": r"\d+", "p": r"weight|bias", "proj": r"k|q|v|out", "i": r"[01]"}


@dataclass(frozen=True)
class Rule:
    """fairseq key template <-> our key template.

    mode: only for this extractor_mode when mapping our keys back to fairseq (None: any).
    invertible: False for alternative fairseq spellings that `to_fairseq_keys` never writes.
    """

    fairseq: str
    ours: str
    mode: str | None = None
    invertible: bool = True
    _fs_re: re.Pattern = field(init=False, repr=False, compare=False)
    _ours_re: re.Pattern = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_fs_re", _template_regex(self.fairseq))
        object.__setattr__(self, "_ours_re", _template_regex(self.ours))

    def to_ours(self, key: str) -> str | None:
        m = self._fs_re.fullmatch(key)
        return None if m is None else self.ours.format(**m.groupdict())

    def to_fairseq(self, key: str) -> str | None:
        m = self._ours_re.fullmatch(key)
        return None if m is None else self.fairseq.format(**m.groupdict())


def _template_regex(template: str) -> re.Pattern:
    parts = re.split(r"\{(\w+)\}", template)  # literal, name, literal, name, ...
    out = []
    for i, part in enumerate(parts):
        out.append(f"(?P<{part}>{_PLACEHOLDERS[part]})" if i % 2 else re.escape(part))
    return re.compile("".join(out))


# Ordered: the first matching rule wins. Keys are those of fairseq's Wav2Vec2Model (a CTC
# checkpoint's keys have FINETUNE_PREFIX stripped first). Example fairseq key in each comment.
RENAME_RULES: tuple[Rule, ...] = (
    # feature_extractor.conv_layers.3.0.weight  (Conv1d; .bias with conv_bias)
    Rule("feature_extractor.conv_layers.{n}.0.{p}", "wav2vec2.feature_extractor.conv_layers.{n}.conv.{p}"),
    # feature_extractor.conv_layers.3.2.1.weight  (extractor_mode=layer_norm: TransposeLast, LayerNorm, TransposeLast)
    Rule("feature_extractor.conv_layers.{n}.2.1.{p}", "wav2vec2.feature_extractor.conv_layers.{n}.layer_norm.{p}",
         mode="layer_norm"),
    # feature_extractor.conv_layers.0.2.weight  (extractor_mode=default: GroupNorm in the first block only)
    Rule("feature_extractor.conv_layers.0.2.{p}", "wav2vec2.feature_extractor.conv_layers.0.layer_norm.{p}",
         mode="default"),
    # post_extract_proj.weight
    Rule("post_extract_proj.{p}", "wav2vec2.feature_projection.projection.{p}"),
    # layer_norm.weight  (LayerNorm over the conv features)
    Rule("layer_norm.{p}", "wav2vec2.feature_projection.layer_norm.{p}"),
    # mask_emb
    Rule("mask_emb", "wav2vec2.masked_spec_embed"),
    # encoder.pos_conv.0.weight_g  (torch.nn.utils.weight_norm, dim=2)
    Rule("encoder.pos_conv.0.weight_g", "wav2vec2.encoder.pos_conv_embed.conv.parametrizations.weight.original0"),
    # encoder.pos_conv.0.weight_v
    Rule("encoder.pos_conv.0.weight_v", "wav2vec2.encoder.pos_conv_embed.conv.parametrizations.weight.original1"),
    # encoder.pos_conv.0.parametrizations.weight.original0  (fairseq on torch with parametrized weight_norm)
    Rule("encoder.pos_conv.0.parametrizations.weight.original{i}",
         "wav2vec2.encoder.pos_conv_embed.conv.parametrizations.weight.original{i}", invertible=False),
    # encoder.pos_conv.0.bias
    Rule("encoder.pos_conv.0.bias", "wav2vec2.encoder.pos_conv_embed.conv.bias"),
    # encoder.layer_norm.weight
    Rule("encoder.layer_norm.{p}", "wav2vec2.encoder.layer_norm.{p}"),
    # encoder.layers.0.self_attn.k_proj.weight
    Rule("encoder.layers.{n}.self_attn.{proj}_proj.{p}", "wav2vec2.encoder.layers.{n}.attention.{proj}_proj.{p}"),
    # encoder.layers.0.self_attn_layer_norm.weight
    Rule("encoder.layers.{n}.self_attn_layer_norm.{p}", "wav2vec2.encoder.layers.{n}.layer_norm.{p}"),
    # encoder.layers.0.fc1.weight
    Rule("encoder.layers.{n}.fc1.{p}", "wav2vec2.encoder.layers.{n}.feed_forward.intermediate_dense.{p}"),
    # encoder.layers.0.fc2.weight
    Rule("encoder.layers.{n}.fc2.{p}", "wav2vec2.encoder.layers.{n}.feed_forward.output_dense.{p}"),
    # encoder.layers.0.final_layer_norm.weight
    Rule("encoder.layers.{n}.final_layer_norm.{p}", "wav2vec2.encoder.layers.{n}.final_layer_norm.{p}"),
    # quantizer.vars  (1, groups * vars, dim / groups)
    Rule("quantizer.vars", "quantizer.codevectors"),
    # quantizer.weight_proj.weight
    Rule("quantizer.weight_proj.{p}", "quantizer.weight_proj.{p}"),
    # project_q.weight
    Rule("project_q.{p}", "project_q.{p}"),
    # final_proj.weight
    Rule("final_proj.{p}", "project_hid.{p}"),
)

# CTC head of fairseq's Wav2VecCtc (matched on the full key, before prefix stripping).
FINETUNE_HEAD_RULES: tuple[Rule, ...] = (
    # w2v_encoder.proj.weight
    Rule("w2v_encoder.proj.{p}", "lm_head.{p}"),
)

# fairseq keys dropped on purpose (regex, full match on the key with FINETUNE_PREFIX stripped).
DROPPED: tuple[str, ...] = (
    r"(.+\.)?_float_tensor",  # fairseq FairseqEncoder/sinusoidal-position dummy buffer
    r"(.+\.)?version",  # fairseq state-dict version buffers
    r"label_embs_concat",  # HuBERT-style label embeddings (not wav2vec 2.0 weights)
)
# Dropped from CTC checkpoints only: pre-training heads (fairseq removes them for fine-tuning,
# `remove_pretraining_modules`, but a checkpoint may still carry them).
DROPPED_FINETUNE: tuple[str, ...] = (
    r"quantizer\..+",
    r"project_q\..+",
    r"final_proj\..+",
    r"target_glu\..+",
)


class FairseqImportError(ValueError):
    pass


def is_finetune_state(state_dict: Mapping[str, Any]) -> bool:
    """True for a fairseq CTC (Wav2VecCtc) state dict."""
    return any(k.startswith("w2v_encoder.") for k in state_dict)


def from_fairseq_keys(state_dict: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Rename a fairseq wav2vec 2.0 state dict to our keys.

    Returns:
        (renamed state dict, sorted dropped fairseq keys).

    Raises:
        FairseqImportError: naming every key no rule matches (and that is not in DROPPED).
    """
    finetune = is_finetune_state(state_dict)
    drop_res = [re.compile(p) for p in DROPPED + (DROPPED_FINETUNE if finetune else ())]
    out: dict[str, Any] = {}
    dropped: list[str] = []
    unknown: list[str] = []
    for key, value in state_dict.items():
        new = _first(FINETUNE_HEAD_RULES, key, "to_ours") if finetune else None
        if new is None:
            inner = key
            if finetune:
                if not key.startswith(FINETUNE_PREFIX):
                    unknown.append(key)
                    continue
                inner = key[len(FINETUNE_PREFIX):]
            if any(r.fullmatch(inner) for r in drop_res):
                dropped.append(key)
                continue
            new = _first(RENAME_RULES, inner, "to_ours")
        if new is None:
            unknown.append(key)
        elif new in out:
            raise FairseqImportError(f"two fairseq keys map to {new!r} (second: {key!r})")
        else:
            out[new] = value
    if unknown:
        raise FairseqImportError(f"unknown fairseq wav2vec 2.0 key(s): {sorted(unknown)}")
    return out, sorted(dropped)


def to_fairseq_keys(state_dict: Mapping[str, Any], extractor_mode: str) -> dict[str, Any]:
    """Inverse of `from_fairseq_keys`: our state dict (pre-training or CTC) in fairseq's layout.

    A CTC state dict (with `lm_head.*`) gets the `w2v_encoder.w2v_model.` prefix and
    `w2v_encoder.proj`. Legacy `weight_g`/`weight_v` names are written for the positional conv.
    """
    if extractor_mode not in ("default", "layer_norm"):
        raise ValueError(f"extractor_mode must be 'default' or 'layer_norm', got {extractor_mode!r}")
    finetune = any(k.startswith("lm_head.") for k in state_dict)
    rules = [r for r in RENAME_RULES if r.invertible and r.mode in (None, extractor_mode)]
    out: dict[str, Any] = {}
    unknown = []
    for key, value in state_dict.items():
        new = _first(FINETUNE_HEAD_RULES, key, "to_fairseq") if finetune else None
        if new is None:
            new = _first(rules, key, "to_fairseq")
            if new is not None and finetune:
                new = FINETUNE_PREFIX + new
        if new is None:
            unknown.append(key)
        else:
            out[new] = value
    if unknown:
        raise ValueError(f"no fairseq name for key(s): {sorted(unknown)}")
    return out


def _first(rules, key: str, direction: str) -> str | None:
    for rule in rules:
        new = getattr(rule, direction)(key)
        if new is not None:
            return new
    return None


# ---------------------------------------------------------------- config


def parse_literal(text: str, allow_float: bool = False) -> Any:
    """Parse a fairseq list/tuple literal string such as `"[(512, 10, 5)] + [(512, 3, 2)] * 4"`.

    Only numbers, tuples, lists, `+` and `*` are accepted (the syntax tree is walked, nothing is
    evaluated); anything else raises `ValueError` naming the offending construct.
    """
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as e:
        raise ValueError(f"cannot parse {text!r}: {e.msg}") from e

    def walk(node: ast.AST) -> Any:
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return node.value
        if allow_float and isinstance(node, ast.Constant) and type(node.value) is float:
            return node.value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant):
            return -walk(node.operand)
        if isinstance(node, ast.Tuple):
            return tuple(walk(e) for e in node.elts)
        if isinstance(node, ast.List):
            return [walk(e) for e in node.elts]
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
            left, right = walk(node.left), walk(node.right)
            if isinstance(node.op, ast.Add):
                if isinstance(left, list) and isinstance(right, list):
                    return left + right
                if isinstance(left, tuple) and isinstance(right, tuple):
                    return left + right
                raise ValueError(f"'+' only joins two lists or two tuples in {text!r}")
            seq, count = (left, right) if isinstance(right, int) else (right, left)
            if not isinstance(seq, (list, tuple)) or not isinstance(count, int):
                raise ValueError(f"'*' only repeats a list or tuple by an integer in {text!r}")  # noqa: TRY004
            if not 0 <= count * len(seq) <= MAX_CONV_LAYERS:
                raise ValueError(f"repetition too large in {text!r}")
            return seq * count
        raise ValueError(f"unsupported {type(node).__name__} in {text!r} (only number/tuple/list literals, + and *)")

    return walk(tree.body)


def parse_conv_feature_layers(value: Any) -> tuple[tuple[int, int, int], ...]:
    """fairseq `conv_feature_layers` (string, or already a list) -> ((dim, kernel, stride), ...)."""
    layers = parse_literal(value) if isinstance(value, str) else value
    if not isinstance(layers, (list, tuple)) or not layers:
        raise ValueError(f"conv_feature_layers must be a non-empty list of (dim, kernel, stride), got {value!r}")
    out = []
    for layer in layers:
        if (not isinstance(layer, (list, tuple)) or len(layer) != 3
                or not all(type(v) is int and v > 0 for v in layer)):
            raise ValueError(f"conv_feature_layers entry {layer!r} is not a (dim, kernel, stride) triple of positive ints")
        out.append(tuple(layer))
    return tuple(out)


# fairseq Wav2Vec2Config field -> ours (where the names differ; the rest are identical).
CONFIG_RENAMES: dict[str, str] = {"encoder_layerdrop": "layerdrop"}
# fairseq Wav2Vec2AsrConfig (fine-tuning) fields that override the pre-trained model's config
# (as fairseq's Wav2VecEncoder does) -> ours.
FINETUNE_OVERRIDES: dict[str, str] = {
    "dropout": "dropout", "activation_dropout": "activation_dropout", "dropout_input": "dropout_input",
    "attention_dropout": "attention_dropout", "mask_length": "mask_length", "mask_prob": "mask_prob",
    "mask_channel_length": "mask_channel_length", "mask_channel_prob": "mask_channel_prob",
    "layerdrop": "layerdrop", "feature_grad_mult": "feature_grad_mult",
}
# fairseq settings that change the network's weights in ways our model cannot represent:
# field -> the values we support (a missing field means fairseq's default).
UNSUPPORTED_UNLESS: dict[str, tuple[Any, ...]] = {
    "quantize_input": (False,),
    "target_glu": (False,),
    "same_quantizer": (False,),
    "layer_type": ("transformer",),
    "pos_conv_depth": (1,),
    "quantizer_depth": (1,),
}


def _as_dict(obj: Any) -> dict[str, Any]:
    if obj is None:
        return {}
    if isinstance(obj, Mapping):
        return dict(obj)
    if hasattr(obj, "__dict__"):  # argparse.Namespace of pre-hydra checkpoints
        return dict(vars(obj))
    raise FairseqImportError(f"fairseq config must be a mapping or Namespace, got {type(obj).__name__}")


def config_from_fairseq(cfg: Mapping[str, Any]) -> Wav2Vec2Config:
    """Our `Wav2Vec2Config` from a fairseq model config.

    Args:
        cfg: `ckpt["cfg"]["model"]` (or the `ckpt["args"]` namespace as a dict). For a fine-tuned
            (CTC) model, the pre-trained model's config under `w2v_args` (`w2v_args["model"]` in
            hydra-era checkpoints) is the base and the fine-tuning dropout/masking settings
            override it.

    Raises:
        ValueError: for a malformed `conv_feature_layers` or a fairseq setting we cannot represent.
    """
    cfg = _as_dict(cfg)
    overrides: dict[str, Any] = {}
    if cfg.get("w2v_args") is not None:
        w2v_args = _as_dict(cfg["w2v_args"])
        base = _as_dict(w2v_args["model"]) if "model" in w2v_args else w2v_args
        overrides = {ours: cfg[fs] for fs, ours in FINETUNE_OVERRIDES.items() if cfg.get(fs) is not None}
        cfg = base
    for name, ok in UNSUPPORTED_UNLESS.items():
        if cfg.get(name) is not None and cfg[name] not in ok:
            raise ValueError(f"fairseq {name}={cfg[name]!r} is not supported (only {list(ok)})")
    known = {f for f in Wav2Vec2Config.__dataclass_fields__}
    fields: dict[str, Any] = {}
    for fs_name, value in cfg.items():
        ours = CONFIG_RENAMES.get(fs_name, fs_name)
        if ours in known and value is not None:
            fields[ours] = value
    if "conv_feature_layers" in fields:
        fields["conv_feature_layers"] = parse_conv_feature_layers(fields["conv_feature_layers"])
    if isinstance(fields.get("latent_temp"), str):
        fields["latent_temp"] = parse_literal(fields["latent_temp"], allow_float=True)
    fields.update(overrides)
    return Wav2Vec2Config.from_dict(fields, source="fairseq config")


def _checkpoint_model_cfg(ckpt: Mapping[str, Any], path: Path) -> dict[str, Any]:
    cfg = ckpt.get("cfg")
    if cfg is not None and _as_dict(cfg).get("model") is not None:
        return _as_dict(_as_dict(cfg)["model"])
    if ckpt.get("args") is not None:
        return _as_dict(ckpt["args"])
    raise FairseqImportError(f"{path} has no fairseq model config (neither cfg.model nor args)")


# ---------------------------------------------------------------- units


def read_fairseq_dictionary(path: str | Path) -> list[str]:
    """Units (CTC ids) of a fairseq `dict.ltr.txt`: `<s> <pad> </s> <unk>` then one `TOKEN COUNT` per line.

    fairseq's CTC uses the dictionary's bos `<s>` (id 0) as the blank, so id 0 becomes `<blank>`.
    """
    path = Path(path)
    symbols = list(FAIRSEQ_SPECIALS)
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.rstrip()
        if not line:
            continue
        line = line.removesuffix(" #fairseq:overwrite")
        token, sep, count = line.rpartition(" ")
        if not sep or not token or not count.lstrip("-").isdigit():
            raise FairseqImportError(f"{path}:{lineno}: expected 'TOKEN COUNT', got {line!r}")
        symbols.append(token)
    return [BLANK] + symbols[1:]


# ---------------------------------------------------------------- import


def import_fairseq(pt_path: str | Path, out_path: str | Path, units: list[str] | None = None,
                   trust: bool = False) -> dict[str, Any]:
    """Convert a fairseq wav2vec 2.0 checkpoint into our `model.pt`.

    Args:
        pt_path: fairseq checkpoint (`wav2vec_small.pt`, `wav2vec_small_960h.pt`, ...).
        out_path: where to write our checkpoint (atomically).
        units: CTC units in id order (id 0 the blank); default: `dict.ltr.txt` beside `pt_path`.
            Ignored for pre-trained checkpoints.
        trust: allow full unpickling. fairseq's files pickle Python objects (``argparse.Namespace``,
            omegaconf configs), and unpickling can run any code the file's author chose; without
            ``trust`` only files that load with ``torch.load(weights_only=True)`` are accepted.

    Returns:
        Summary: task, source, out, dropped fairseq keys, n_params, n_units (CTC).

    Raises:
        CheckpointError: unreadable or truncated file (named); UntrustedCheckpointError when
            the file needs unpickling and ``trust`` is false.
        FairseqImportError: unknown keys, missing keys, shape mismatches, missing units.
    """
    from w2v.models import Wav2Vec2ForCTC, Wav2Vec2ForPreTraining, count_parameters
    from w2v.train.checkpoint import load, save_atomic

    pt_path = Path(pt_path)
    ckpt = load(pt_path, trust=trust)
    if not isinstance(ckpt, Mapping) or not isinstance(ckpt.get("model"), Mapping):
        raise FairseqImportError(f"{pt_path} is not a fairseq checkpoint (no 'model' state dict)")
    fs_state = ckpt["model"]
    cfg = config_from_fairseq(_checkpoint_model_cfg(ckpt, pt_path))
    finetune = is_finetune_state(fs_state)
    state, dropped = from_fairseq_keys(fs_state)

    if finetune:
        if units is None:
            dict_path = pt_path.parent / "dict.ltr.txt"
            if not dict_path.is_file():
                raise FairseqImportError(
                    f"{pt_path} is a CTC checkpoint: pass units or put fairseq's dict.ltr.txt beside it ({dict_path})")
            units = read_fairseq_dictionary(dict_path)
        units = list(units)
        if not units or units[0] != BLANK:
            raise FairseqImportError(f"units[0] must be {BLANK!r}, got {units[:1]}")
        head = state.get("lm_head.weight")
        if head is not None and head.shape[0] != len(units):
            raise FairseqImportError(
                f"{pt_path}: CTC head w2v_encoder.proj has {head.shape[0]} outputs but there are {len(units)} units")
        model = Wav2Vec2ForCTC(cfg, len(units))
    else:
        model = Wav2Vec2ForPreTraining(cfg)

    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise FairseqImportError(f"{pt_path}: missing key(s) {missing}, unexpected key(s) {unexpected}")
    bad = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
           for k, v in state.items() if tuple(v.shape) != tuple(expected[k].shape)]
    if bad:
        raise FairseqImportError(f"{pt_path}: shape mismatch: " + "; ".join(bad))
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True)

    task = "finetune" if finetune else "pretrain"
    out: dict[str, Any] = {"model": model.state_dict(), "model_config": cfg.to_dict(), "task": task}
    if finetune:
        out["units"] = units
    out.update({"train_config": {}, "num_updates": 0, "best": None, "init": None, "source": str(pt_path)})
    save_atomic(out, out_path)
    summary = {"task": task, "source": str(pt_path), "out": str(out_path), "dropped": dropped,
               "n_params": count_parameters(model)}
    if finetune:
        summary["n_units"] = len(units)
    return summary
