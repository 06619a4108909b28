"""benchmarks/scale.py, size_scaling.py and depth_probe.py: run end to end in --quick mode on the digits set where they
measure (real exports, real runtimes, real subprocess measurements) and write well-formed results; make_report
renders them. Behaviour only: no assertion on a time. (The benchmarks' tests are split over files: `make test` gives
each file to one of two workers.)"""

from __future__ import annotations

import json
import sys

import pytest
from benchtest import PASSES, SCRIPTS, run_script

from helpers import digits_recipe_dict, write_recipe

pytestmark = pytest.mark.slow


def test_scale_benchmark_bars_profiles_and_report(tmp_path, digits_checkpoint):
    """benchmarks/scale.py: every contender measured at 1 and 2 threads with its thread scaling and per-layer
    profile, the edgeship flow's pipeline cost from its own subprocess, the bars judged by what applies to a model
    (accuracy only with trained weights, thread scaling only at 224x224), and make_report's section."""
    sys.path.insert(0, str(SCRIPTS))
    try:
        import scale
    finally:
        sys.path.remove(str(SCRIPTS))
    r = digits_recipe_dict(tmp_path, passes=PASSES[:1] + PASSES[2:])
    r["model"]["weights"] = str(digits_checkpoint)
    write_recipe(tmp_path, r, "digits.yaml")
    out = tmp_path / "results" / "scale_quick.json"
    run_script("scale.py", "--quick", "--recipe", f"digits={tmp_path / 'digits.yaml'}", "--models", "digits",
               "--threads", 1, 2, "--repeats", 1, "--runs", 3, "--warmup", 1, "--verify-threads", 1,
               "--work", tmp_path / "work", "--out", out)
    d = json.loads(out.read_text())
    assert len(d["loadavg_before_measuring"]) == 3 and len(d["loadavg_after"]) == 3 and d["quick"]
    assert d["cpu_while_measuring"]["own_cpu_s"] > 0
    info = d["models"]["digits"]
    assert info["accuracy_measured"] and info["checkpoint"]["metrics"]["test_top1"] > 0.9
    cost = info["pipeline_cost"]["export"]
    assert cost["exit_code"] in (0, 1) and cost["wall_s"] > 0 and cost["peak_rss_mb_largest_process"] > 0
    assert info["pipeline_cost"]["stages_cached"] == []  # a cold export: the stage cache was cleared
    rows = {(r["format"], r["flow"]): r for r in d["rows"]}
    assert set(rows) == {(f, k) for f in ("onnx", "openvino", "tflite") for k in ("fp32", "edgeship", "peer")}
    for key, row in rows.items():
        assert row["status"] == "ok", (key, row.get("error"))
        one, two = row["p50_repeats"]["1"][0], row["p50_repeats"]["2"][0]
        assert row["thread_scaling"] == pytest.approx(one / two, abs=1e-4)  # rounded to 4 decimals
        prof = row["profile"]["1"]
        assert prof["compute_layers"] >= 1 and isinstance(prof["float_fallbacks"], list), key
        assert len(prof["top_layers"]) >= 1
        # timed per layer (LiteRT too, through its C API's profiler): their time, summed over every layer
        assert prof["layout_conversions"] is None and prof["layout_conversion_ms"] >= 0, key
    bars = {b["format"]: b for b in d["bars"]}
    assert set(bars) == {"onnx", "openvino", "tflite"}
    for fmt, b in bars.items():
        ours, fp32 = rows[(fmt, "edgeship")], rows[(fmt, "fp32")]
        assert b["judged"] == ["faster_2_5x_than_fp32", "faster_1_3x_than_peer", "within_0_5pt_of_fp32"]
        assert b["drop_vs_fp32_pt"] == pytest.approx(100 * (fp32["top1"] - ours["top1"]), abs=0.01)
        assert b["faster_2_5x_than_fp32"] == all(v >= 2.5 for v in ours["speedup_vs_fp32"].values())
        assert b["met"] == all(b[k] for k in b["judged"])
    # the same rows for a 224x224 model with random weights: no accuracy bar, the thread-scaling bar instead
    # judged on the 1/2-thread ratio timed in one process (thread_scaling_paired), never on the separate processes'
    models = {"digits": dict(info, accuracy_measured=False, input=[3, 224, 224])}
    for b in scale.scale_bars(d["rows"], models, [1, 2]):
        assert b["judged"] == ["faster_2_5x_than_fp32", "faster_1_3x_than_peer", "two_threads_1_6x"]
        assert "drop_vs_fp32_pt" not in b and b["accuracy"].startswith("not measured")
        assert b["two_threads_1_6x"] is False  # scale.py timed no paired ratio for an 8x8 model
    for paired, separate, met in ((1.7, 1.0, True), (1.5, 2.0, False)):
        given = [dict(r, thread_scaling_paired=paired, thread_scaling=separate) for r in d["rows"]]
        assert all(b["two_threads_1_6x"] is met for b in scale.scale_bars(given, models, [1, 2]))
    report = tmp_path / "BENCHMARKS.md"
    run_script("make_report.py", "--results", out.parent, "--out", report)
    text = report.read_text()
    assert "## At deployment sizes: 96x96 and 224x224 (QUICK run" in text and "### digits (1x8x8)" in text
    assert "### Bars (issue 20" in text and text.count("| digits | ") == 3 and "Pipeline cost" in text
    # benchmarks/ov_kernels.py reads the same run's OpenVINO IR: a QAT model, its quantizers and its kernels
    kout = tmp_path / "ov_kernels.json"
    run_script("ov_kernels.py", "--runs", tmp_path / "work" / "digits_edgeship", "--out", kout)
    (k,) = json.loads(kout.read_text())["rows"]
    assert k["run"] == "digits_edgeship" and k["quantized_by"] == "qat" and k["symmetric_activations_setting"] is False
    quantizers = k["activation_quantizers"]
    assert quantizers.get("unsigned_from_zero", 0) >= 1  # a ReLU output's learned range starts at 0
    feeds = sum(n for kind, n in quantizers.items() if kind.startswith("zero_point_feeds_"))
    assert (feeds == 0) == (quantizers.get("zero_point", 0) == 0)  # each quantizer with a zero point feeds an op
    assert sum(n for kind, n in k["conv_kernels"].items() if kind.startswith("Convolution/")) >= 2
    assert k["convolutions_in_jit_kernels"] == sum(n for kind, n in k["conv_kernels"].items()
                                                    if kind.startswith("Convolution/jit_"))


