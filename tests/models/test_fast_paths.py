"""The vectorised (device) mask, N x N contrastive logits, activation checkpointing and the
matrix-product conv encoder on the CPU."""

import numpy as np
import pytest
import torch

from w2v.models import Wav2Vec2ForPreTraining, compute_mask_indices
from w2v.models.accel import set_activation_checkpointing, use_matmul_convolutions
from w2v.models.components import ConvFeatureEncoder
from w2v.models.config import BASE_CONV_LAYERS
from w2v.models.masking import device_generator, negative_positions, static_negative_picks
from w2v.models.wav2vec2 import PreTrainingOutput
from w2v.train.losses import pretraining_loss

from test_wav2vec2 import batch, small_cfg


def vmask(shape, pad, seed, prob=0.65, length=10, min_masks=2):
    g = torch.Generator().manual_seed(seed)
    return compute_mask_indices(shape, pad, prob, length, min_masks, g, vectorized=True)


def test_vectorized_mask_rate_matches_theory_and_loop_version():
    theory = 1 - (1 - 0.65 / 10) ** 10
    fast = vmask((64, 2000), None, 0).float().mean().item()
    loop = compute_mask_indices((64, 2000), None, 0.65, 10, 2, torch.Generator().manual_seed(0)).float().mean().item()
    assert abs(fast - theory) < 0.01 and abs(fast - loop) < 0.01


def test_vectorized_mask_spans_padding_and_short_utterances():
    lengths = torch.tensor([100, 37, 8, 3, 0])
    pad = torch.arange(100)[None] >= lengths[:, None]
    mask = vmask((5, 100), pad, 1)
    assert not (mask & pad).any()
    assert mask[0].any() and mask[1].any()
    assert mask[2].sum() == 8 and mask[3].sum() == 3  # span shortened to the utterance
    assert mask[4].sum() == 0
    # every masked run is made of whole spans of 10 frames (unless cut by the utterance's end)
    runs = torch.diff(torch.cat([torch.zeros(1), mask[0].float(), torch.zeros(1)]))
    starts, ends = (runs == 1).nonzero().squeeze(1), (runs == -1).nonzero().squeeze(1)
    assert ((ends - starts) >= 10).all()
    # per-utterance span count: min_masks holds for a short utterance
    assert vmask((50, 40), None, 2, prob=0.01, length=2, min_masks=2).sum(1).ge(2).all()


def test_vectorized_mask_maps_onto_non_prefix_valid_frames():
    pad = torch.zeros(2, 30, dtype=torch.bool)
    pad[0, ::2] = True  # valid frames interleaved with padding
    mask = vmask((2, 30), pad, 3, length=3)
    assert not (mask & pad).any() and mask[0].any()


@pytest.mark.parametrize("make", [lambda s: torch.Generator().manual_seed(s), np.random.default_rng])
def test_vectorized_mask_reproducible(make):
    a = compute_mask_indices((4, 300), None, 0.65, 10, 2, make(7), vectorized=True)
    b = compute_mask_indices((4, 300), None, 0.65, 10, 2, make(7), vectorized=True)
    c = compute_mask_indices((4, 300), None, 0.65, 10, 2, make(8), vectorized=True)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_device_generator_keeps_cpu_generators():
    g = torch.Generator().manual_seed(1)
    assert device_generator(g, "cpu") is g
    assert device_generator(None, "cpu") is None


@pytest.mark.parametrize("chunk", [1 << 25, 7])
def test_sampled_logits_equal_gathered_cosine_logits(chunk):
    torch.manual_seed(0)
    model = Wav2Vec2ForPreTraining(small_cfg())
    n, d, k = 40, 16, 6
    pred, pos = torch.randn(n, d), torch.randn(n, d)
    pos[5] = pos[9]  # a duplicate target: must be -inf wherever it is drawn as a negative of the other
    mask = torch.zeros(2, 30, dtype=torch.bool)
    mask[0, :20] = mask[1, 5:25] = True
    _, picks = negative_positions(mask, k, torch.Generator().manual_seed(1), cross_sample_negatives=2)
    picks[0, 5] = 9
    extra = torch.randn(3, n, d)
    extra[1, 2] = pos[2]
    fast = model.sampled_contrastive_logits(pred, pos, picks, extra, chunk_elements=chunk)
    slow = model.contrastive_logits(pred, pos, torch.cat([pos[picks], extra]))
    assert fast.shape == (n, 1 + k + 2 + 3)
    assert torch.equal(torch.isneginf(fast), torch.isneginf(slow))
    assert torch.isneginf(fast[5, 1]) and torch.isneginf(fast[2, 1 + k + 2 + 1])
    finite = torch.isfinite(slow)
    torch.testing.assert_close(fast[finite], slow[finite], atol=1e-5, rtol=1e-5)


