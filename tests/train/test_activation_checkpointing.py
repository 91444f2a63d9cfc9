"""Activation checkpointing: the same update (dropout masks included) with less held for backward."""

from __future__ import annotations

import pytest
import torch

from w2v.models import Wav2Vec2ForPreTraining, load_model_config
from w2v.train.losses import pretraining_loss
from w2v.models.accel import set_activation_checkpointing


CONV = [[32, 10, 5]] + [[32, 3, 2]] * 4 + [[32, 2, 2]] * 2


def _one_update(checkpointing: bool, layer_norm_first: bool) -> tuple[dict, dict, int]:
    """One AdamW update of an 8-block model with dropout: weights before and after, and the
    bytes of activations autograd holds between forward and backward (weights not counted)."""
    cfg = load_model_config("tiny", dropout=0.2, attention_dropout=0.2, activation_dropout=0.2,
                            layer_norm_first=layer_norm_first, encoder_layers=8, encoder_embed_dim=128, encoder_ffn_embed_dim=512,
                            conv_feature_layers=CONV)
    torch.manual_seed(0)
    model = Wav2Vec2ForPreTraining(cfg).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    set_activation_checkpointing(model, checkpointing)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    wav = torch.randn(2, 16000, generator=torch.Generator().manual_seed(1))
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor):
        if t.untyped_storage().data_ptr() not in weights:
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    torch.manual_seed(2)  # dropout draws
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(wav, torch.tensor([16000, 12000]), generator=torch.Generator().manual_seed(3))
        loss, _ = pretraining_loss(out)
    loss.backward()
    opt.step()
    return before, {k: v.detach().clone() for k, v in model.state_dict().items()}, sum(storages.values())


@pytest.mark.parametrize("layer_norm_first", [False, True])
def test_checkpointing_gives_the_same_update_with_less_saved(layer_norm_first):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        start, plain, plain_bytes = _one_update(False, layer_norm_first)
        _, ckpt, ckpt_bytes = _one_update(True, layer_norm_first)
    finally:
        torch.set_num_threads(threads)
    assert plain.keys() == ckpt.keys()
    for k, v in plain.items():
        assert torch.equal(v, ckpt[k]), k  # bit-exact: the recomputed blocks draw the same dropout masks
    assert sum(not torch.equal(v, start[k]) for k, v in plain.items()) > len(start) // 2  # it did learn
    # the eight blocks' activations are no longer held between forward and backward
    print(f"saved for backward: {plain_bytes} bytes plain, {ckpt_bytes} with checkpointing")
    assert ckpt_bytes < 0.6 * plain_bytes, (ckpt_bytes, plain_bytes)


def test_checkpointing_is_off_in_eval_and_without_grad():
    torch.manual_seed(0)
    model = Wav2Vec2ForPreTraining(load_model_config("tiny", encoder_embed_dim=64, encoder_ffn_embed_dim=128))
    wav = torch.randn(1, 8000)
    model.eval()
    ref = model.wav2vec2(wav).hidden
    set_activation_checkpointing(model, True)
    with torch.no_grad():
        torch.testing.assert_close(model.wav2vec2(wav).hidden, ref)
