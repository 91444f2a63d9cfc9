"""The speed benchmarks' CPU-runnable parts: the audio pipeline bench and the table/CLI plumbing."""

import json

import pytest
import torch

from w2v.bench import data, gpu
from w2v.cli import main


def test_data_bench_counts_cropped_audio(tmp_path):
    paths = data.write_corpus(tmp_path, files=2, seconds=3.0, fmt="flac")
    assert data.load_batch(([str(p) for p in paths], 2.0, 0)) == pytest.approx(4.0)
    assert data.load_batch(([str(paths[0])], 5.0, 0)) == pytest.approx(3.0)  # shorter than the crop
    assert data.throughput(paths, workers=1, batch=2, batches=2, crop_seconds=2.0) > 0


def test_kernel_classes_and_batch_maps():
    assert gpu.classify("cudnn_generated_fort_native_sdpa_sm90_flash_fprop") == "attention (flash/SDPA)"
    assert gpu.classify("nvjet_sm90_tst_192x192") == "matrix products (cuBLAS/CUTLASS)"
    assert gpu.classify("void implicit_convolve_sgemm<bf16>") == "convolutions (cuDNN)"
    assert gpu.classify("triton_red_fused_gelu").startswith("fused by inductor")
    assert gpu.classify("ncclDevKernel_AllReduce_Sum_f32_RING_LL") == "communication (NCCL)"
    assert gpu.pick(gpu.parse_map("base=8,large=6"), "large") == 6
    assert gpu.pick(gpu.parse_map("16"), "base") == 16


def test_bench_subcommand_takes_its_own_options_and_others_reject_unknown(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "data", "--help"])
    assert "--workers" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["score", "--config", "c", "--decode", "d", "--out", "o", "--bogus"])
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


def test_covered_time_counts_overlapping_kernels_once():
    # NCCL's all-reduce beside a backward kernel: [0, 10) and [5, 12) cover 12, [20, 21) one more
    assert gpu.covered_us([(5, 12), (0, 10), (20, 21), (6, 7)]) == 13
    assert gpu.covered_us([]) == 0


def test_kernel_summary_counts_kernels_not_the_annotated_ranges_around_them():
    """On a GPU the profiler puts `record_function` ranges (AdamW's step, DDP's forward,
    nccl:all_reduce) on the device's timeline too; counted as kernels they doubled the
    optimizer's and NCCL's time and covered idle gaps."""
    from types import SimpleNamespace

    from torch.autograd import DeviceType

    def event(name, start, end, annotation=False, device=DeviceType.CUDA):
        return SimpleNamespace(name=name, device_type=device, is_user_annotation=annotation,
                               time_range=SimpleNamespace(start=start, end=end, elapsed_us=lambda: end - start))

    prof = SimpleNamespace(events=lambda: [
        event("Optimizer.step#AdamW.step", 0, 4000, annotation=True),
        event("void at::native::multi_tensor_apply_kernel<...>", 0, 1000),
        event("ncclDevKernel_AllReduce_Sum_f32_RING_LL", 2000, 3000),
        event("nccl:all_reduce", 2000, 3000, annotation=True),
        event("aten::mm", 0, 9000, device=DeviceType.CPU),
    ])
    got = gpu.kernel_summary(prof, steps=1)
    assert got["device_busy_ms_per_step"] == 2.0 and got["device_any_busy_ms_per_step"] == 2.0
    assert got["classes_ms"] == {"optimizer (AdamW)": 1.0, "communication (NCCL)": 1.0}
    assert [n for n, _ in got["top_kernels_ms"]] == ["void at::native::multi_tensor_apply_kernel<...>",
                                                     "ncclDevKernel_AllReduce_Sum_f32_RING_LL"]
    assert got["nccl_exposed_ms_per_step"] == 1.0 and got["nccl_hidden_ms_per_step"] == 0.0