def test_unpadded_cpu_lengths_equal_no_lengths():
    torch.manual_seed(0)
    model = Wav2Vec2ForPreTraining(small_cfg()).eval()
    wav = batch()[0]
    full = torch.full((3,), wav.shape[1])
    a = model.wav2vec2(wav, full)
    b = model.wav2vec2(wav, None)
    torch.testing.assert_close(a.hidden, b.hidden)


def test_activation_checkpointing_gives_the_same_gradients():
    cfg = small_cfg(dropout=0.0, attention_dropout=0.0, dropout_input=0.0, dropout_features=0.0)
    wav, lengths = batch()
    grads = []
    for ckpt in (False, True):
        torch.manual_seed(0)
        model = set_activation_checkpointing(Wav2Vec2ForPreTraining(cfg).train(), ckpt)
        out = model(wav, lengths, generator=torch.Generator().manual_seed(3))
        out.logits[torch.isfinite(out.logits)].sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    torch.testing.assert_close(grads[0], grads[1])


@pytest.mark.parametrize("dim,kernel,groups,num_pad_remove", [(48, 16, 4, 1), (30, 9, 3, 0)])
def test_positional_conv_with_padded_groups_equals_grouped_conv(dim, kernel, groups, num_pad_remove):
    from w2v.models.components import ConvPositionalEmbedding

    torch.manual_seed(0)
    pos = ConvPositionalEmbedding(dim, kernel, groups)
    assert pos.num_pad_remove == num_pad_remove
    x = torch.randn(3, 25, dim, requires_grad=True)
    ref = pos(x)  # CPU: the grouped convolution as configured
    fast = pos.activation(pos._padded_groups(x, 64))
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-5)
    v = pos.conv.parametrizations.weight.original1
    for a, b in zip(torch.autograd.grad(fast.sum(), [x, v]), torch.autograd.grad(ref.sum(), [x, v])):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mode,layers", [
    ("default", BASE_CONV_LAYERS),
    ("layer_norm", BASE_CONV_LAYERS),
    ("wav2vec1", ((64, 10, 5), (64, 8, 4), (64, 4, 2), (64, 4, 2), (64, 4, 2))),
])
def test_matmul_convolutions_equal_conv1d_with_gradients(mode, layers):
    torch.manual_seed(0)  # float64: the two paths agree to rounding, ReLU kinks included
    fe = ConvFeatureEncoder(tuple((24, k, s) for _, k, s in layers), mode, bias=mode == "layer_norm").double()
    with torch.no_grad():
        for p in fe.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(3, 16037, dtype=torch.float64, requires_grad=True)  # not a multiple of any stride
    outs, grads = [], []
    for matmul in (False, True):
        use_matmul_convolutions(fe, matmul)
        y, _ = fe(x)
        outs.append(y)
        grads.append(torch.autograd.grad(y.square().sum(), [x, *fe.parameters()]))
    assert outs[0].shape == outs[1].shape
    assert torch.allclose(outs[0], outs[1], rtol=0, atol=1e-10)
    for a, b in zip(*grads):
        assert (a - b).norm() <= 1e-10 * a.norm()


