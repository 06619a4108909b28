"""benchmarks/methods.py and the QAT weight-bits benchmark: run end to end in --quick mode on the digits set where they
measure (real exports, real runtimes, real subprocess measurements) and write well-formed results; make_report
renders them. Behaviour only: no assertion on a time. (The benchmarks' tests are split over files: `make test` gives
each file to one of two workers.)"""

from __future__ import annotations

import json
import sys

import pytest
from benchtest import SCRIPTS, bench_results, run_script

from helpers import digits_recipe_dict, write_recipe

pytestmark = pytest.mark.slow


def test_methods_benchmark_rows_and_bars(tmp_path, digits_checkpoint):
    """benchmarks/methods.py on the digits model: one row per method with every target verified and timed, drops
    computed against the FP32 row, Deep Compression's bar from the coded size, and make_report's section."""
    r = digits_recipe_dict(tmp_path)
    r["model"]["weights"] = str(digits_checkpoint)
    recipe = write_recipe(tmp_path, r, "digits.yaml")
    out = tmp_path / "results" / "methods_quick.json"
    run_script("methods.py", "--quick", "--recipe", f"digits={recipe}", "--models", "digits", "--methods",
               "deep_compression", "dynamic", "lowbit_2", "--runs", 5, "--warmup", 1, "--threads", 1,
               "--work", tmp_path / "work", "--out", out)
    d = json.loads(out.read_text())
    rows = {r["method"]: r for r in d["rows"]}
    assert list(rows) == ["fp32", "deep_compression", "dynamic", "lowbit_2"]  # fp32 added: the reference
    ref = next(t for t in rows["fp32"]["targets"] if t["precision"] == "fp32")
    for r in rows.values():
        assert r["test_samples"] > 300 and r["final_macs"] > 0
        for t in r["targets"]:
            assert t["status"] == "ok" and t["p50_ms_1t"] > 0 and 0 < t["zip_bytes"], (r["method"], t)
            assert t["drop_pt"] == round(100 * (ref["top1"] - t["top1"]), 2) and t["within_2pt"] == (t["drop_pt"] <= 2)
    assert {t["precision"] for t in rows["dynamic"]["targets"]} == {"dynamic_int8", "weights_int8", "weights_int4"}
    bar = d["bars"]["deep_compression"]["digits"]
    coded = rows["deep_compression"]["stages"][1]["deep_compression"]["bytes"]
    assert bar["ratio_vs_fp32_artifact"] == round(ref["size_bytes"] / coded, 2)
    assert bar["met"] == (bar["ratio_vs_fp32_artifact"] >= 20 and bar["drop_pt"] <= 1)
    assert rows["lowbit_2"]["stages"][0]["packed_bytes"] < ref["size_bytes"]
    assert d["profile"]["name"] == "quick" and d["profile"]["fine_tune_samples_per_epoch"]["other methods"] == 512
    # --rejudge recomputes the verdicts of a written file: a row made to miss the bar gets its method's reason
    low = next(t for t in d["rows"][3]["targets"] if t["precision"] == "int8")
    low["top1"] = ref["top1"] - 0.05
    out.write_text(json.dumps(d))
    run_script("methods.py", "--rejudge", out)
    again = json.loads(out.read_text())
    low2 = next(t for t in again["rows"][3]["targets"] if t["precision"] == "int8")
    assert (low2["drop_pt"], low2["within_2pt"]) == (5.0, False) and "ternary" in again["rows"][3]["why_off"]
    assert again["bars"] == d["bars"] and again["rows"][1] == d["rows"][1]
    results = tmp_path / "results"
    (results / "pipeline_cost_quick.json").write_text((bench_results() / "pipeline_cost.json").read_text())
    run_script("make_report.py", "--results", results, "--out", tmp_path / "B.md")
    text = (tmp_path / "B.md").read_text()
    assert "## Compression methods side by side (QUICK run" in text and "| digits | lowbit_2 | onnx int8 |" in text
    # --merge: one more row into the same file, the others kept as they were and the FP32 reference not rerun
    run_script("methods.py", "--quick", "--recipe", f"digits={recipe}", "--models", "digits", "--methods", "dynamic",
               "--runs", 5, "--warmup", 1, "--threads", 1, "--work", tmp_path / "work", "--out", out, "--merge")
    merged = json.loads(out.read_text())
    assert [r["method"] for r in merged["rows"]] == ["fp32", "deep_compression", "lowbit_2", "dynamic"]
    assert merged["rows"][0]["export_wall_s"] == again["rows"][0]["export_wall_s"]  # the same row, not a new run
    assert merged["rows"][2]["why_off"] == again["rows"][3]["why_off"] and merged["rows"][3]["commit"]
    assert merged["earlier_runs"][0]["rows"] == ["digits fp32", "digits deep_compression", "digits lowbit_2"]
    assert ["--merge" in e["command"] for e in merged["earlier_runs"]] == [False]


def test_qat_weight_bits_and_its_report_section(tmp_path, digits_checkpoint):
    """benchmarks/qat_weight_bits.py on a digits recipe ending in qat: both weight settings lowered to every INT8
    format and compared with the graph's own arithmetic, calibrated OpenVINO with both overflow fixes; the 7-bit
    rows' x86 runtimes stay with that arithmetic; make_report renders the table."""
    r = digits_recipe_dict(tmp_path, passes=[{"name": "distill", "epochs": 1, "samples": 400},
                                             {"name": "qat", "epochs": 1, "samples": 400, "calib_samples": 64}])
    r["model"]["weights"] = str(digits_checkpoint)
    out = tmp_path / "results" / "qat_weight_bits.json"
    run_script("qat_weight_bits.py", "--recipe", write_recipe(tmp_path, r), "--out", out)
    d = json.loads(out.read_text())
    assert d["stages_before_qat"]["names"] == ["distill"] and d["test_samples"] > 100
    rows = {row["weights"]: row for row in d["rows"]}
    assert set(rows) == {"8-bit", "7-bit"} and rows["7-bit"]["wmax_non_depthwise"] == 64
    for row in rows.values():
        assert set(row["top1"]) == {"torch_qat", "graph_arithmetic", "onnx", "openvino", "tflite"}
        assert all(v > 0.8 for v in row["top1"].values()), row
    for fmt in ("onnx", "openvino"):  # no saturation with 7-bit weights: at most a rounding step apart
        assert rows["7-bit"]["vs_graph_arithmetic"][fmt]["agreement"] >= 0.99
    fixes = [row["overflow_fix"] for row in d["calibrated_openvino"]["rows"]]
    assert fixes == ["first_layer_only", "enable"]
    sys.path.insert(0, str(SCRIPTS))
    try:
        import make_report
    finally:
        sys.path.remove(str(SCRIPTS))
    lines = make_report.weight_bits_section(make_report.load(out.parent, "qat_weight_bits"))
    assert lines[0] == "## INT8 weights on x86 without VNNI: 8 against 7 bits"
    assert [line.split(" | ")[1] for line in lines if line.startswith("| qat | ")] == ["8-bit", "7-bit"]
    assert sum("| overflow fix: " in line for line in lines) == 2
