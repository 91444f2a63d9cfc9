import numpy as np
import torch

from w2v.data.batching import BatchPlan, collate_audio, collate_targets


def test_plan_covers_every_item_once_within_budget():
    rng = np.random.default_rng(0)
    durs = list(rng.uniform(0.5, 10, size=200))
    plan = BatchPlan(durs, max_duration=30.0, seed=3)
    batches = plan.epoch(0)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(200))
    for b in batches:
        assert len(b) == 1 or max(durs[i] for i in b) * len(b) <= 30.0


def test_plan_is_a_function_of_seed_and_epoch():
    durs = [1.0 + (i % 7) for i in range(50)]
    a, b = BatchPlan(durs, 12.0, seed=1), BatchPlan(durs, 12.0, seed=1)
    assert a.epoch(2) == b.epoch(2)
    assert a.epoch(0) != a.epoch(1)


def test_collate_pads_with_zeros_and_normalises_valid_part():
    w = [np.ones(5, dtype=np.float32) * 3, np.arange(3, dtype=np.float32)]
    x, lens = collate_audio(w, normalize=True)
    assert x.shape == (2, 5) and lens.tolist() == [5, 3]
    assert torch.all(x[1, 3:] == 0)
    assert abs(float(x[1, :3].mean())) < 1e-6 and abs(float(x[1, :3].std(unbiased=False)) - 1) < 1e-3
    t, tl = collate_targets([[1, 2, 3], [4]])
    assert t.tolist() == [[1, 2, 3], [4, 0, 0]] and tl.tolist() == [3, 1]


def test_normalisation_matches_each_utterance_alone_and_leaves_padding_zero():
    rng = np.random.default_rng(0)
    w = [rng.normal(2.0, 3.0, n).astype(np.float32) for n in (400, 250, 1, 400)]
    x, lens = collate_audio(w, normalize=True)
    for i, wi in enumerate(w):
        t = torch.from_numpy(wi)
        alone = t if len(t) < 2 else (t - t.mean()) / torch.sqrt(t.var(unbiased=False) + 1e-7)
        assert torch.allclose(x[i, : len(wi)], alone, atol=1e-5)
        assert torch.all(x[i, len(wi):] == 0)
    same, _ = collate_audio([w[0], w[3]], normalize=True)  # one length: the stacked path
    assert torch.allclose(same, x[[0, 3]], atol=1e-6)
    raw, _ = collate_audio(w, normalize=False)
    assert torch.equal(raw[1, :250], torch.from_numpy(w[1])) and lens.tolist() == [400, 250, 1, 400]


def test_to_device_copies_to_a_gpu_through_pinned_memory_and_leaves_the_cpu_alone(monkeypatch):
    from w2v.data.batching import to_device

    t = torch.arange(6.0).reshape(2, 3)
    assert to_device(t, "cpu") is t
    if not torch.cuda.is_available():  # what it asks of a GPU: a pinned source, a copy queued on the stream
        calls = []

        class Pinned(torch.Tensor):
            def to(self, *args, **kw):
                calls.append((args, kw))
                return torch.Tensor.to(self, "cpu")

        monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self: self.as_subclass(Pinned))
        out = to_device(t, "cuda")
        assert calls == [((torch.device("cuda"),), {"non_blocking": True})] and torch.equal(out, t)
        return
    out = to_device(t, "cuda")
    torch.cuda.synchronize()
    assert out.is_cuda and torch.equal(out.cpu(), t)