@pytest.mark.parametrize("mode", ["default", "layer_norm", "wav2vec1"])
def test_conv_layers_hand_on_the_autocast_dtype(mode):
    """Under bf16 autocast every conv layer's output is bf16 on both paths, although autocast
    runs the norms in fp32: the next layer reads bf16 anyway, so no fp32 activation (twice the
    bytes) is written and copied for each tap slice. Both paths still agree."""
    torch.manual_seed(0)
    fe = ConvFeatureEncoder(((16, 10, 5), (16, 3, 2), (16, 2, 2)), mode, bias=mode == "layer_norm")
    x = torch.randn(2, 4003)
    outs = []
    for matmul in (False, True):
        use_matmul_convolutions(fe, matmul)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y, _ = fe(x)
            layer = fe.conv_layers[0](x.unsqueeze(1))
        assert y.dtype == layer.dtype == torch.bfloat16
        outs.append(y.float())
    torch.testing.assert_close(outs[0], outs[1], rtol=0.05, atol=0.05)


def test_matmul_convolutions_fall_back_for_other_kernel_shapes():
    fe = ConvFeatureEncoder(((8, 5, 3), (8, 3, 2)), "default")  # 5 at stride 3: a stride plus two taps
    use_matmul_convolutions(fe)
    x = torch.randn(2, 400)
    y, _ = fe(x)
    fe.matmul = False
    assert torch.equal(y, fe(x)[0])


@pytest.mark.parametrize("layerdrop,pre_ln", [(0.0, False), (0.4, False), (0.4, True)])
def test_blocks_as_one_stack_equal_the_block_loop_layerdrop_included(layerdrop, pre_ln):
    """The path `compile_model` compiles (`run_stack`, uncompiled here), in each of its LayerDrop
    modes: dropped blocks skipped (the stack over the kept blocks, or each kept block's own call
    when more than `max_stack_skips` are dropped), skipped with their parameters tied in (DDP:
    every parameter gets a gradient, the dropped blocks' zeros; also block by block), or computed
    and discarded; after
    `release_dropped_grads` every parameter has the gradient (or None) that skipping gives."""
    from w2v.models.accel import release_dropped_grads

    cfg = small_cfg(dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, dropout_input=0.0,
                    dropout_features=0.0, layerdrop=layerdrop, layer_norm_first=pre_ln, encoder_layers=6)
    torch.manual_seed(0)
    model = Wav2Vec2ForPreTraining(cfg).train()
    encoder = model.wav2vec2.encoder
    x = torch.randn(2, 30, cfg.encoder_embed_dim)
    calls = []
    results = []
    modes = ("loop", "discard", "skip", "skip_per_block", "tie", "tie_per_block", "loop_tie")
    for mode in modes:
        encoder.compiled_stack = None if mode.startswith("loop") else (
            lambda *args: calls.append(len(args[3]) if len(args) > 3 else "all") or encoder.run_stack(*args))
        encoder.dropped_blocks = {"loop": "skip", "loop_tie": "tie"}.get(mode, mode.removesuffix("_per_block"))
        encoder.max_stack_skips = 0 if mode.endswith("_per_block") else 2
        encoder.layerdrop_generator = torch.Generator().manual_seed(11)
        model.zero_grad(set_to_none=True)
        y, _ = encoder(x)
        y.square().sum().backward()
        dropped = list(encoder.dropped_layers)
        if "tie" in mode:  # every parameter has a gradient before the release: zeros where dropped
            assert all(p.grad is not None for p in encoder.parameters())
            assert all(not p.grad.any() for i in dropped for p in encoder.layers[i].parameters())
        release_dropped_grads(model)
        results.append((y.detach(), [p.grad for p in encoder.parameters()], dropped))
    got = dict(zip(modes, results))
    assert bool(got["discard"][2]) == (layerdrop > 0)  # seed 11 drops some of the 6 blocks (1 or 2)
    assert got["skip"][2] == got["skip_per_block"][2] == []  # skipped: nothing computed to discard
    assert got["tie"][2] == got["tie_per_block"][2] == got["loop_tie"][2] == got["discard"][2]  # released later
    kept = 6 - len(got["discard"][2])
    # discard: the whole stack; skip, tie: the stack over the kept blocks; *_per_block: no stack call when any is dropped
    assert calls == (["all", kept, kept] if layerdrop else ["all"] * 5)
    y0, g0, _ = results[0]
    for y1, g1, _ in results[1:]:
        torch.testing.assert_close(y1, y0)
        for a, b in zip(g0, g1):
            assert (a is None) == (b is None)
            if a is not None:
                torch.testing.assert_close(b, a)


