"""Snakemake's lock after a killed run: removed only when its recorded owner is gone."""

from __future__ import annotations

import subprocess
import sys

from w2v.locks import OWNER, clear_stale_locks, record_lock_owner


def _locked(state):
    (state / "locks").mkdir(parents=True)
    (state / "locks/0.input.lock").write_text("a\n")
    (state / "locks/0.output.lock").write_text("b\n")


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_lock_of_a_dead_owner_is_removed(tmp_path, capsys):
    state = tmp_path / ".snakemake"
    _locked(state)
    (state / OWNER).write_text(f"{_dead_pid()}\n")
    assert len(clear_stale_locks(state)) == 2
    assert not list((state / "locks").iterdir()) and not (state / OWNER).exists()
    assert "removed the directory lock of an interrupted snakemake" in capsys.readouterr().out


def test_lock_of_a_live_or_unknown_owner_is_kept(tmp_path):
    state = tmp_path / ".snakemake"
    _locked(state)
    assert clear_stale_locks(state) == []  # no owner recorded: not ours to judge
    record_lock_owner(state)  # this process: alive
    assert clear_stale_locks(state) == [] and len(list((state / "locks").iterdir())) == 2