def test_kernel_summary_splits_collectives_into_exposed_and_hidden_time():
    """An all-reduce beside the backward costs the step only where nothing else runs."""
    from types import SimpleNamespace

    from torch.autograd import DeviceType

    def kernel(name, start, end):
        return SimpleNamespace(name=name, device_type=DeviceType.CUDA, is_user_annotation=False,
                               time_range=SimpleNamespace(start=start, end=end, elapsed_us=lambda: end - start))

    prof = SimpleNamespace(events=lambda: [
        kernel("nvjet_sm90_tst_192x192_backward", 0, 6000),
        kernel("ncclDevKernel_AllReduce_Sum_f32_RING_LL", 4000, 9000),  # 2 ms beside the product, 3 ms alone
        kernel("ncclDevKernel_AllReduce_Sum_f32_RING_LL", 8000, 10000),  # overlaps the first: 1 ms more alone
        kernel("void at::native::multi_tensor_apply_kernel<...>", 10000, 12000),
    ])
    got = gpu.kernel_summary(prof, steps=2)
    assert got["nccl_exposed_ms_per_step"] == 2.0 and got["nccl_hidden_ms_per_step"] == 1.0  # per step: 4/2, 2/2
    assert got["device_any_busy_ms_per_step"] == 6.0
    one_gpu = SimpleNamespace(events=lambda: [kernel("nvjet_sm90_tst_192x192_backward", 0, 6000)])
    assert "nccl_exposed_ms_per_step" not in gpu.kernel_summary(one_gpu, steps=1)


def test_bench_parses_its_compile_options():
    a = gpu.build_parser().parse_args(["--compile", "--compile-mode", "reduce-overhead", "--dynamic",
                                       "--cpp-wrapper", "off"])
    assert a.compile and a.compile_mode == "reduce-overhead" and a.dynamic and a.cpp_wrapper == "off"
    default = gpu.build_parser().parse_args([])
    assert default.compile_mode is None and default.cpp_wrapper == "auto"


def test_attention_bench_times_the_backends_that_take_the_inputs():
    """On the CPU only the math backend runs (the fused ones refuse dropout there); each backend
    gets a time or says why it cannot run."""
    import torch

    a = gpu.build_parser().parse_args(["--samples", "16000", "--steps", "1", "--warmup", "0"])
    a.device = torch.device("cpu")
    r = gpu.attention(a, "tiny", 2)
    assert r["frames"] == 49 and r["heads"] == 4
    assert r["math"]["ms"] > 0 and r["math"]["infer_ms"] > 0 and r["math"]["infer_rel_err"] < 1e-4
    assert r["infer_batch"] == 2
    assert all(isinstance(r[k], dict) or r[k].startswith("unavailable: ")
               for k in ("cudnn_attention", "flash_attention", "efficient_attention"))


def test_first_layer_bench_times_the_unfused_layer_and_checks_agreement():
    """On the CPU: the unfused layer eager and compiled (the fused kernels need a GPU); the
    compiled one computes what the eager one does."""
    import torch

    a = gpu.build_parser().parse_args(["--samples", "8000", "--steps", "1", "--warmup", "0"])
    a.device = torch.device("cpu")
    r = gpu.first_layer(a, "tiny", 2)
    assert r["frames"] == (8000 - 10) // 5 + 1 and "fused_triton" not in r
    for name in ("unfused", "unfused_compiled"):
        assert r[name]["forward_ms"] > 0 and r[name]["train_ms"] > 0
        assert r[name]["rel_err"] < 1e-4 and r[name]["weight_grad_rel_err"] < 1e-4


def test_loop_bench_runs_the_training_loop_and_reports_its_rate(tmp_path, capsys):
    main(["bench", "loop", "--preset", "tiny", "--files", "6", "--seconds", "2.5", "--crop", "2",
          "--max-duration", "4", "--updates", "4", "--log-every", "2", "--workers", "2", "--device", "cpu",
          "--gc-interval", "3", "--dir", str(tmp_path)])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [r["update"] for r in out["intervals"]] == [2, 4] and out["gc_interval"] == 3
    assert all(r["audio_s_per_s"] > 0 and 0 <= r["data_share"] <= 1 for r in out["intervals"])
    assert out["steady_audio_s_per_s"] == round(out["intervals"][1]["audio_s_per_s"], 1)  # not the first
    assert (tmp_path / "exp" / "model.pt").exists() and len(list((tmp_path / "audio").glob("*.flac"))) == 6


