"""Training guards: skip updates whose loss or gradients are not finite, warn on a dying codebook.

A non-finite loss or gradient norm skips the optimizer step; the batch's cut ids go to
``<out>/skipped_batches.jsonl`` (rewritten atomically, one JSON line per skipped batch) so the
offending audio can be found; ``max_bad_updates`` skips in a row stop training with a clear
message. For pre-training two warnings (at most once per log interval) catch the classic
wav2vec 2.0 failures early: the codebook collapsing (few codes in use) and the diversity loss
outweighing the contrastive loss.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from w2v.io import write_text

log = logging.getLogger(__name__)


class NonFiniteError(RuntimeError):
    pass


class SkippedBatches:
    """The record of skipped batches, consistent with the checkpoint a run resumes from."""

    def __init__(self, path: Path, max_in_a_row: int, write: bool = True):
        self.path = Path(path)
        self.max_in_a_row = max_in_a_row
        self.write = write
        self.rows: list[dict] = []
        self.in_a_row = 0

    def resume(self, epoch: int, batch: int) -> None:
        """Keep the records of batches before data position ``(epoch, batch)``; the rest will be redone."""
        if self.path.exists():
            rows = [json.loads(x) for x in self.path.read_text(encoding="utf-8").splitlines() if x.strip()]
            self.rows = [r for r in rows if (r["epoch"], r["batch"]) < (epoch, batch)]
            self._flush()

    def reset(self) -> None:
        """A fresh run: forget an earlier run's record."""
        self.rows = []
        if self.write and self.path.exists():
            self.path.unlink()

    def ok(self) -> None:
        self.in_a_row = 0

    def skip(self, *, update: int, epoch: int, batch: int, cut_ids: list[str], loss: float, gnorm: float,
             lr: float) -> None:
        """Record a skipped batch; raise :class:`NonFiniteError` after too many in a row."""
        self.in_a_row += 1
        what = "loss" if loss != loss or abs(loss) == float("inf") else "gradient norm"
        self.rows.append({"update": update, "epoch": epoch, "batch": batch, "non_finite": what,
                          "loss": repr(loss), "gnorm": repr(gnorm), "cut_ids": cut_ids})
        self._flush()
        log.warning("update %d: non-finite %s, update skipped (%d in a row, %d in all; cut ids in %s): %s",
                    update, what, self.in_a_row, len(self.rows), self.path, ", ".join(cut_ids[:5]))
        if self.in_a_row >= self.max_in_a_row:
            raise NonFiniteError(
                f"{self.in_a_row} updates in a row had a non-finite loss or gradient (last at update {update}, "
                f"lr {lr:.2e}); stopping. The batches' cut ids are in {self.path}. Lower the learning rate, "
                "check those utterances, or raise max_bad_updates")

    def _flush(self) -> None:
        if self.write:
            write_text(self.path, "".join(json.dumps(r) + "\n" for r in self.rows))


def codebook_warnings(row: dict, num_codes: int, collapse_fraction: float, diversity_ratio: float,
                      chance: float | None = None) -> list[str]:
    """Warnings for one log interval's averaged pre-training statistics.

    Args:
        row: averaged stats with ``code_ppl``, ``contrastive`` and ``weighted_diversity``
            (diversity loss times its weight, as it enters the total loss).
        num_codes: G * V, the perplexity of a codebook that uses every entry equally.
        collapse_fraction: warn when ``code_ppl < collapse_fraction * num_codes`` (0 disables).
        diversity_ratio: warn when ``weighted_diversity > diversity_ratio * contrastive`` (0 disables).
        chance: ln(1 + K), the contrastive loss of a model that scores the positive and its K
            distractors alike; warn when the interval's loss sits within 0.01 of it (None: no check).
    """
    out = []
    ppl = row.get("code_ppl")
    if collapse_fraction > 0 and ppl is not None and ppl == ppl and ppl < collapse_fraction * num_codes:
        out.append(f"codebook collapse: code perplexity {ppl:.1f} is below {collapse_fraction:g} x "
                   f"{num_codes} codes (G x V); few codes are in use. Check the Gumbel temperature, "
                   "the diversity weight, or lower the learning rate")
    div, con = row.get("weighted_diversity"), row.get("contrastive")
    if diversity_ratio > 0 and div is not None and con is not None and div > diversity_ratio * con:
        out.append(f"diversity loss dominates: weighted diversity {div:.3g} > {diversity_ratio:g} x "
                   f"contrastive {con:.3g}; the model is optimising codebook usage, not prediction. "
                   "Lower diversity_weight")
    if chance is not None and con is not None and abs(con - chance) < 0.01:
        out.append(f"contrastive loss {con:.4f} is at chance (ln(1 + K) = {chance:.4f}): the context network "
                   "predicts nothing about the masked frames. If it stays there, keep the diversity loss off at "
                   "first (diversity_start: 0.3, diversity_warmup: 0.2; egs/demo/RESULTS.md)")
    return out