def test_gradients_accumulated_over_batches_release_only_blocks_dropped_in_every_batch():
    """Gradient accumulation (training's update_freq): a block dropped in one batch of an update
    and run in another keeps the gradient its run gave (the tie's zeros add nothing); one dropped
    in every batch ends with None, as skipping it each time leaves; the same as "skip" gives."""
    from w2v.models.accel import release_dropped_grads

    cfg = small_cfg(dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, dropout_input=0.0,
                    dropout_features=0.0, layerdrop=0.4, encoder_layers=6)
    torch.manual_seed(0)
    model = Wav2Vec2ForPreTraining(cfg).train()
    encoder = model.wav2vec2.encoder
    xs = [torch.randn(2, 30, cfg.encoder_embed_dim) for _ in range(3)]
    runs = {}
    for mode in ("skip", "tie"):
        encoder.dropped_blocks = mode
        model.zero_grad(set_to_none=True)
        drops = []
        for k, (x, seed) in enumerate(zip(xs, (11, 13, 16))):
            encoder.layerdrop_generator = torch.Generator().manual_seed(seed)
            y, _ = encoder(x)
            y.square().sum().backward()
            drops.append(set(i for i, kept in enumerate(encoder.layerdrop_keeps(
                torch.Generator().manual_seed(seed))) if not kept))
            release_dropped_grads(model, update_ends=k == 2)
        runs[mode] = [None if p.grad is None else p.grad.clone() for p in encoder.layers.parameters()]
    always = drops[0] & drops[1] & drops[2]
    assert always == {0, 3} and drops[0] | drops[1] | drops[2] == {0, 3, 4, 5}  # 4 and 5 run in some batches
    block_of = [i for i, layer in enumerate(encoder.layers) for _ in layer.parameters()]
    for i, a, b in zip(block_of, runs["skip"], runs["tie"]):
        assert (a is None) == (b is None) == (i in always), i
        if a is not None:
            torch.testing.assert_close(b, a)


def test_tying_dropped_blocks_in_leaves_frozen_blocks_alone():
    """A dropped block whose parameters do not train (a frozen Transformer) has nothing to tie in."""
    cfg = small_cfg(dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, layerdrop=0.4, encoder_layers=6)
    encoder = Wav2Vec2ForPreTraining(cfg).train().wav2vec2.encoder
    encoder.requires_grad_(False)
    encoder.dropped_blocks = "tie"
    encoder.layerdrop_generator = torch.Generator().manual_seed(11)
    x = torch.randn(2, 30, cfg.encoder_embed_dim, requires_grad=True)
    y, _ = encoder(x)
    assert encoder.dropped_layers  # seed 11 drops some
    y.sum().backward()
    assert x.grad is not None and all(p.grad is None for p in encoder.parameters())


def test_compiled_stack_skips_dropped_blocks_with_a_graph_per_count(monkeypatch):
    """Compiled (CPU, eager backend): the stack over the kept blocks compiles once per number of
    blocks, whichever blocks those are (their parameters are the graph's inputs, not its
    constants), and equals the block loop."""
    from torch._dynamo.utils import counters

    cfg = small_cfg(dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, dropout_input=0.0,
                    dropout_features=0.0, layerdrop=0.0, encoder_layers=4)
    torch.manual_seed(0)
    encoder = Wav2Vec2ForPreTraining(cfg).train().wav2vec2.encoder
    x = torch.randn(2, 12, cfg.encoder_embed_dim)
    torch._dynamo.reset()
    counters.clear()
    encoder.compiled_stack = torch.compile(encoder.run_stack, backend="eager")
    for keeps in ([True] * 4, [True, False, True, True], [False, True, True, True], [True, True, True, False]):
        monkeypatch.setattr(encoder, "_layerdrop_skips", iter([not k for k in keeps]).__next__)
        y, _ = encoder(x)
        expected = x + encoder.pos_conv_embed(x)
        expected = encoder.layer_norm(expected)
        for layer, k in zip(encoder.layers, keeps):
            expected = layer(expected) if k else expected
        torch.testing.assert_close(y, expected)
    assert counters["stats"]["unique_graphs"] == 2  # all blocks, then 3 of them (three different sets)
    torch._dynamo.reset()


