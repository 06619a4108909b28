"""benchmarks/hardswish_tflite.py: LiteRT INT8 files of a MobileNetV3-like network with hard swish fused (one
HARD_SWISH, outside XNNPACK) and unfused (ADD and MULs, inside), real conversion and real subprocess timings side by
side, written and rendered. Behaviour only: no assertion on a time or a ratio's size."""

from __future__ import annotations

import json
import sys

import pytest
from benchtest import SCRIPTS, run_script

pytestmark = pytest.mark.slow


def test_hardswish_tflite_times_fused_against_unfused(tmp_path):
    out = tmp_path / "hardswish_tflite.json"
    run_script("hardswish_tflite.py", "--repeats", 1, "--parts", "network", "--out", out)
    d = json.loads(out.read_text())
    f = d["files"]
    assert "HARD_SWISH" not in f["unfused"]["op_counts"] and f["unfused"]["not_delegated"] == 0
    assert f["fused"]["op_counts"]["HARD_SWISH"] == f["fp32"]["op_counts"]["HARD_SWISH"] == 11
    assert f["fused"]["not_delegated"] == 11 and f["fp32"]["not_delegated"] == 0
    assert set(d["outputs_vs_fp32"]) == {"unfused", "fused"} and "pretrained" not in d
    assert all(0 <= o["top1_agreement"] <= 1 and o["relative_error"] >= 0 for o in d["outputs_vs_fp32"].values())
    for t in ("1", "2"):
        assert set(d[t]["p50_over_unfused"]) == {"fused", "fp32"} and all(v > 0 for v in d[t]["p50_ms"].values())
        r = d[t]["p50_over_unfused"]["fused"]
        assert r["min"] <= r["median"] <= r["max"]
    sys.path.insert(0, str(SCRIPTS))
    import make_report

    d["_file"] = out.name
    text = "\n".join(make_report.hardswish_section(d))
    assert "| unfused | ADD 12, MUL 22 | 0 |" in text and "| fused | HARD_SWISH 11, ADD 1 | 11 |" in text
