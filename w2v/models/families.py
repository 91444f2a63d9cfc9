"""The model families and their configs: one registry keyed by a preset's ``family:``.

A preset without ``family:`` is wav2vec 2.0 (`Wav2Vec2Config`), so every existing preset and
checkpoint reads as before. The other families' configs carry their family name in
``to_dict()``, so a checkpoint's ``model_config`` says which model to rebuild.

Families: ``wav2vec2``, ``wav2vec1`` (Schneider et al. 2019), ``vq_wav2vec`` (Baevski et al.
2019) and ``hubert`` (Hsu et al. 2021).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

FAMILIES = ("wav2vec2", "wav2vec1", "vq_wav2vec", "hubert")


class FamilyConfig:
    """Shared plumbing of the frozen family dataclasses: dict round trip with the family name,
    unknown keys rejected with the source named, tuples for list-valued fields."""

    family: ClassVar[str] = ""
    _tuple_fields: ClassVar[dict[str, int]] = {}  # field -> nesting depth (1: tuple, 2: tuple of tuples)

    def _freeze_tuples(self) -> None:
        for name, depth in self._tuple_fields.items():
            v = getattr(self, name)
            v = tuple(tuple(x) for x in v) if depth == 2 else tuple(v)
            object.__setattr__(self, name, v)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)  # type: ignore[call-overload]
        for name, depth in self._tuple_fields.items():
            out[name] = [list(x) for x in out[name]] if depth == 2 else list(out[name])
        return {"family": self.family, **out}

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "<dict>"):
        d = dict(d)
        family = d.pop("family", cls.family)
        if family != cls.family:
            raise ValueError(f"{source}: family {family!r} given to the {cls.family} config")
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} key(s) {unknown} in {source}")
        return cls(**d)

    def replace(self, **overrides: Any):
        return self.from_dict({**self.to_dict(), **overrides}, source="overrides")


def config_class(family: str, source: str = "<config>") -> type:
    """The config dataclass of ``family``."""
    if family == "wav2vec2":
        from w2v.models.config import Wav2Vec2Config
        return Wav2Vec2Config
    if family == "wav2vec1":
        from w2v.models.wav2vec1 import Wav2Vec1Config
        return Wav2Vec1Config
    if family == "vq_wav2vec":
        from w2v.models.vq_wav2vec import VqWav2VecConfig
        return VqWav2VecConfig
    if family == "hubert":
        from w2v.models.hubert import HubertConfig
        return HubertConfig
    raise ValueError(f"{source}: unknown model family {family!r}; known: {list(FAMILIES)}")


def family_of(cfg: Any) -> str:
    return getattr(cfg, "family", "") or "wav2vec2"


def config_from_dict(d: dict[str, Any], source: str = "<dict>"):
    """A checkpoint's ``model_config`` back to its config (no ``family`` key: wav2vec 2.0)."""
    d = dict(d)
    family = d.pop("family", "wav2vec2")
    return config_class(family, source).from_dict(d, source=source)


def build_pretraining_model(cfg: Any, init_state: dict | None = None):
    """The self-supervised model of ``cfg``'s family. ``init_state``: a previous stage's weights
    (vq-wav2vec's BERT stage starts from the trained quantizer model)."""
    family = family_of(cfg)
    if family == "wav2vec2":
        from w2v.models.wav2vec2 import Wav2Vec2ForPreTraining
        return Wav2Vec2ForPreTraining(cfg)
    if family == "wav2vec1":
        from w2v.models.wav2vec1 import Wav2Vec1ForPreTraining
        return Wav2Vec1ForPreTraining(cfg)
    if family == "vq_wav2vec":
        from w2v.models.vq_wav2vec import VqWav2VecBert, VqWav2VecForPreTraining
        if not cfg.with_bert:
            return VqWav2VecForPreTraining(cfg)
        model = VqWav2VecBert(cfg)
        if init_state is not None:
            model.load_quantizer_model(init_state)
        return model
    from w2v.models.hubert import HubertForPreTraining
    return HubertForPreTraining(cfg)


def build_ctc_model(cfg: Any, vocab_size: int, final_dropout: float = 0.0, pretrained: dict | None = None):
    """The CTC model fine-tuned from ``cfg``'s family: the wav2vec 2.0 encoder plus a linear
    layer (wav2vec 2.0, HuBERT), or frozen features plus a small BiLSTM acoustic model
    (wav2vec 1.0, vq-wav2vec, as in those papers' downstream use).

    Args:
        pretrained: the pre-training state dict to start from, or None (from scratch).
    """
    family = family_of(cfg)
    if family in ("wav2vec2", "hubert"):
        from w2v.models.wav2vec2 import Wav2Vec2ForCTC
        model = Wav2Vec2ForCTC(cfg, vocab_size, final_dropout=final_dropout)
        if pretrained is not None:
            model.load_pretrained(pretrained)
        return model
    from w2v.models.downstream import FrozenFeatureCTC
    return FrozenFeatureCTC.from_pretraining(cfg, vocab_size, pretrained)


__all__ = ["FAMILIES", "FamilyConfig", "build_ctc_model", "build_pretraining_model", "config_class",
           "config_from_dict", "family_of"]
