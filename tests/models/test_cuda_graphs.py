"""The Transformer stack replayed as CUDA graphs (`accel.use_stack_cuda_graphs`): how it is
compiled (CPU), and its steps equal the eager model's (GPU only)."""

import pytest
import torch

from w2v.models import Wav2Vec2ForPreTraining
from w2v.models.accel import STACK_CUDA_GRAPH_OPTIONS, compile_model, step_begins, use_stack_cuda_graphs

from test_wav2vec2 import small_cfg

NO_DROPOUT = dict(dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, dropout_input=0.0,
                  dropout_features=0.0)


def test_the_stack_compiles_with_cuda_graphs_and_the_python_launcher(monkeypatch):
    """Inductor records no CUDA graph for a graph launched from C++, so the stack's options must
    switch the C++ wrapper off for it; switching back compiles the plain stack again."""
    calls = []
    real = torch.compile

    def spy(fn, **kw):
        calls.append((getattr(fn, "__name__", ""), kw))
        return real(fn, **kw)

    monkeypatch.setattr(torch, "compile", spy)
    model = compile_model(Wav2Vec2ForPreTraining(small_cfg()), cuda_graphs=True)  # lazily: nothing compiled yet
    encoder = model.wav2vec2.encoder
    assert encoder.cuda_graphs
    name, kw = calls[-1]
    assert name == "run_stack" and kw["options"] == STACK_CUDA_GRAPH_OPTIONS
    assert kw["options"]["triton.cudagraphs"] and not kw["options"]["cpp_wrapper"]
    n = len(calls)
    use_stack_cuda_graphs(model)  # already on: nothing recompiled
    assert len(calls) == n
    use_stack_cuda_graphs(model, False)
    assert not encoder.cuda_graphs and calls[-1] == ("run_stack", {"options": None})
    torch._inductor.config.cpp_wrapper = False  # compile_model set it process-wide (CPU model: off)


def test_compiling_again_leaves_a_plain_stack_that_can_replay_again():
    model = compile_model(Wav2Vec2ForPreTraining(small_cfg()), cuda_graphs=True)  # lazily
    compile_model(model)
    assert not model.wav2vec2.encoder.cuda_graphs  # the stack compile_model just built is plain
    plain = model.wav2vec2.encoder.compiled_stack
    use_stack_cuda_graphs(model)
    assert model.wav2vec2.encoder.cuda_graphs and model.wav2vec2.encoder.compiled_stack is not plain
    torch._inductor.config.cpp_wrapper = False


def test_cuda_graphs_need_the_compiled_one_graph_stack():
    with pytest.raises(ValueError, match="compile the model first"):
        use_stack_cuda_graphs(Wav2Vec2ForPreTraining(small_cfg()))
    with pytest.raises(ValueError, match="one_graph"):
        compile_model(Wav2Vec2ForPreTraining(small_cfg()), one_graph=False, cuda_graphs=True)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_graph_steps_equal_the_compiled_steps(monkeypatch):
    """Training steps through the replayed stack, LayerDrop's skips included (a CUDA graph per set
    of blocks, recorded on first use, then replayed), give the losses and gradients of the same
    model compiled without CUDA graphs; once each set has come, none is recorded again (torch
    2.11's `cudagraph_skip_dynamic_graphs` cut the stack into partitions re-recorded every step)."""
    from torch._dynamo.utils import counters
    from torch._inductor.cudagraph_trees import get_manager

    from w2v.train.losses import pretraining_loss

    cfg = small_cfg(**NO_DROPOUT, layerdrop=0.0, encoder_layers=3)
    torch.manual_seed(0)
    plain = Wav2Vec2ForPreTraining(cfg).cuda().train()
    graphed = Wav2Vec2ForPreTraining(cfg).cuda().train()
    graphed.load_state_dict(plain.state_dict())
    compile_model(plain, cpp_wrapper=False)
    compile_model(graphed, cuda_graphs=True, cpp_wrapper=False)
    x = torch.randn(2, 8000, device="cuda")
    counters.clear()
    patterns = [[True] * 3, [True, False, True], [True] * 3, [True, False, True], [False, True, True]]
    recordings = []  # new recordings (the tree manager's count of them) after each pass
    for keeps in patterns + [None] + patterns:
        if keeps is None:  # every set has come once: the second pass replays only
            recordings.append(get_manager(torch.cuda.current_device(), create_if_none_exists=False).debug_fail_counter)
            continue
        losses, grads = [], []
        for model in (plain, graphed):
            step_begins()
            monkeypatch.setattr(model.wav2vec2.encoder, "layerdrop_keeps", lambda k=keeps: list(k))
            loss = pretraining_loss(model(x, generator=torch.Generator().manual_seed(7)), sync=False)[0]
            model.zero_grad(set_to_none=True)
            loss.backward()
            losses.append(loss.item())
            grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        assert losses[1] == pytest.approx(losses[0], rel=1e-4)
        assert grads[0].keys() == grads[1].keys()
        dropped = {f"wav2vec2.encoder.layers.{i}." for i, k in enumerate(keeps) if not k}
        assert not any(n.startswith(tuple(dropped)) for n in grads[1])  # skipped blocks: no gradient
        for n in grads[0]:
            torch.testing.assert_close(grads[1][n], grads[0][n], rtol=1e-3, atol=1e-5, msg=n)
    assert graphed.wav2vec2.encoder.cuda_graphs
    assert counters["inductor"]["cudagraph_skips"] == 0  # e.g. "skipping cudagraphs due to cpp wrapper enabled"
    manager = get_manager(torch.cuda.current_device(), create_if_none_exists=False)
    assert recordings[0] > 0 and manager.debug_fail_counter == recordings[0]  # recorded, then replayed only
    torch._dynamo.reset()
