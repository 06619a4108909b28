"""benchmarks/runner_overhead.py, spatial_weight.py and round_to.py: run end to end in --quick mode on the digits set
where they measure (real exports, real runtimes, real subprocess measurements) and write well-formed results;
make_report renders them. Behaviour only: no assertion on a time. (The benchmarks' tests are split over files: `make
test` gives each file to one of two workers.)"""

from __future__ import annotations

import json
import statistics

import pytest
from benchtest import run_script

pytestmark = pytest.mark.slow


def test_runner_overhead_times_both_call_styles(tmp_path):
    """benchmarks/runner_overhead.py: every artifact timed with both call styles of its runtime, the
    overhead and the INT8 speed-ups computed from the recorded medians."""
    out = tmp_path / "overhead.json"
    run_script("runner_overhead.py", "--models", "mobilenetv2", "--repeats", 2, "--runs", 30, "--out", out)
    rows = json.loads(out.read_text())["models"]["mobilenetv2"]
    for art, styles in (("openvino-fp32", ("infer(dict)", "bound input tensor")),
                        ("openvino-int8", ("infer(dict)", "bound input tensor")),
                        ("onnx-fp32", ("run(dict)", "io binding")), ("onnx-int8", ("run(dict)", "io binding"))):
        r = rows[art]
        assert set(r["p50_ms"]) == set(styles) and all(len(r["p50_repeats"][s]) == 2 for s in styles)
        assert r["p50_ms"][styles[0]] == round(statistics.median(r["p50_repeats"][styles[0]]), 4)
        assert r["overhead_ms"] == round(r["p50_ms"][styles[0]] - r["p50_ms"][styles[1]], 4)
    s = rows["openvino_int8_speedup"]["bound input tensor"]
    assert s == round(rows["openvino-fp32"]["p50_ms"]["bound input tensor"]
                      / rows["openvino-int8"]["p50_ms"]["bound input tensor"], 3)


def test_spatial_weight_benchmark_prunes_the_same_macs_differently(tmp_path):
    """benchmarks/spatial_weight.py: at one macs_ratio the weighted and uniform models have about the same
    MACs but different widths (the stem narrower when weighted), and the formats asked for are timed (ONNX Runtime
    alone here: the other two runtimes' exports and timing are the same code, run by the other benchmarks' tests)."""
    out = tmp_path / "sw.json"
    run_script("spatial_weight.py", "--weights", 0, 1, "--macs", 0.5, "--repeats", 1, "--runs", 20,
               "--formats", "onnx", "--out", out)
    d = json.loads(out.read_text())
    uniform, weighted = d["rows"]
    assert d["method"]["formats"] == ["onnx"]
    assert (uniform["spatial_weight"], weighted["spatial_weight"]) == (0.0, 1.0)
    assert abs(weighted["macs"] - uniform["macs"]) < 0.05 * uniform["macs"]
    assert weighted["conv_widths"][0] < uniform["conv_widths"][0]
    assert uniform["speedup_vs_uniform"] == {"onnx": 1.0}
    assert all(len(v) == 1 and v[0] > 0 for v in weighted["p50_repeats"].values())


def test_round_to_benchmark_rounds_the_pruned_widths(tmp_path):
    """benchmarks/round_to.py (MobileNetV2 at 32x32 here): round_to 32 leaves more widths on a multiple of 32 than the
    default 8 does, every width of the default is a multiple of 8, the default is its own baseline, and the formats
    asked for (ONNX Runtime alone here: the other runtimes' exports and timing are the same code, run by the other
    benchmarks' tests) are timed at 1 and 2 threads."""
    out = tmp_path / "rt.json"
    run_script("round_to.py", "--models", "mobilenetv2_224", "--size", 32, "--round-to", 8, 32, "--repeats", 1,
               "--runs", 5, "--formats", "onnx", "--out", out)
    d = json.loads(out.read_text())
    r8, r32 = d["rows"]
    assert d["method"]["formats"] == ["onnx"]
    assert (r8["round_to"], r32["round_to"]) == (8, 32)
    assert all(w % 8 == 0 for w in r8["conv_widths"])
    assert sum(w % 32 == 0 for w in r32["conv_widths"]) > sum(w % 32 == 0 for w in r8["conv_widths"])
    assert r8["speedup_vs_round_to_8"] == {"onnx:1": 1.0, "onnx:2": 1.0}
    assert r8["macs_vs_round_to_8"] == 1.0 and 0.7 < r32["macs_vs_round_to_8"] < 1.3
    assert all(len(v) == 1 and v[0] > 0 for v in r32["p50_repeats"].values())
