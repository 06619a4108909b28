"""benchmarks/prelu_split.py: ONNX Runtime INT8 files with a convolution's PReLU split by sign against the PReLU left
float (real quantization, real subprocess timings side by side), on one layer of each kind the rule decides and on
MTCNN's pretrained R-Net (calibrated and on the QAT route), written and rendered. Behaviour only: no assertion on a
time or a ratio's size."""

from __future__ import annotations

import json
import sys

import pytest
from benchtest import SCRIPTS, run_script

pytestmark = pytest.mark.slow


def test_prelu_split_times_split_against_float_and_checks_outputs(tmp_path):
    out = tmp_path / "prelu_split.json"
    run_script("prelu_split.py", "--repeats", 1, "--layers", "stem3x3_3to16_96", "conv3x3_64_24", "dw3x3_32_48",
               "--models", "mtcnn_rnet", "--out", out)
    d = json.loads(out.read_text())
    rows = {r["layer"]: r for r in d["layers"]}
    assert list(rows) == ["stem3x3_3to16_96", "conv3x3_64_24", "dw3x3_32_48"]
    assert [rows[k]["extra_macs_per_element"] for k in rows] == [27 + 32, 576 + 128, 9 + 64]
    assert [rows[k]["shipped_rule_splits"] for k in rows] == [True, False, False]  # too costly; grouped
    assert all(r["split"] == {"none": 0, "all": 1} for r in rows.values())
    for r in rows.values():
        for t in ("1", "2"):
            ratio, p50 = r[t]["p50_over_none"]["all"], r[t]["p50_ms"]
            assert ratio["min"] <= ratio["median"] <= ratio["max"] and p50["none"] > 0 and p50["all"] > 0
    (m,) = d["models"]
    assert m["model"] == "mtcnn_rnet" and m["split"] == {"shipped": 1, "none": 0, "all": 3}  # conv1's alone pays
    assert set(m["outputs_vs_fp32"]) == {"shipped", "none", "all"}
    assert all(0 <= o["face_call_agreement"] <= 1 and o["mean_abs"] <= o["max_abs"]
               for o in m["outputs_vs_fp32"].values())
    assert set(m["1"]["p50_over_shipped"]) == {"none", "all", "fp32"}
    (q,) = d["qat"]  # the QAT route: R-Net's first PReLU split on the fake-quantized graph too
    assert q["model"] == "mtcnn_rnet" and q["split"] == {"shipped": 1, "none": 0}
    assert set(q["outputs"]) == {"shipped", "none"} and set(q["2"]["p50_over_shipped"]) == {"none", "fp32"}
    assert all(0 < o["mean_abs_vs_qat_torch"] < o["mean_abs_vs_fp32"] and 0 <= o["face_call_agreement_vs_fp32"] <= 1
               for o in q["outputs"].values())
    sys.path.insert(0, str(SCRIPTS))
    import make_report

    d["_file"] = out.name
    text = "\n".join(make_report.prelu_split_section(d))
    assert "| conv3x3_64_24 (64x24x24, groups 1) | 704 | no |" in text and "| mtcnn_rnet 24x24 | 1 / 3 | 1 |" in text
    assert "QAT route" in text and "| mtcnn_rnet 24x24 | 1 | 2 |" in text
