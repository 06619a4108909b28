"""benchmarks/speed_ratio.py: export's side-by-side INT8/FP32 ratio against two separately timed processes, on a
pretrained MTCNN P-Net at 288 x 384 (real ONNX Runtime, real subprocess measurements), written and rendered.
Behaviour only: no assertion on a time or a ratio's size."""

from __future__ import annotations

import json
import statistics
import sys

import pytest
from benchtest import SCRIPTS, run_script

pytestmark = pytest.mark.slow


def test_speed_ratio_times_both_ways_quiet_and_busy(tmp_path):
    out = tmp_path / "speed_ratio.json"
    run_script("speed_ratio.py", "--repeats", 2, "--models", "mtcnn_pnet_288x384", "--out", out)
    d = json.loads(out.read_text())
    (row,) = d["rows"]
    assert row["pair"] == "mtcnn_pnet_288x384/onnx" and row["input"] == [3, 288, 384]
    reference = row["quiet_side"]["median"]
    for key in ("quiet_side", "quiet_separate", "busy_side", "busy_separate"):
        s = row[key]
        assert len(s["ratios"]) == 2 and all(v > 0 for v in s["ratios"])
        assert s["median"] == pytest.approx(statistics.median(s["ratios"]), abs=1e-4)
        assert s["spread_pct"] == pytest.approx(100 * (max(s["ratios"]) / min(s["ratios"]) - 1), abs=0.1)
        assert s["max_off_quiet_side_pct"] == pytest.approx(
            100 * max(abs(v / reference - 1) for v in s["ratios"]), abs=0.2)
    assert [x["condition"] for x in d["log"]] == ["quiet", "busy"] * 2
    sys.path.insert(0, str(SCRIPTS))
    import make_report

    d["_file"] = out.name
    text = "\n".join(make_report.speed_ratio_section(d))
    assert f"| mtcnn_pnet_288x384/onnx | busy | {row['busy_side']['median']:.2f}x" in text
