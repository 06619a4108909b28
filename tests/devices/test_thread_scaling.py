"""Thread scaling timed in one process (bench_runner --thread-counts): one artifact at 1 and 2 threads, alternating
rounds, on the real runtimes."""

from __future__ import annotations

import statistics
import subprocess
import sys

import pytest

from edgeship.devices.measure import RUNNER, RunArtifact, measure_thread_scaling


@pytest.fixture(scope="module")
def arts(tmp_path_factory) -> dict[str, RunArtifact]:
    import torch

    from edgeship.devices.calibrate import lower

    tmp = tmp_path_factory.mktemp("scaling")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(16, 16, 3),
                                torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                torch.nn.Linear(16, 10)).eval()
    out = {}
    for fmt in ("onnx", "openvino", "tflite"):
        d = lower(model, (3, 32, 32), fmt, "fp32", tmp / fmt / "art", fmt, tmp / fmt)
        out[fmt] = RunArtifact(fmt, "host", fmt, "fp32", d, [], "")
    return out


@pytest.mark.parametrize("fmt", ["onnx", "openvino", "tflite"])
def test_one_process_times_both_thread_counts_in_alternating_rounds(arts, fmt):
    raw = measure_thread_scaling(arts[fmt], [1, 2], rounds=4, runs=3, warmup=1)
    assert raw["thread_counts"] == [1, 2] and raw["format"] == fmt
    one, two = raw["results"]["1"], raw["results"]["2"]
    for r in (one, two):
        assert r["runs"] == 12 and len(r["round_p50_ms"]) == 4 and r["p50_ms"] > 0
    # the scaling is the median of the per-round ratios, not a ratio of the overall p50s
    ratios = [a / b for a, b in zip(one["round_p50_ms"], two["round_p50_ms"])]
    assert raw["scaling"]["2"] == pytest.approx(statistics.median(ratios), rel=1e-3)


def test_thread_counts_need_two_counts_and_one_artifact(arts, tmp_path):
    with pytest.raises(ValueError, match="two different thread counts"):
        measure_thread_scaling(arts["onnx"], [2, 2])
    p = subprocess.run([sys.executable, str(RUNNER), "--many", str(tmp_path), "--thread-counts", "1", "2"],
                       capture_output=True, text=True)
    assert p.returncode == 4 and "--thread-counts (each >= 1) times one --dir artifact" in p.stdout