def test_compare_times_ours_and_the_peer_and_records_each_lever():
    import torch

    a = gpu.build_parser().parse_args(["--samples", "16000", "--steps", "1", "--warmup", "0", "--matmul-conv"])
    a.device = torch.device("cpu")
    a.ceiling = 1.0
    row = gpu.compare(gpu.Workload("infer", "tiny", 2, a.samples, a.device), a, False)
    assert row["ours"]["audio_s_per_s"] > 0 and row["peer"]["audio_s_per_s"] > 0
    assert row["ours_matmul_conv_audio_s_per_s"] > 0 and isinstance(row["matmul_conv"], bool)
    assert "triton_posconv" not in row and "triton_first_layer" not in row  # --triton auto: GPU only
    assert len(row["ours"]["windows"]) == a.windows == 3 and len(row["peer"]["windows"]) == 3
    assert len(row["ours_matmul_conv_windows"]) == 3
    # the inference logits beside float32's: no autocast on the CPU, so the matrix-product convs
    # are the only difference (a wrong lever would show here)
    errs = row["logits_rel_err_vs_fp32"]
    assert errs["bf16_eager"] == 0.0 and errs["ours"] < 1e-4


def test_timed_keeps_the_window_of_median_throughput():
    """Windows whose steps take 50, 5 and 20 ms: the 20 ms one is kept, all three are listed."""
    import time

    pauses = iter([0.05, 0.005, 0.02])
    m = gpu.timed(lambda: time.sleep(next(pauses)), torch.device("cpu"), 1, 0, 1.0, windows=3)
    assert 15 < m.step_ms < 50
    assert len(m.windows) == 3 and m.windows[0] < m.audio_s_per_s < m.windows[1]
    assert m.audio_s_per_s == pytest.approx(sorted(m.windows)[1], rel=0.01)


def test_a_failing_lever_is_recorded_and_the_row_keeps_what_was_measured(capsys):
    import torch

    a = gpu.build_parser().parse_args(["--samples", "16000", "--steps", "1", "--warmup", "0", "--matmul-conv"])
    a.device = torch.device("cpu")
    best = gpu.Measure(audio_s_per_s=10.0, step_ms=1.0)

    def broken(model):
        raise RuntimeError("kernel did not compile")

    import types

    w = types.SimpleNamespace(kind="infer", preset="tiny", dev=a.device, audio_s=1.0)
    row = {}
    got = gpu._lever(row, "boom", broken, torch.nn.Identity(), lambda: None, w, a, None, best)
    assert got is best and row == {"boom_error": "RuntimeError: kernel did not compile", "boom": False}
    assert json.loads(capsys.readouterr().out)["error"].startswith("RuntimeError")


def test_levers_in_order_and_the_ones_not_picked_on_from_the_start():
    a = gpu.build_parser().parse_args(["--matmul-conv"])
    a.device = torch.device("cpu")

    def names(levers):
        return [lv.name for lv in levers]

    timed, fixed = gpu._levers(a, "pretrain", 0.05)
    assert names(timed) == ["matmul_conv", "fused_qkv"] and fixed == []  # Triton levers on a GPU only
    a.triton, a.compile = "on", True
    assert names(gpu._levers(a, "pretrain", 0.05)[0]) == ["matmul_conv", "triton_first_layer", "triton_posconv",
                                                          "layerdrop_skip", "fused_qkv"]
    assert "layerdrop_skip" not in names(gpu._levers(a, "infer", 0.05)[0])  # no LayerDrop without training
    assert "layerdrop_skip" not in names(gpu._levers(a, "pretrain", 0.0)[0])
    a.triton = "posconv"
    assert names(gpu._levers(a)[0]) == ["matmul_conv", "triton_posconv", "fused_qkv"]
    a.triton = "first-layer"
    a.levers = "layerdrop_skip"
    timed, fixed = gpu._levers(a, "pretrain", 0.05)
    assert names(timed) == ["layerdrop_skip"] and names(fixed) == ["matmul_conv", "triton_first_layer", "fused_qkv"]
    a.levers = "layerdrop_skip,bogus"
    with pytest.raises(SystemExit, match="bogus"):
        gpu._levers(a)
    assert gpu.build_parser().parse_args([]).levers == "all"
    a.levers, a.device = "all", torch.device("cuda")  # a device object only: nothing runs on it
    assert names(gpu._levers(a, "infer")[0])[-3:] == ["stack_cuda_graphs", "inference_weights",  # on a GPU
                                                      "gelu_epilogue"]
    assert names(gpu._levers(a, "pretrain", 0.05)[0])[-1] == "stack_cuda_graphs"
    assert "stack_cuda_graphs" not in names(gpu._levers(a, "finetune", 0.05)[0])  # the trainer refuses it there
    a.compile = False
    assert "stack_cuda_graphs" not in names(gpu._levers(a, "pretrain", 0.05)[0])


