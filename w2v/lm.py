"""Word n-gram language models for lexicon beam search (wav2vec 2.0 paper, section 4.4).

The paper decodes with the official LibriSpeech 4-gram; recipes that have no ready-made LM
build one here with KenLM's ``lmplz`` (modified Kneser-Ney) and turn the ARPA file into
KenLM's binary format with ``build_binary`` so that decoding loads it in milliseconds.

Text normalisation is not done here: the input is one already-normalised sentence per line,
spelled the way the lexicon spells its words (upper case for the LibriSpeech recipes).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Sequence

__all__ = ["KenLMToolMissing", "LMBuildError", "build_ngram", "find_kenlm_tool"]

log = logging.getLogger(__name__)

SETUP_HINT = "run the set-up script `scripts/setup.sh`, which builds KenLM into the venv's bin/"


class KenLMToolMissing(FileNotFoundError):
    """``lmplz`` or ``build_binary`` is neither next to the interpreter nor on PATH."""


class LMBuildError(RuntimeError):
    """A KenLM tool exited with an error; the message carries the tail of its log."""


def find_kenlm_tool(name: str) -> Path:
    """Locate a KenLM command-line tool.

    The venv's own ``bin/`` (next to ``sys.executable``) wins over PATH: the set-up script
    builds a pinned KenLM there, and a system-wide one may have a smaller ``KENLM_MAX_ORDER``.

    Args:
        name: ``"lmplz"`` or ``"build_binary"``.

    Returns:
        Absolute path of the executable.

    Raises:
        KenLMToolMissing: when it is found nowhere.
    """
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    on_path = shutil.which(name)
    if on_path:
        return Path(on_path)
    raise KenLMToolMissing(
        f"KenLM's `{name}` is missing: looked in {beside.parent} and on PATH; {SETUP_HINT}"
    )


def _tail(path: Path, lines: int = 15) -> str:
    text = path.read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:])


def _run_logged(cmd: list[str], log_path: Path, what: str, stdin=None, stdout=None) -> None:
    """Run ``cmd`` with its stderr in ``log_path``; on failure raise with the log's tail."""
    with open(log_path, "wb") as err:
        proc = subprocess.run(cmd, stdin=stdin, stdout=stdout, stderr=err)
    if proc.returncode != 0:
        raise LMBuildError(
            f"{what} failed (exit status {proc.returncode}): {' '.join(cmd)}\n"
            f"full log: {log_path}\n--- last lines ---\n{_tail(log_path)}"
        )


