"""Checkpoints that survive being killed at any moment.

A checkpoint is written under a temporary name and renamed, so the newest complete
checkpoint is always readable; the last ``keep_last`` numbered checkpoints and the best one
are kept. A failed save (a full disk, say) leaves the previous checkpoints untouched.
"""

from __future__ import annotations

import errno
import logging
import pickle
import re
import shutil
from pathlib import Path

import torch

from w2v.io import atomic_path

log = logging.getLogger(__name__)
_NUMBERED = re.compile(r"checkpoint_(\d+)\.pt$")


class CheckpointError(RuntimeError):
    pass


class UntrustedCheckpointError(CheckpointError):
    """A checkpoint that only full (code-running) unpickling could read."""


def save_atomic(obj: dict, path: str | Path) -> None:
    """``torch.save`` through a temporary file; a clear error when the disk is full."""
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            torch.save(obj, tmp)
    except OSError as e:
        hint = " (the disk is full)" if e.errno == errno.ENOSPC else ""
        raise CheckpointError(
            f"could not write {path}{hint}: {e}. Earlier checkpoints in {path.parent} are intact; "
            "free space and rerun the same command to resume."
        ) from e


class CheckpointDir:
    """Numbered checkpoints ``checkpoint_<update>.pt`` plus ``checkpoint_best.pt``."""

    def __init__(self, path: str | Path, keep_last: int = 2, clean: bool = True):
        self.path = Path(path)
        self.keep_last = max(1, keep_last)
        if clean:  # the writer's job (rank 0 when several processes train)
            self.path.mkdir(parents=True, exist_ok=True)
            for stale in self.path.glob(".checkpoint_*.tmp*"):  # left by a save that was killed
                stale.unlink(missing_ok=True)

    def numbered(self) -> list[tuple[int, Path]]:
        found = []
        for p in self.path.glob("checkpoint_*.pt"):
            m = _NUMBERED.search(p.name)
            if m:
                found.append((int(m.group(1)), p))
        return sorted(found)

    def latest(self) -> Path | None:
        found = self.numbered()
        return found[-1][1] if found else None

    @property
    def best(self) -> Path:
        return self.path / "checkpoint_best.pt"

    def save(self, state: dict, num_updates: int, is_best: bool = False) -> Path:
        target = self.path / f"checkpoint_{num_updates:08d}.pt"
        save_atomic(state, target)
        if is_best:
            with atomic_path(self.best) as tmp:
                shutil.copyfile(target, tmp)
        for _, old in self.numbered()[: -self.keep_last]:
            old.unlink(missing_ok=True)
        return target


def load(path: str | Path, map_location="cpu", trust: bool = False) -> dict:
    """Load a checkpoint written by :func:`save_atomic`, naming the file if it is unreadable.

    Our checkpoints hold only tensors, numbers, strings, lists and dicts, so they load with
    ``weights_only=True``: unpickling cannot run code from a file someone else made. ``trust``
    allows full unpickling, for foreign formats (fairseq) whose files hold Python objects.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=not trust)
    except pickle.UnpicklingError as e:
        if "Weights only load failed" not in str(e):
            raise CheckpointError(f"cannot read checkpoint {path}: {e}") from e
        why = next((ln.strip() for ln in str(e).splitlines() if "Unsupported" in ln), "")
        why = why.split(" was not")[0].removeprefix("WeightsUnpickler error: ")
        raise UntrustedCheckpointError(
            f"{path} holds Python objects beyond tensors and plain data ({why}), so reading it means "
            "unpickling, which can run arbitrary code. It was not written by this version of w2v. If you "
            "trust its origin, import it with `w2v import-checkpoint --trust-checkpoint`.") from None
    except Exception as e:  # torch raises several types for truncated/corrupt files
        raise CheckpointError(f"cannot read checkpoint {path}: {e}") from e