def test_the_stack_cuda_graph_lever_waits_for_the_compile():
    """`compare` switches its levers before compiling and again after: the CUDA-graph lever acts
    on the compiled stack only."""
    from w2v.models import Wav2Vec2ForPreTraining, load_model_config
    from w2v.models.accel import compile_model

    a = gpu.build_parser().parse_args(["--matmul-conv", "--compile"])
    a.device = torch.device("cuda")
    lever = gpu._all_levers(a)[-1]
    model = Wav2Vec2ForPreTraining(load_model_config("tiny"))
    lever.on(model)  # before compiling: nothing to replay yet
    assert model.wav2vec2.encoder.compiled_stack is None and not model.wav2vec2.encoder.cuda_graphs
    compile_model(model, cpp_wrapper=False)  # lazily
    lever.on(model)
    assert model.wav2vec2.encoder.cuda_graphs
    lever.off(model)
    assert not model.wav2vec2.encoder.cuda_graphs and model.wav2vec2.encoder.compiled_stack is not None


def test_the_autotune_lever_comes_last_and_recompiles_keeping_the_other_switches(monkeypatch):
    """--autotune: timed after every other lever (it recompiles every graph); switching it on and
    off compiles the model again with and without inductor's autotuning, the stack's CUDA graphs
    and LayerDrop's skips as they were; nothing happens before the first compile."""
    import torch._inductor.config as inductor_config

    from w2v.models import Wav2Vec2ForPreTraining, load_model_config
    from w2v.models import accel

    a = gpu.build_parser().parse_args(["--matmul-conv", "--compile", "--autotune"])
    a.device = torch.device("cuda")  # a device object only: nothing runs on it
    assert [lv.name for lv in gpu._levers(a, "pretrain", 0.05)[0]][-2:] == ["stack_cuda_graphs", "autotune"]
    a.levers = ""
    assert [lv.name for lv in gpu._levers(a, "infer")[1]][-1] == "autotune"  # on from the start
    plain = gpu.build_parser().parse_args(["--compile"])
    plain.device = a.device
    assert "autotune" not in [lv.name for lv in gpu._all_levers(plain)]  # only when asked: minutes of compiling
    a.compile_mode = "reduce-overhead"  # a mode excludes inductor's options
    assert "autotune" not in [lv.name for lv in gpu._all_levers(a)]

    seen = []
    real = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn=None, **kw: seen.append(kw) or real(fn, **kw))
    before = inductor_config.cpp_wrapper
    try:
        lever = gpu._levers(a.__class__(**{**vars(a), "compile_mode": None}), "pretrain", 0.05)[1][-1]
        model = Wav2Vec2ForPreTraining(load_model_config("tiny"))
        lever.on(model)
        assert seen == [] and model.wav2vec2.encoder.compiled_stack is None
        accel.compile_model(model, cpp_wrapper=False)
        model.wav2vec2.encoder.dropped_blocks = "discard"
        accel.use_stack_cuda_graphs(model)
        seen.clear()
        lever.on(model)
        encoder = model.wav2vec2.encoder
        assert encoder.autotune and encoder.cuda_graphs and encoder.dropped_blocks == "discard"
        assert seen and all(kw.get("options", {}).items() >= accel.AUTOTUNE_OPTIONS.items() for kw in seen)
        seen.clear()
        lever.off(model)
        assert not encoder.autotune and encoder.cuda_graphs
        assert not any(accel.AUTOTUNE_OPTIONS.items() <= kw.get("options", {}).items() for kw in seen)
    finally:
        inductor_config.cpp_wrapper = before