def test_depth_probe_factory_removes_only_residual_blocks(tmp_path, monkeypatch):
    """benchmarks/depth_probe.py's model: the named residual blocks become identities, nothing else changes."""
    import torch

    monkeypatch.syspath_prepend(str(SCRIPTS))
    from depth_probe import mobilenetv2_without_blocks

    from edgeship.models.zoo import ZOO

    torch.manual_seed(0)
    full = ZOO["mobilenetv2"](width_mult=0.5).eval()
    ckpt = tmp_path / "m.pt"
    torch.save({"state_dict": full.state_dict()}, ckpt)
    residual = [n for n, m in full.named_modules() if getattr(m, "use_res", False)]
    cut = mobilenetv2_without_blocks(str(ckpt), residual[:2], width_mult=0.5).eval()
    assert [n for n, m in cut.named_modules() if getattr(m, "use_res", False)] == residual[2:]
    assert all(isinstance(cut.get_submodule(n), torch.nn.Identity) for n in residual[:2])
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert cut(x).shape == full(x).shape and not torch.allclose(cut(x), full(x))
        assert torch.equal(mobilenetv2_without_blocks(str(ckpt), [], width_mult=0.5).eval()(x), full(x))
    not_residual = next(n for n, m in full.named_modules() if hasattr(m, "use_res") and not m.use_res)
    with pytest.raises(ValueError, match="not a residual block"):
        mobilenetv2_without_blocks(str(ckpt), [not_residual], width_mult=0.5)


def test_size_scaling_records_each_format(tmp_path):
    """benchmarks/size_scaling.py on the smallest zoo model: both precisions of every format exported,
    sizes read from the files, the INT8/FP32 ratio and the bar verdict consistent with them."""
    out = tmp_path / "size.json"
    run_script("size_scaling.py", "--models", "small_cnn:16", "--out", out)
    d = json.loads(out.read_text())
    (row,) = d["models"]
    assert row["exit_code"] == 0 and row["params"] > 0 and row["weights_per_output_channel"] > 9
    for fmt in ("onnx", "openvino", "tflite"):
        c = row["formats"][fmt]
        assert c["status"] == ["ok", "ok"] and 0 < c["int8_bytes"] < c["fp32_bytes"]
        assert c["ratio"] == round(c["int8_bytes"] / c["fp32_bytes"], 4)
        assert c["bar_met"] == (c["ratio"] <= d["bar"])
    breakdown = row["formats"]["onnx"]["int8_onnx_bytes"]
    assert breakdown["int8_weights"] > 0 and sum(breakdown.values()) == row["formats"]["onnx"]["int8_bytes"]
