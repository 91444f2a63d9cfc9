"""Corpus types: ``corpus: {type: NAME, path: ...}`` -> the function that prepares it.

Two types are built in (:mod:`w2v.data.ingest`): ``folder`` and ``kaldi``. Every other type
NAME is a module ``local/NAME.py`` (the repository's, or one in the working directory, which
wins) with::

    def prepare(corpus: dict, key: str, num_threads: int) -> tuple[list[Recording], list[SupervisionSegment]]
    def check(corpus: dict, key: str) -> None        # optional: a cheap layout check

``prepare`` returns lhotse recordings and supervisions; each supervision carries
``custom={"split": "train" | "dev*" | "test*"}`` and, for corpus-defined labeled subsets
(Libri-light's ``10m``/``1h``/``10h``, BABEL's limited language pack), ``custom["subsets"]``,
the names of the subsets it belongs to. ``check`` raises :class:`CorpusError` listing what was
expected and what was found; the Snakefile calls it before the first stage, so a wrong path
fails at once (also in a dry run). A module is a corpus type when it defines
``def prepare(corpus`` at the top level: dropping such a file into ``local/`` is the whole
registration (``w2v new-recipe NAME`` writes one), and the recipe schema's ``type`` enum is
built from :func:`corpus_types`.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Iterable

__all__ = ["BUILTIN", "CorpusError", "corpus_types", "load", "check", "check_options", "expect",
           "corpus_root", "tag"]

BUILTIN = ("folder", "kaldi", "mms_bible")  # mms_bible: w2v/data/mms_bible.py (it aligns with a model)


class CorpusError(ValueError):
    """A corpus on disk does not match what its config says; the message names the file."""

REPO = Path(__file__).resolve().parents[3]
_PREPARE = re.compile(r"^def prepare\(\s*corpus\b", re.MULTILINE)
_SHOW = 8


def _local_dirs() -> list[Path]:
    dirs = [Path.cwd() / "local", REPO / "local"]
    return [d for i, d in enumerate(dirs) if d.is_dir() and d.resolve() not in {x.resolve() for x in dirs[:i]}]


def _local_module_path(name: str) -> Path | None:
    for d in _local_dirs():
        p = d / f"{name}.py"
        if p.is_file() and _PREPARE.search(p.read_text(encoding="utf-8")):
            return p
    return None


def corpus_types() -> list[str]:
    """The built-in types, then every ``local/NAME.py`` that defines ``prepare(corpus, ...)``."""
    found = {p.stem for d in _local_dirs() for p in d.glob("*.py") if _local_module_path(p.stem) == p}
    return [*BUILTIN, *sorted(found - set(BUILTIN))]


@functools.lru_cache(maxsize=None)
def _import(path: Path) -> ModuleType:
    name = f"w2v_local_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look the module up by name
    spec.loader.exec_module(module)
    return module


def load(kind: str) -> ModuleType:
    """The module of corpus type ``kind`` (``local/<kind>.py``)."""
    path = _local_module_path(kind)
    if path is None:
        raise CorpusError(f"corpus type {kind!r}: no local/{kind}.py defining prepare(corpus, key, num_threads) "
                          f"(known types: {', '.join(corpus_types())})")
    return _import(path.resolve())


def check(corpus: dict | list[dict]) -> None:
    """Check every part of a recipe's ``corpus`` on disk without reading audio (see module doc)."""
    from w2v.data import ingest

    parts = corpus if isinstance(corpus, list) else [corpus]
    for i, part in enumerate(parts):
        key = f"corpus[{i}]" if isinstance(corpus, list) else "corpus"
        kind = part.get("type")
        if kind == "mms_bible":
            corpus_root(part, key)  # its layout is checked chapter by chapter when prepared
            continue
        if kind in BUILTIN:
            ingest.check_builtin(part, key)
            continue
        module = load(kind)
        if hasattr(module, "check"):
            module.check(part, key)
        else:
            corpus_root(part, key)


def corpus_root(corpus: dict, key: str) -> Path:
    """``corpus.path`` as a directory that exists, or an error naming the key."""
    if not corpus.get("path"):
        raise CorpusError(f"{key}.path: missing; set it to the corpus directory")
    root = Path(os.path.expanduser(str(corpus["path"])))
    if not root.is_dir():
        parent = next((p for p in root.parents if p.is_dir()), None)
        near = sorted(x.name for x in parent.iterdir())[:_SHOW] if parent else []
        raise CorpusError(f"{key}.path: directory {root} does not exist"
                          + (f" (the nearest existing directory {parent} holds: {', '.join(near) or 'nothing'})"
                             if parent else ""))
    return root


def check_options(corpus: dict, key: str, allowed: Iterable[str]) -> None:
    """Reject keys of a corpus entry that its type does not know (``type``, ``path`` always allowed)."""
    known = {"type", "path", "language", *allowed}  # language: any part (see w2v.data.ingest)
    unknown = sorted(set(corpus) - known)
    if unknown:
        raise CorpusError(f"{key}: unknown key(s) {unknown} for corpus type {corpus.get('type')!r}; "
                          f"expected some of {sorted(known)}")


def _listing(root: Path, depth: int = 2) -> str:
    """What is under ``root``: up to a few entries of its first ``depth`` levels."""
    items: list[str] = []
    for p in sorted(root.iterdir()) if root.is_dir() else []:
        items.append(p.name + ("/" if p.is_dir() else ""))
        if p.is_dir() and depth > 1:
            items += [f"{p.name}/{q.name}" + ("/" if q.is_dir() else "") for q in sorted(p.iterdir())[:3]]
        if len(items) >= 3 * _SHOW:
            items.append("...")
            break
    return ", ".join(items) or "nothing (empty directory)"


def expect(root: Path, key: str, expected: dict[str, str], what: str) -> dict[str, list[Path]]:
    """Glob each expected pattern under ``root``; raise if any matches nothing.

    Args:
        root: the corpus directory.
        key: the config key (``corpus``, ``corpus[1]``) for the message.
        expected: glob pattern relative to ``root`` -> what it is (for the message).
        what: the corpus's name, e.g. ``"LibriSpeech"``.

    Returns:
        pattern -> sorted matches.

    Raises:
        CorpusError: listing every expected pattern (marked found / MISSING) and what ``root`` holds.
    """
    found = {pat: sorted(root.glob(pat)) for pat in expected}
    if all(found.values()):
        return found
    lines = [f"  {'found  ' if found[p] else 'MISSING'} {p}  ({desc})" for p, desc in expected.items()]
    raise CorpusError(f"{key}.path: {root} does not look like {what}. Expected:\n" + "\n".join(lines)
                      + f"\nFound in {root}: {_listing(root)}")


def tag(sup, split: str, subsets: Iterable[str] = (), **custom):
    """A copy of a lhotse supervision with ``custom["split"]`` (and ``subsets``, extra fields) set."""
    from lhotse.utils import fastcopy

    extra = {**(sup.custom or {}), **custom, "split": split}
    if subsets:
        extra["subsets"] = sorted(set(extra.get("subsets", ())) | set(subsets))
    return fastcopy(sup, custom=extra)

