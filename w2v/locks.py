"""Snakemake's directory lock after a killed run: cleared when its owner is gone.

Snakemake locks the working directory while it runs and removes the lock when it exits, but a
snakemake killed with SIGKILL (a pre-empted job, an out-of-memory kill) cannot, and the next run
of the same command stops with "Directory cannot be locked" until the user runs ``--unlock``.
The Snakefile records the pid of the snakemake that holds the lock (``onstart``) and, when it
is parsed again, removes locks whose recorded owner is no longer running. A lock held by a
live snakemake, or one whose owner is unknown, is left alone.
"""

from __future__ import annotations

import os
from pathlib import Path

from w2v.io import write_text

OWNER = "w2v_lock_owner"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def record_lock_owner(state_dir: str | os.PathLike = ".snakemake") -> None:
    """Remember that this process holds the directory lock (call from ``onstart``)."""
    write_text(Path(state_dir) / OWNER, f"{os.getpid()}\n")


def clear_stale_locks(state_dir: str | os.PathLike = ".snakemake") -> list[Path]:
    """Remove the locks of a snakemake that was killed; returns the removed lock files."""
    state_dir = Path(state_dir)
    owner = state_dir / OWNER
    locks = sorted((state_dir / "locks").glob("*.lock"))
    if not locks or not owner.is_file():
        return []
    try:
        pid = int(owner.read_text().strip())
    except ValueError:
        return []
    if _alive(pid):
        return []
    for lock in locks:
        lock.unlink(missing_ok=True)
    owner.unlink(missing_ok=True)
    print(f"w2v: removed the directory lock of an interrupted snakemake (pid {pid} is no longer running)")
    return locks
