"""Hard sigmoids (and the hard swishes written with them) of an ONNX INT8 file run as ONNX Runtime's int8 Add
(``targets.onnx_hardswish``), where its quantizer leaves them float between a DequantizeLinear and a QuantizeLinear;
the kernel reader and the in-context counters read the rewrite as the HardSigmoid it replaces."""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import onnxruntime as ort
import torch

from edgeship.devices.calibrate import lower
from edgeship.devices.in_context import kernel_times
from edgeship.devices.kernels import read
from edgeship.devices.layer_profile import ort_layers
from edgeship.targets import onnx_hardswish
from edgeship.targets.onnx_hardswish import MARK, int8_hardswish
from edgeship.targets.onnx_int8 import float_ops


class _HardSwishNet(torch.nn.Module):
    """A MobileNetV3-like block: hard swishes after batch norms of spread ranges, a squeeze-excite gate."""

    def __init__(self):
        super().__init__()
        nn = torch.nn
        self.c1, self.b1 = nn.Conv2d(3, 32, 3, 2, 1), nn.BatchNorm2d(32)
        self.dw, self.b2 = nn.Conv2d(32, 32, 3, 1, 1, groups=32), nn.BatchNorm2d(32)
        self.se1, self.se2 = nn.Conv2d(32, 8, 1), nn.Conv2d(8, 32, 1)
        self.pw, self.head = nn.Conv2d(32, 24, 1), nn.Conv2d(24, 10, 1)
        with torch.no_grad():
            for b in (self.b1, self.b2):
                b.running_mean.uniform_(-1, 1), b.running_var.uniform_(0.5, 2)
                b.weight.uniform_(0.5, 2), b.bias.uniform_(-1, 1)

    def forward(self, x):
        f = torch.nn.functional
        x = f.hardswish(self.b1(self.c1(x)))
        x = f.hardswish(self.b2(self.dw(x)))
        gate = f.hardsigmoid(self.se2(torch.relu(self.se1(f.adaptive_avg_pool2d(x, 1)))))
        x = f.hardswish(self.pw(x * gate))
        return self.head(f.adaptive_avg_pool2d(x, 1)).flatten(1)


def _outputs(path, x: np.ndarray) -> np.ndarray:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return np.concatenate([s.run(None, {s.get_inputs()[0].name: xi[None]})[0] for xi in x])


def test_hard_sigmoids_run_as_int8_adds_with_the_outputs_of_the_float_ones(tmp_path, monkeypatch):
    """Each of the network's four HardSigmoid nodes (three hard swishes, one gate) becomes an int8 Add ONNX Runtime
    fuses: no operator of its optimized graph computes in float (four did with the rewrite off), the route says so,
    the outputs are as near torch's as those with the float operators (mean difference within 1.1x on 64 inputs),
    the kernel reader reads the same kernels, and the profiler's rows of each rewrite give its kernel a time."""
    torch.manual_seed(0)
    model = _HardSwishNet().eval()
    d = lower(model, (3, 64, 64), "onnx", "int8", tmp_path / "int8", "hs", tmp_path / "w")
    monkeypatch.setattr(onnx_hardswish, "ENABLED", False)
    kept = lower(model, (3, 64, 64), "onnx", "int8", tmp_path / "kept", "hs", tmp_path / "wk")
    graph = onnx.load(str(d / "model.onnx")).graph
    assert not any(n.op_type == "HardSigmoid" for n in graph.node)
    assert sum(n.name.endswith(MARK + "add") for n in graph.node) == 4
    assert sum(n.op_type == "HardSigmoid" for n in onnx.load(str(kept / "model.onnx")).graph.node) == 4
    assert float_ops(d / "model.onnx")["n_float_ops"] == 0
    assert float_ops(kept / "model.onnx")["n_float_ops"] == 4
    assert "4 HardSigmoid (hard swish: Mul(x, HardSigmoid(x))) rewritten as an int8 Add" in (
        (d / "model.json").read_text())
    x = torch.rand(64, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        want = model(x).numpy()
    err = {p: float(np.abs(_outputs(p / "model.onnx", x.numpy()) - want).mean()) for p in (d, kept)}
    assert err[d] <= 1.1 * err[kept], err
    ks, unmodelled = read(d / "model.onnx", "onnx")
    assert (ks, unmodelled) == read(kept / "model.onnx", "onnx")
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.enable_profiling = 1, True
    sess = ort.InferenceSession(str(d / "model.onnx"), so, providers=["CPUExecutionProvider"])
    for xi in x[:5].numpy():
        sess.run(None, {sess.get_inputs()[0].name: xi[None]})
    times = kernel_times(ks, ort_layers(sess)[1], "onnx")
    gates = [i for i, k in enumerate(ks) if k.type == "eltwise"]
    assert len(gates) == 4 and all((times[i] or 0) > 0 for i in gates), times


def test_what_the_recipe_keeps_float_stays_float(tmp_path, monkeypatch):
    """A HardSigmoid named in ``keep`` (a recipe's float layer) or every one with the type kept (its float_ops)
    is left as the quantizer left it; a second pass finds nothing more."""
    torch.manual_seed(0)
    d = lower(_HardSwishNet().eval(), (3, 32, 32), "onnx", "int8", tmp_path / "int8", "hs", tmp_path / "w")
    assert int8_hardswish(d / "model.onnx") == 0
    monkeypatch.setattr(onnx_hardswish, "ENABLED", False)
    kept = lower(_HardSwishNet().eval(), (3, 32, 32), "onnx", "int8", tmp_path / "k", "hs", tmp_path / "wk")
    monkeypatch.setattr(onnx_hardswish, "ENABLED", True)
    path = tmp_path / "float.onnx"
    shutil.copyfile(kept / "model.onnx", path)
    names = [n.name for n in onnx.load(str(path)).graph.node if n.op_type == "HardSigmoid"]
    assert len(names) == 4 and int8_hardswish(path, {"HardSigmoid"}) == 0
    assert "/HardSigmoid" in names  # the gate's (the hard swishes' the quantizer's pre-processing leaves unnamed)
    assert int8_hardswish(path, {"/HardSigmoid", ""}) == 3
    assert [n.name for n in onnx.load(str(path)).graph.node if n.op_type == "HardSigmoid"] == ["/HardSigmoid"]
