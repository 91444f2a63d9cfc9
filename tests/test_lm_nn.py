"""The lm_nn stage: a small Transformer LM trains in seconds, resumes, and scores sentences."""

import pytest
import torch

from w2v.lm_nn import LMConfig, load_lm, train_lm

SENTS = ["THE CAT SAT ON THE MAT", "A DOG SAT ON A LOG", "THE DOG SAT ON THE CAT"] * 20


def test_train_score_resume(tmp_path):
    (tmp_path / "text.txt").write_text("\n".join(SENTS) + "\n")
    torch.set_num_threads(1)
    cfg = LMConfig(dim=32, layers=1, heads=2, batch_size=16, lr=1e-2, max_updates=30, max_seconds=300, dropout=0.0)
    path = train_lm(tmp_path / "text.txt", tmp_path / "lm", cfg)
    ck = torch.load(path, weights_only=False)
    assert ck["done"] and ck["step"] == 30
    lm = load_lm(path)
    good, shuffled, unknown = lm.score([s.split() for s in ("THE CAT SAT ON THE MAT", "MAT THE ON SAT CAT THE",
                                                             "ZEBRA QUUX")])
    assert good > shuffled + 5  # nats
    assert unknown < 0 and lm.score([]) == []
    mtime = path.stat().st_mtime_ns
    train_lm(tmp_path / "text.txt", tmp_path / "lm", cfg)  # finished: not retrained
    assert path.stat().st_mtime_ns == mtime
    assert not list((tmp_path / "lm").glob("*.tmp*"))


def test_missing_and_empty_text(tmp_path):
    with pytest.raises(FileNotFoundError, match="LM text not found"):
        train_lm(tmp_path / "none.txt", tmp_path / "lm")
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(ValueError, match="has no words"):
        train_lm(tmp_path / "empty.txt", tmp_path / "lm")
    with pytest.raises(FileNotFoundError, match="run the lm_nn stage"):
        load_lm(tmp_path / "lm" / "model.pt")