def test_a_lever_slower_than_the_best_so_far_is_switched_back_off(monkeypatch):
    """Each lever is timed on top of the fastest model so far: a losing one is switched off."""
    import types

    a = gpu.build_parser().parse_args(["--steps", "1", "--warmup", "0"])
    w = types.SimpleNamespace(kind="infer", preset="tiny", dev=torch.device("cpu"), audio_s=1.0,
                              cfg=types.SimpleNamespace(layerdrop=0.0), cycle=1)
    state = []
    for rate, kept in ((5.0, False), (20.0, True)):
        monkeypatch.setattr(gpu, "timed", lambda *args, rate=rate, **kw: gpu.Measure(audio_s_per_s=rate, step_ms=1.0))
        best = gpu.Measure(audio_s_per_s=10.0, step_ms=1.0)
        row = {}
        got = gpu._lever(row, "x", lambda m: state.append("on"), None, lambda: None, w, a, None, best,
                         lambda m: state.append("off"))
        assert row["x"] is kept and (got is best) is not kept
    assert state == ["on", "off", "on"]


def test_host_summary_gives_host_time_per_step_and_the_calls_that_wait_for_the_device():
    from torch.profiler import ProfilerActivity, profile

    x = torch.randn(64, 64)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(2):
            (x @ x).sum().item()
    s = gpu.host_summary(prof, steps=2)
    times = dict(s["host_top_self_ms"])
    assert "aten::mm" in times and all(v >= 0 for v in times.values())
    assert set(s["host_waits_ms"]) & {"aten::item", "aten::_local_scalar_dense"}  # .item() waits
    assert "aten::mm" not in s["host_waits_ms"]


@pytest.mark.parametrize("choice,expected", [("on", True), ("off", False), ("auto", False)])  # auto: C++ on a GPU
def test_paths_timed_alone_compile_with_the_launcher_asked_for(choice, expected, monkeypatch):
    import torch._inductor.config as inductor

    monkeypatch.delenv("TORCHINDUCTOR_CPP_WRAPPER", raising=False)
    before = inductor.cpp_wrapper
    inductor.cpp_wrapper = not expected
    try:
        gpu.main(["--no-compare", "--sizes", "", "--cpp-wrapper", choice])
        assert inductor.cpp_wrapper is expected
    finally:
        inductor.cpp_wrapper = before


def test_the_inference_weights_lever_restores_the_float32_weights():
    """Casting the linear weights to bf16 loses bits; switching the lever off restores the float32
    weights it kept, not their bf16 rounding."""
    from w2v.models import Wav2Vec2ForCTC, load_model_config

    a = gpu.build_parser().parse_args(["--matmul-conv", "--compile"])
    a.device = torch.device("cuda")  # a device object only: nothing runs on it
    lever = next(lv for lv in gpu._all_levers(a, "infer") if lv.name == "inference_weights")
    model = Wav2Vec2ForCTC(load_model_config("tiny"), 12)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    lever.on(model)  # not compiled: nothing to compile again
    assert model.lm_head.weight.dtype == torch.bfloat16
    lever.off(model)
    after = model.state_dict()
    assert all(after[k].dtype == v.dtype and torch.equal(after[k], v) for k, v in before.items())


def test_the_gelu_epilogue_lever_switches_every_gelu_network():
    from w2v.models import Wav2Vec2ForCTC, load_model_config
    from w2v.models.components import FeedForward

    a = gpu.build_parser().parse_args(["--matmul-conv", "--compile"])
    a.device = torch.device("cuda")  # a device object only: nothing runs on it
    lever = next(lv for lv in gpu._all_levers(a, "infer") if lv.name == "gelu_epilogue")
    model = Wav2Vec2ForCTC(load_model_config("tiny"), 12)
    ffns = [m for m in model.modules() if isinstance(m, FeedForward)]
    lever.on(model)  # not compiled: nothing to compile again
    assert ffns and all(m.gelu_epilogue for m in ffns)
    lever.off(model)
    assert not any(m.gelu_epilogue for m in ffns)


def test_flops_count_the_gelu_epilogues_product():
    """`use_gelu_epilogue`'s product (`aten._addmm_activation`) counts as the product it is: the
    achieved TFLOP/s of an inference row must not drop a quarter of its FLOPs with the lever."""
    import torch

    class Step:
        inference = torch.inference_mode

    x, w, b = torch.randn(5, 8), torch.randn(6, 8), torch.randn(6)
    fused = gpu.count_flops(Step(), lambda: torch._addmm_activation(b, x, w.t(), use_gelu=True))
    plain = gpu.count_flops(Step(), lambda: torch.nn.functional.linear(x, w, b))
    assert fused == plain == 2 * 5 * 8 * 6 / 1e12
