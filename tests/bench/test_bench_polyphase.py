"""benchmarks/polyphase.py and benchmarks/hardswish_onnx.py: real lowerings with each rewrite and without, real
subprocess timings side by side, written and rendered. Behaviour only: no assertion on a time or a ratio's size."""

from __future__ import annotations

import json
import sys

import pytest
from benchtest import SCRIPTS, run_script

pytestmark = pytest.mark.slow


def _report():
    sys.path.insert(0, str(SCRIPTS))
    import make_report

    return make_report


def test_polyphase_sweep_times_every_target_with_and_without(tmp_path):
    out = tmp_path / "polyphase.json"
    run_script("polyphase.py", "--repeats", 1, "--parts", "sweep", "--taps", 16, "--out", out)
    d = json.loads(out.read_text())
    rows = d["sweep"]["rows"]
    assert [r["target"] for r in rows] == ["onnx-fp32", "onnx-int8", "openvino-fp16", "openvino-int8",
                                           "tflite-fp32", "tflite-int8"] and "crepe" not in d
    assert all(r["taps_per_phase"] == 16 and r["plain_over_rewritten_1"] > 0 and r["rewritten_ms_2"] > 0
               for r in rows)
    d["_file"] = out.name
    text = "\n".join(_report().polyphase_section(d))
    assert "| taps per phase | onnx-fp32 |" in text and "\n| 16 | " in text


def test_hardswish_onnx_times_the_rewrite_against_the_float_operators(tmp_path):
    out = tmp_path / "hardswish_onnx.json"
    run_script("hardswish_onnx.py", "--repeats", 1, "--parts", "network", "--out", out)
    d = json.loads(out.read_text())
    f = d["files"]
    assert f["rewritten"]["float_ops"] == ["ReduceMean"] and f["float"]["float_ops"] == ["HardSigmoid", "ReduceMean"]
    assert f["rewritten"]["op_counts"]["QLinearAdd"] == f["float"]["op_counts"]["HardSigmoid"] + 1 == 12
    assert "pretrained" not in d
    for t in ("1", "2"):
        assert set(d[t]["p50_over_rewritten"]) == {"float", "fp32"} and all(v > 0 for v in d[t]["p50_ms"].values())
    d["_file"] = out.name
    text = "\n".join(_report().hardswish_onnx_section(d))
    assert "| rewritten | 12 | 1 (ReduceMean) |" in text and "| float | 1 | 12 (HardSigmoid, ReduceMean) |" in text