@pytest.mark.parametrize("dim,kernel,groups", [(48, 16, 4), (30, 9, 3), (24, 8, 1)])
def test_positional_conv_as_matrix_products_equals_grouped_conv(dim, kernel, groups):
    """Tap windows times the kernel, with the hand-written backward (input gradient: the flipped
    kernel over the output gradient; weight gradient: windows times output gradient)."""
    from w2v.models.components import ConvPositionalEmbedding, _GroupedConvAsMatmul

    torch.manual_seed(0)
    pos = ConvPositionalEmbedding(dim, kernel, groups).double()
    with torch.no_grad():
        for p in pos.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(3, 25, dim, dtype=torch.float64, requires_grad=True)
    outs, grads = [], []
    for matmul in (False, True):
        use_matmul_convolutions(pos, matmul)
        y = pos(x)
        outs.append(y)
        grads.append(torch.autograd.grad(y.square().sum(), [x, *pos.parameters()]))
    assert outs[0].shape == outs[1].shape == x.shape
    assert torch.allclose(outs[0], outs[1], rtol=0, atol=1e-12)
    for a, b in zip(*grads):
        assert (a - b).norm() <= 1e-12 * a.norm()
    w = torch.randn(dim, dim // groups, kernel, dtype=torch.float64, requires_grad=True)
    xs = torch.randn(2, 7, dim, dtype=torch.float64, requires_grad=True)  # shorter than the kernel
    assert torch.autograd.gradcheck(lambda a, b: _GroupedConvAsMatmul.apply(a, b, kernel // 2), (xs, w))


def test_compile_model_keeps_per_block_calls_for_fsdp():
    """FSDP gathers a block's weights in hooks of the block's own call: no single graph then."""
    from w2v.models.accel import compile_model

    for one_graph in (True, False):
        model = compile_model(Wav2Vec2ForPreTraining(small_cfg()), one_graph=one_graph)  # compiles lazily
        assert (model.wav2vec2.encoder.compiled_stack is not None) == one_graph


def test_static_negative_picks_draw_other_selected_frames_of_the_same_utterance():
    g = torch.Generator().manual_seed(0)
    selected = torch.zeros(3, 40, dtype=torch.bool)
    selected[0, 3:30:3] = True  # 9 frames
    selected[1, 10] = True  # alone: only itself to offer
    k = 400
    picks = static_negative_picks(selected, torch.rand(k, 3, 40, generator=g))
    assert picks.shape == (k, 3, 40)
    frames = selected[0].nonzero().squeeze(1)
    for t in frames.tolist():
        drawn = picks[:, 0, t]
        assert selected[0, drawn].all() and not (drawn == t).any()
        counts = torch.bincount(drawn, minlength=40)[frames]
        assert (counts > 0).sum() == len(frames) - 1  # every other selected frame turns up
        assert counts.max() < 2.2 * k / (len(frames) - 1)  # about uniformly
    assert (picks[:, 1, 10] == 10).all()
    assert ((picks >= 0) & (picks < 40)).all()  # rows of unselected frames stay in range


def _static_and_general(model, wav, lengths, k):
    """The static head's logits and the general head's, with the same negatives."""
    g = torch.Generator().manual_seed(3)
    out = model.wav2vec2(wav, lengths, mask=True, generator=g)
    b, t = out.mask_indices.shape
    neg_u = torch.rand(k, b, t, generator=g, dtype=torch.float64)
    picks = static_negative_picks(out.mask_indices, neg_u)
    flat = out.mask_indices.reshape(-1).nonzero().squeeze(1)
    neg_idx = (torch.arange(b)[:, None] * t + picks).reshape(k, -1)[:, flat]
    general = model.contrastive_head(out, negatives_indices=neg_idx)
    logits, prob_ppl, code_ppl = model.static_logits(out.features, out.hidden, out.mask_indices, neg_u, None,
                                                     torch.tensor(model.quantizer.temperature))
    static = PreTrainingOutput(logits, prob_ppl, code_ppl, general.num_vars, general.temperature, out.features_pen,
                               out.mask_indices, out.lengths, frame_mask=out.mask_indices.reshape(-1))
    return static, general, flat


def test_static_head_equals_the_general_head_with_the_same_negatives():
    """The head `compile_model` compiles (uncompiled here): a row per frame, the masked rows
    equal to the general head's, and the loss, its statistics and gradients with them."""
    torch.manual_seed(0)
    cfg = small_cfg(dropout=0.0, attention_dropout=0.0, dropout_input=0.0, dropout_features=0.0, mask_prob=0.5)
    model = Wav2Vec2ForPreTraining(cfg).double().eval()  # eval: argmax codes, same on both paths
    wav, lengths = batch()
    static, general, flat = _static_and_general(model, wav.double(), lengths, cfg.num_negatives)
    assert static.logits.shape == (wav.shape[0] * static.mask_indices.shape[1], 1 + cfg.num_negatives)
    rows = static.logits[flat]
    assert torch.equal(torch.isneginf(rows), torch.isneginf(general.logits))
    assert torch.isneginf(general.logits).any()  # duplicates of the positive occur here (few codes)
    finite = torch.isfinite(general.logits)
    torch.testing.assert_close(rows[finite], general.logits[finite])
    torch.testing.assert_close(static.prob_perplexity, general.prob_perplexity)
    losses, grads = [], []
    for out in (static, general):
        model.zero_grad()
        loss, stats = pretraining_loss(out)
        loss.backward(retain_graph=True)
        losses.append(stats)
        grads.append([p.grad.clone() for p in model.parameters() if p.grad is not None])
    for key in ("loss", "contrastive", "accuracy", "num_masked", "diversity"):
        assert losses[0][key] == pytest.approx(losses[1][key], rel=1e-6), key  # the loss runs in fp32
    assert len(grads[0]) == len(grads[1])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)  # through the fp32 loss


def test_static_head_trains():
    """The path under `compile_model`, in training (Gumbel noise drawn outside the graph,
    LayerDrop, dropout): finite, and AdamW steps bring the loss down."""
    from w2v.models.accel import compile_model

    torch.manual_seed(0)
    model = Wav2Vec2ForPreTraining(small_cfg(mask_prob=0.5, layerdrop=0.2)).train()
    model.static_head = True
    assert compile_model(Wav2Vec2ForPreTraining(small_cfg())).static_head  # compile_model switches it on
    wav, lengths = batch()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for step in range(12):
        out = model(wav, lengths, generator=torch.Generator().manual_seed(0))
        assert out.frame_mask is not None and out.logits.shape[0] == out.mask_indices.numel()
        loss, stats = pretraining_loss(out, sync=False)
        assert torch.is_tensor(stats["num_masked"]) and stats["num_masked"] == out.mask_indices.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]


def test_ddp_looks_for_unused_parameters_only_when_layerdrop_skips_blocks():
    """DDP ties the dropped blocks' parameters in (zero gradients), so it need not walk the
    graph for unused parameters; plain skipping (one process, FSDP) leaves some unused. The
    compiled stack keeps the mode it is given (None: the model's)."""
    from w2v.models.accel import compile_model, layerdrop_leaves_parameters_unused
    from w2v.train.distributed import DistInfo
    from w2v.train.sharding import compile_for

    model = Wav2Vec2ForPreTraining(small_cfg(layerdrop=0.1))
    assert layerdrop_leaves_parameters_unused(model)
    assert not layerdrop_leaves_parameters_unused(Wav2Vec2ForPreTraining(small_cfg(layerdrop=0.0)))
    compile_model(model, dropped_blocks="tie")  # lazily
    assert not layerdrop_leaves_parameters_unused(model)
    compile_model(model)  # the mode kept
    assert model.wav2vec2.encoder.dropped_blocks == "tie"
    for mode, unused in (("discard", False), ("skip", True)):
        compile_model(model, dropped_blocks=mode)
        assert layerdrop_leaves_parameters_unused(model) == unused
    assert layerdrop_leaves_parameters_unused(compile_model(Wav2Vec2ForPreTraining(small_cfg(layerdrop=0.1)),
                                                            one_graph=False))
    ddp = DistInfo(rank=0, world_size=2, local_rank=0)
    with torch._dynamo.config.patch(optimize_ddp=True):  # compile_for switches it off for the process
        compiled = compile_for(Wav2Vec2ForPreTraining(small_cfg(layerdrop=0.1)), "ddp", ddp)
    assert compiled.wav2vec2.encoder.dropped_blocks == "skip"  # until sharding.wrap ties them in
    with pytest.raises(ValueError, match="dropped_blocks='drop'"):
        compile_model(Wav2Vec2ForPreTraining(small_cfg()), dropped_blocks="drop")


def test_compiling_switches_the_cpp_wrapper_on_for_gpu_models_only(monkeypatch):
    """Kernels launched from C++ (inductor's cpp_wrapper) on a GPU, where the Python launcher's
    host time made steps host-bound; a CPU model keeps the Python wrapper unless asked, and the
    environment's TORCHINDUCTOR_CPP_WRAPPER overrides the default."""
    import torch._inductor.config as inductor_config

    from w2v.models.accel import compile_model

    before = inductor_config.cpp_wrapper
    monkeypatch.delenv("TORCHINDUCTOR_CPP_WRAPPER", raising=False)
    try:
        compile_model(Wav2Vec2ForPreTraining(small_cfg()))  # CPU: lazily, nothing compiled yet
        assert inductor_config.cpp_wrapper is False
        compile_model(Wav2Vec2ForPreTraining(small_cfg()), cpp_wrapper=True)
        assert inductor_config.cpp_wrapper is True
        compile_model(Wav2Vec2ForPreTraining(small_cfg()), cpp_wrapper=False)
        assert inductor_config.cpp_wrapper is False
        monkeypatch.setenv("TORCHINDUCTOR_CPP_WRAPPER", "1")
        compile_model(Wav2Vec2ForPreTraining(small_cfg()))
        assert inductor_config.cpp_wrapper is True
        # CUDA graphs for every graph: inductor records none for C++-launched code, so the C++ launcher goes off
        compile_model(Wav2Vec2ForPreTraining(small_cfg()), mode="reduce-overhead")
        assert inductor_config.cpp_wrapper is False
        with pytest.raises(ValueError, match="exclude each other"):
            compile_model(Wav2Vec2ForPreTraining(small_cfg()), mode="reduce-overhead", cpp_wrapper=True)
    finally:
        inductor_config.cpp_wrapper = before



def test_matmul_conv_stack_frames_stay_plain_under_dynamic_shapes():
    """Batches of several lengths (fine-tuning, the compiled decode) trace the conv stack with a
    symbolic length. Each layer's frame count is a floor division; a symbolic max(0, ...) per
    layer nested seven maxima, over which inductor's sympy simplification ran for over 20 minutes
    (a tiny model's decode on the CPU; 55 s with plain divisions)."""
    encoder = ConvFeatureEncoder(BASE_CONV_LAYERS, "layer_norm")
    use_matmul_convolutions(encoder, triton=False)
    graphs = []

    def capture(gm, example_inputs):  # dynamo's graph only: no inductor
        graphs.append(gm)
        return gm

    torch._dynamo.reset()
    try:
        torch.compile(encoder.convolve, backend=capture, dynamic=True)(torch.randn(2, 16000))
    finally:
        torch._dynamo.reset()
    (out,) = [n for n in graphs[0].graph.nodes if n.op == "output"]
    value = out.args[0][0] if isinstance(out.args[0], (tuple, list)) else out.args[0]
    frames = value.meta["example_value"].shape[1]
    assert isinstance(frames, torch.SymInt) and "Max" not in str(frames.node.expr), frames.node.expr


def test_compiling_again_starts_from_the_model_code_and_autotune_sets_inductor_options(monkeypatch):
    """`compile_model` a second time (another launcher, `autotune`) compiles the model's own
    methods, not the wrappers the first call left on the instance; `autotune` passes
    `AUTOTUNE_OPTIONS` to every graph, and excludes a `mode`."""
    import torch._inductor.config as inductor_config

    from w2v.models import accel
    from w2v.models.components import ConvFeatureEncoder, ConvPositionalEmbedding

    seen = []
    real = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn=None, **kw: seen.append((fn, kw)) or real(fn, **kw))
    before = inductor_config.cpp_wrapper
    try:
        model = Wav2Vec2ForPreTraining(small_cfg())
        accel.compile_model(model, cpp_wrapper=False)
        seen.clear()
        accel.compile_model(model, cpp_wrapper=False, autotune=True)
        compiled = [getattr(fn, "__func__", None) for fn, _ in seen]
        assert ConvFeatureEncoder.convolve in compiled and ConvPositionalEmbedding.as_matmul in compiled
        assert Wav2Vec2ForPreTraining.static_logits in compiled  # not the first call's compiled wrappers
        assert all(kw.get("options") == accel.AUTOTUNE_OPTIONS for _, kw in seen)
        assert model.wav2vec2.encoder.autotune
        with pytest.raises(ValueError, match="autotune"):
            accel.compile_model(model, mode="reduce-overhead", autotune=True)
        seen.clear()
        accel.use_stack_cuda_graphs(model)  # the stack's CUDA graphs keep the autotuning
        assert seen[-1][1]["options"] == {**accel.AUTOTUNE_OPTIONS, **accel.STACK_CUDA_GRAPH_OPTIONS}
    finally:
        inductor_config.cpp_wrapper = before


