"""Shared fixtures: tiny synthetic corpora and models, built on the fly (no downloads)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():  # Triton's kernels run through its CPU interpreter (where Triton is installed)
    os.environ.setdefault("TRITON_INTERPRET", "1")

from synth import write_tiny_cuts


@pytest.fixture
def tiny_cuts(tmp_path) -> Path:
    return write_tiny_cuts(tmp_path / "audio")


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    torch.set_num_threads(2)
