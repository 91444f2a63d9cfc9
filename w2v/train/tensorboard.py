"""TensorBoard event files beside ``train_log.jsonl``, with the same numbers.

``tensorboard --logdir exp/<recipe>`` then shows every training stage side by side
(``pretrain/tensorboard``, ``finetune/<init>_<subset>/tensorboard``). Only the main process
writes (rank 0 of a distributed run). A resumed run hides the events logged after the
checkpoint it resumed from, as the JSON log drops those lines.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Mapping

__all__ = ["TensorBoardLog", "is_main_process"]

_NOT_SCALARS = ("update", "epoch")


def is_main_process() -> bool:
    """Rank 0 of an initialised process group, else of the launcher's ``RANK`` (torchrun)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


class TensorBoardLog:
    """Scalars ``train/<key>`` per logged row, ``dev/<metric>`` for ``dev_*`` keys, at step = update.

    Args:
        log_dir: the event file directory (emptied when ``resume_update`` is 0: a fresh run).
        resume_update: the update training resumes from; later events of a killed run are purged.
    """

    def __init__(self, log_dir: str | Path, resume_update: int = 0):
        self.writer = None
        if not is_main_process():
            return
        from torch.utils.tensorboard import SummaryWriter

        if resume_update == 0:
            shutil.rmtree(log_dir, ignore_errors=True)
        self.writer = SummaryWriter(str(log_dir), purge_step=resume_update + 1 if resume_update else None)

    def log(self, row: Mapping[str, float]) -> None:
        if self.writer is None:
            return
        for key, value in row.items():
            if key not in _NOT_SCALARS and isinstance(value, (int, float)):
                tag = f"dev/{key[4:]}" if key.startswith("dev_") else f"train/{key}"
                self.writer.add_scalar(tag, value, row["update"])
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