def test_fused_query_key_value_is_the_same_function_with_the_same_parameters():
    """`use_fused_qkv`: one product over the stacked projections gives the three products' output
    and gradients (float32, within rounding), keeps the state dict's names, and `compile_model`
    switches it on unless told."""
    from w2v.models import accel
    from w2v.models.components import SelfAttention

    torch.manual_seed(0)
    model = Wav2Vec2ForPreTraining(small_cfg()).eval()  # no attention dropout
    attention = next(m for m in model.modules() if isinstance(m, SelfAttention))
    keys = set(model.state_dict())
    x = torch.randn(2, 7, attention.q_proj.in_features)
    mask = torch.ones(2, 1, 1, 7, dtype=torch.bool)
    mask[1, ..., 5:] = False
    outs = []
    for fused in (False, True):
        attention.fused_qkv = fused
        attention.zero_grad(set_to_none=True)
        y = attention(x, mask)
        y.square().sum().backward()
        outs.append((y.detach(), [p.grad.clone() for p in attention.parameters()]))
    torch.testing.assert_close(outs[1][0], outs[0][0], atol=1e-6, rtol=1e-5)
    for fused_grad, grad in zip(outs[1][1], outs[0][1]):
        torch.testing.assert_close(fused_grad, grad, atol=1e-6, rtol=1e-5)
    assert set(model.state_dict()) == keys
    attentions = [m for m in model.modules() if isinstance(m, SelfAttention)]
    accel.compile_model(model, cpp_wrapper=False)  # lazily
    assert all(m.fused_qkv for m in attentions)
    accel.compile_model(model, cpp_wrapper=False, fused_qkv=False)
    assert not any(m.fused_qkv for m in attentions)


@pytest.mark.parametrize("samples", [16000, 12001, 9003, 400])
def test_strided_windows_without_autograd_equal_the_sliced_windows(samples):
    """Without autograd the matmul conv stack reads each layer's windows as strided views
    (`strided_windows`): the same output as the sliced reshapes, for lengths that leave each
    layer an odd or even number of frames, down to the receptive field."""
    torch.manual_seed(0)
    encoder = Wav2Vec2ForPreTraining(small_cfg()).wav2vec2.feature_extractor
    encoder.matmul = True
    x = torch.randn(2, samples)
    with torch.no_grad():
        strided = encoder.convolve(x)
        encoder.strided_windows = False
        sliced = encoder.convolve(x)
    assert strided.shape[1] == sliced.shape[1] > 0
    assert torch.equal(strided, sliced)
    torch.testing.assert_close(strided, encoder.convolve(x).detach())  # the path with autograd