def build_ngram(
    text_path: str | Path,
    out_dir: str | Path,
    order: int = 4,
    prune: Sequence[int] | str | None = None,
    vocab: str | Path | None = None,
    memory: str = "20%",
    tmp_dir: str | Path | None = None,
    binary_type: str = "probing",
    keep_arpa: bool = False,
) -> Path:
    """Build a KenLM n-gram LM from normalised text: ``lm.arpa`` -> ``lm.bin``.

    ``--discount_fallback`` is always passed: on small or artificial corpora lmplz cannot
    estimate Kneser-Ney discounts for some orders and aborts without it; on real corpora it
    never comes into play. Both outputs appear atomically (written under a temporary name,
    then renamed), so an interrupted run leaves no half-written LM for a resumed one.

    Args:
        text_path: one sentence per line, already normalised.
        out_dir: where ``lm.bin`` (and ``lm.arpa`` with ``keep_arpa``) are written, with
            ``lmplz.log`` / ``build_binary.log`` kept there.
        order: n-gram order (the paper's LM is a 4-gram).
        prune: per-order count thresholds for ``lmplz --prune`` (e.g. ``[0, 0, 1]`` or
            the config's string form ``"0 0 1"``); ``None`` builds an unpruned model.
        vocab: optional word list (whitespace-separated words); n-grams with other words
            are dropped (``--limit_vocab_file``), e.g. to match a decoding lexicon.
        memory: lmplz's sorting memory, ``-S`` (``"20%"`` of RAM, or ``"2G"``...).
        tmp_dir: lmplz's temporary directory, ``-T`` (defaults to ``out_dir``).
        binary_type: ``"probing"`` (fastest queries) or ``"trie"`` (smallest file).
        keep_arpa: keep ``lm.arpa`` beside ``lm.bin`` (it can be many GB on LibriSpeech).

    Returns:
        Path of ``lm.bin``.

    Raises:
        KenLMToolMissing: lmplz/build_binary not installed.
        LMBuildError: a tool failed; the message has the tail of its log.
        ValueError: empty corpus or bad arguments.
    """
    text_path, out_dir = Path(text_path), Path(out_dir)
    if order < 1:
        raise ValueError(f"order must be >= 1, got {order}")
    if binary_type not in ("probing", "trie"):
        raise ValueError(f"binary_type must be 'probing' or 'trie', got {binary_type!r}")
    if not text_path.is_file():
        raise FileNotFoundError(f"LM training text not found: {text_path}")
    with open(text_path, encoding="utf-8") as f:
        if not any(line.strip() for line in f):
            raise ValueError(f"LM training text {text_path} has no words")
    lmplz, build_binary = find_kenlm_tool("lmplz"), find_kenlm_tool("build_binary")
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tmp_dir) if tmp_dir is not None else out_dir

    cmd = [str(lmplz), "-o", str(order), "--discount_fallback", "-S", memory, "-T", str(tmp_dir)]
    if isinstance(prune, str):
        prune = prune.split()
    if prune:
        if len(prune) > order:
            raise ValueError(f"prune has {len(prune)} thresholds for an order-{order} model")
        cmd += ["--prune", *map(str, prune)]
    if vocab is not None:
        cmd += ["--limit_vocab_file", str(vocab)]

    arpa, binary = out_dir / "lm.arpa", out_dir / "lm.bin"
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".lm-") as work:
        tmp_arpa, tmp_bin = Path(work) / "lm.arpa", Path(work) / "lm.bin"
        log.info("lmplz: %s", " ".join(cmd))
        with open(text_path, "rb") as fin, open(tmp_arpa, "wb") as fout:
            _run_logged(cmd, out_dir / "lmplz.log", "lmplz", stdin=fin, stdout=fout)
        cmd = [str(build_binary), "-S", memory, "-T", str(tmp_dir), binary_type, str(tmp_arpa),
               str(tmp_bin)]
        if binary_type == "probing":  # -T/-S only concern the trie builder
            cmd = [str(build_binary), binary_type, str(tmp_arpa), str(tmp_bin)]
        log.info("build_binary: %s", " ".join(cmd))
        _run_logged(cmd, out_dir / "build_binary.log", "build_binary")
        if keep_arpa:
            os.replace(tmp_arpa, arpa)
        os.replace(tmp_bin, binary)
    return binary


def binarize_arpa(arpa_path: str | Path, out_dir: str | Path, binary_type: str = "probing") -> Path:
    """A ready-made ARPA model (the official LibriSpeech ``4-gram.arpa.gz``, say) -> ``lm.bin``.

    ``build_binary`` reads gzip-compressed ARPA directly. The output appears atomically.

    Raises:
        FileNotFoundError: no such ARPA file. KenLMToolMissing, LMBuildError: as :func:`build_ngram`.
    """
    arpa_path, out_dir = Path(arpa_path), Path(out_dir)
    if not arpa_path.is_file():
        raise FileNotFoundError(f"lm.arpa: ARPA file not found: {arpa_path}")
    build_binary = find_kenlm_tool("build_binary")
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".lm-") as work:
        tmp_bin = Path(work) / "lm.bin"
        cmd = [str(build_binary), binary_type, str(arpa_path), str(tmp_bin)]
        log.info("build_binary: %s", " ".join(cmd))
        _run_logged(cmd, out_dir / "build_binary.log", "build_binary")
        os.replace(tmp_bin, out_dir / "lm.bin")
    return out_dir / "lm.bin"
