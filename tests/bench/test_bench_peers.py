"""benchmarks/peers.py and benchmarks/pipeline_cost.py (one quick run shared by the module) and make_report's sections
from them: run end to end in --quick mode on the digits set where they measure (real exports, real runtimes, real
subprocess measurements) and write well-formed results; make_report renders them. Behaviour only: no assertion on a
time. (The benchmarks' tests are split over files: `make test` gives each file to one of two workers.)"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from benchtest import PASSES, REPEATS, SCRIPTS, run_script

from helpers import REPO, digits_recipe_dict, write_recipe

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory, digits_checkpoint) -> Path:
    tmp = tmp_path_factory.mktemp("bench")
    r = digits_recipe_dict(tmp, passes=PASSES)
    r["model"]["weights"] = str(digits_checkpoint)
    write_recipe(tmp, r, "peers.yaml")
    r["targets"] = [{"name": "onnx-int8", "format": "onnx", "precision": "int8"}]
    write_recipe(tmp, r, "cost.yaml")
    (tmp / "results").mkdir()
    run_script("peers.py", "--quick", "--recipe", f"digits={tmp / 'peers.yaml'}", "--models", "digits",
               "--threads", 1, "--repeats", REPEATS, "--runs", 5, "--warmup", 1, "--verify-threads", 1,
               "--work", tmp / "work", "--out", tmp / "results" / "peers_quick.json")
    run_script("pipeline_cost.py", "--quick", "--recipe", tmp / "cost.yaml",
               "--out", tmp / "results" / "pipeline_cost_quick.json")
    return tmp


def test_peers_results(bench_dir):
    d = json.loads((bench_dir / "results" / "peers_quick.json").read_text())
    assert d["quick"] and d["method"]["repeats"] == REPEATS and d["environment"]["cores"] >= 1
    assert len(d["environment"]["loadavg"]) == 3 and len(d["loadavg_before_measuring"]) == 3
    share = d["cpu_while_measuring"]  # the measurement's own subprocesses count as its own, not as others'
    assert share["own_cpu_s"] > 0 and share["others_cpu_s"] >= 0 and share["wall_s"] > 0
    rows = {(r["format"], r["flow"]): r for r in d["rows"]}
    assert set(rows) == {(f, k) for f in ("onnx", "openvino", "tflite") for k in ("fp32", "edgeship", "peer")}
    info = d["models"]["digits"]
    n_test = info["data_sizes"]["test"]
    assert info["compressed"]["macs"] <= 0.5 * info["fp32"]["macs"] + 1
    for key, r in rows.items():
        assert r["status"] == "ok", (key, r.get("error"))
        assert r["verify"]["n"] == n_test and 0.0 <= r["top1"] <= 1.0 and r["size_bytes"] > 0
        p50s = r["p50_repeats"]["1"]
        assert len(p50s) == REPEATS and all(v > 0 for v in p50s), (key, r.get("measure_errors"))
        assert r["p50_ms"]["1"] == pytest.approx(statistics.median(p50s), abs=1e-4)
        assert r["peak_rss_mb"] > 0
    for fmt in ("onnx", "openvino", "tflite"):
        fp32, ours, peer = (rows[(fmt, k)] for k in ("fp32", "edgeship", "peer"))
        assert fp32["verify"]["agreement"] == 1.0  # same FP32 model, the same answers on each runtime
        if fmt != "openvino":  # an IR's XML (and per-layer scales) outweighs this tiny model's weights
            assert ours["size_bytes"] < fp32["size_bytes"] / 2  # pruned and int8
        assert fp32["speedup_vs_fp32"]["1"] is None and peer["speedup_vs_peer"]["1"] is None
        ratios = [a / b for a, b in zip(fp32["p50_repeats"]["1"], ours["p50_repeats"]["1"])]
        assert ours["speedup_vs_fp32"]["1"] == pytest.approx(statistics.median(ratios), rel=1e-3)
        ratios = [a / b for a, b in zip(peer["p50_repeats"]["1"], ours["p50_repeats"]["1"])]
        assert ours["speedup_vs_peer"]["1"] == pytest.approx(statistics.median(ratios), rel=1e-3)
    bars = {b["format"]: b for b in d["bars"]}
    assert set(bars) == {"onnx", "openvino", "tflite"}
    for _fmt, b in bars.items():
        assert b["faster_2_5x_than_fp32"] == (b["speedup_vs_fp32"]["1"] >= 2.5)
        assert b["within_0_5pt_of_fp32"] == (b["drop_vs_fp32_pt"] <= 0.5)
        assert b["met"] == all(b[k] for k in ("faster_2_5x_than_fp32", "faster_1_3x_than_peer",
                                              "top1_at_least_peer", "within_0_5pt_of_fp32"))


def test_peer_artifacts_are_integer_models(bench_dir):
    """The peers' flows really quantized: QDQ nodes in the ONNX file, int8 tensors in the TFLite one,
    FakeQuantize in the OpenVINO IR."""
    import onnx

    peers = bench_dir / "work" / "digits_peers"
    ops = {n.op_type for n in onnx.load(str(peers / "peer-onnx" / "model.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert "FakeQuantize" in (peers / "peer-openvino" / "model.xml").read_text()
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(peers / "peer-tflite" / "model.tflite"))
    assert it.get_input_details()[0]["dtype"] == np.int8 and it.get_output_details()[0]["dtype"] == np.int8
    assert json.loads((peers / "peer-tflite" / "model.json").read_text())["format"] == "tflite"


def test_pipeline_cost_results(bench_dir):
    d = json.loads((bench_dir / "results" / "pipeline_cost_quick.json").read_text())
    e = d["export"]
    assert e["exit_code"] == 0 and e["wall_s"] > 0 and e["samples"] > 0
    assert e["peak_rss_mb_largest_process"] > 50 and e["peak_pss_mb_tree_sampled"] > 50
    names = [s["stage"] for s in e["stages"]]
    assert names[0].startswith("load") and names[-1].startswith("budget")
    assert [n for n in names if n.startswith("pass")] == ["pass 1:prune", "pass 2:distill", "pass 3:qat"]
    assert "target onnx-int8 (lower + verify)" in names and "measure onnx-int8 on the host" in names
    assert "size reference: FP32 onnx of the input model" in names
    for a, b in zip(e["stages"], e["stages"][1:]):  # contiguous intervals covering the whole run
        assert a["end_s"] == b["start_s"]
    assert e["stages"][-1]["end_s"] == pytest.approx(e["wall_s"], abs=0.02)
    assert all(s["peak_pss_mb"] is None or s["peak_pss_mb"] > 0 for s in e["stages"])
    assert [p["stage"] for p in d["recorded_by_export"]["passes"]] == ["1:prune", "2:distill", "3:qat"]
    assert not any(p["cached"] for p in d["recorded_by_export"]["passes"])  # a fresh stage cache
    assert d["met"]["ram"] == (max(e["peak_rss_mb_largest_process"], e["peak_pss_mb_tree_sampled"]) < 4096)
    sizes = d["recorded_by_export"]["artifact_sizes"]
    assert set(sizes) == {t["name"] for t in d["targets"]}
    onnx_bytes = sizes["onnx-int8"]["onnx_bytes"]  # the QAT model's QDQ file: int8 weights, float scales
    assert onnx_bytes["int8_weights"] > 0 and onnx_bytes["float"] > 0
    assert 0 < onnx_bytes["graph_names_metadata"] < sizes["onnx-int8"]["size_bytes"]
    ratios = sizes["onnx-int8"]["size_vs_fp32"]  # export's own, against FP32 ONNX of the input/compressed model
    assert 0 < ratios["input_model"] < ratios["compressed_model"] < 1
    refs = d["recorded_by_export"]["size_references"]["onnx"]
    assert refs["input_model"] > refs["compressed_model"]
    bar = d["size_bar"]
    assert set(bar["targets"]) == {t["name"] for t in d["targets"] if t["precision"] == "int8"}
    assert bar["met"] == all(r["input_model"] <= 1 / 3.5 for r in bar["targets"].values())


def test_make_report_renders_both(bench_dir, tmp_path):
    out = tmp_path / "BENCHMARKS.md"
    run_script("make_report.py", "--results", bench_dir / "results", "--out", out)
    text = out.read_text()
    for runtime in ("ONNX Runtime", "OpenVINO", "LiteRT (TFLite)"):
        for flow in ("FP32 unpruned", "edgeship (the recipe's passes, INT8)", "peer default INT8"):
            assert f"| {runtime} | {flow} |" in text
    assert "QUICK run" in text and "| pass 2:distill |" in text and "Bar: under 5 minutes:" in text
    assert text.count("| digits | ") == 3 and ("**met**" in text or "**missed**" in text)


def test_make_report_sweep_table(bench_dir, tmp_path):
    """A peers.py run filed under results/sweep/ becomes one row per format, its passes summarized."""
    import shutil

    results = tmp_path / "results"
    (results / "sweep").mkdir(parents=True)
    shutil.copy(bench_dir / "results" / "peers_quick.json", results / "peers_quick.json")
    shutil.copy(bench_dir / "results" / "peers_quick.json", results / "sweep" / "variant_a.json")
    out = tmp_path / "BENCHMARKS.md"
    run_script("make_report.py", "--results", results, "--out", out)
    text = out.read_text()
    assert "## Depth and width sweep" in text
    rows = [line for line in text.splitlines() if line.startswith("| `variant_a.json` |")]
    assert [r.split(" | ")[4] for r in rows] == ["onnx", "openvino", "tflite"]
    assert all(" | prune 0.5/4, KD 1 | " in r and r.endswith(" of 4 |") for r in rows)


def test_make_report_without_results(tmp_path):
    p = subprocess.run([sys.executable, str(SCRIPTS / "make_report.py"), "--results", str(tmp_path),
                        "--out", str(tmp_path / "B.md")], capture_output=True, text=True, cwd=REPO)
    assert p.returncode == 2 and "run benchmarks/peers.py" in p.stderr and not (tmp_path / "B.md").exists()
