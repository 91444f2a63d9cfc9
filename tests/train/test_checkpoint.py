import errno

import pytest
import torch

from w2v.train import checkpoint as ck


def test_keep_last_and_best(tmp_path):
    d = ck.CheckpointDir(tmp_path, keep_last=2)
    for n in (10, 20, 30):
        d.save({"n": n}, n, is_best=(n == 20))
    assert [n for n, _ in d.numbered()] == [20, 30]
    assert ck.load(d.latest())["n"] == 30
    assert ck.load(d.best)["n"] == 20


def test_disk_full_keeps_previous_checkpoint(tmp_path, monkeypatch):
    d = ck.CheckpointDir(tmp_path, keep_last=1)
    d.save({"n": 1}, 1)

    def full(obj, f, *a, **k):
        with open(f, "wb") as fh:
            fh.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(ck.CheckpointError, match="disk is full"):
        d.save({"n": 2}, 2)
    monkeypatch.undo()
    assert [n for n, _ in d.numbered()] == [1]
    assert ck.load(d.latest())["n"] == 1
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


def test_truncated_checkpoint_names_the_file(tmp_path):
    p = tmp_path / "checkpoint_00000001.pt"
    p.write_bytes(b"\x80\x02garbage")
    with pytest.raises(ck.CheckpointError, match="checkpoint_00000001.pt"):
        ck.load(p)


def test_leftover_temporary_file_of_a_killed_save_is_ignored_and_removed(tmp_path):
    d = ck.CheckpointDir(tmp_path)
    d.save({"n": 1}, 1)
    stale = tmp_path / ".checkpoint_00000002.tmpab12.pt"
    stale.write_bytes(b"half a checkpoint")
    d2 = ck.CheckpointDir(tmp_path)
    assert not stale.exists() and ck.load(d2.latest())["n"] == 1


def test_dev_rank_prefers_a_wordy_model_to_an_empty_one():
    from w2v.train.loop import dev_rank

    blank = {"wer": 1.0, "cer": 1.0}  # all-blank CTC output
    wordy = {"wer": 1.049, "cer": 0.597}  # most characters right, words inserted
    assert dev_rank(wordy) < dev_rank(blank)
    assert dev_rank({"wer": 0.93, "cer": 0.60}) < dev_rank(wordy)  # below 100%, WER decides
    assert dev_rank({"wer": 0.5, "cer": 0.3}) < dev_rank({"wer": 0.5, "cer": 0.4})
