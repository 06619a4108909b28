"""targets/onnx.compact: the file shrinks, the outputs do not change by a bit."""

import shutil

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from edgeship.targets.onnx import compact, export_onnx


class FakeQuantNet(nn.Module):
    """Two per-channel fake-quantized convolutions: the exporter writes their scales and zero points as
    Constant nodes, the zero-point vectors identical."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        for conv in (self.a, self.b):
            scale = conv.weight.detach().abs().amax((1, 2, 3)) / 127
            w = torch.fake_quantize_per_channel_affine(conv.weight, scale, torch.zeros(8, dtype=torch.int32), 0,
                                                       -128, 127)
            x = torch.relu(nn.functional.conv2d(x, w, conv.bias, padding=1))
        return x.mean((2, 3))


def _run(path, x):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


def test_compact_shrinks_and_keeps_outputs(tmp_path):
    torch.manual_seed(0)
    path = export_onnx(FakeQuantNet().eval(), torch.randn(1, 1, 12, 12), tmp_path / "m.onnx", tmp_path / "log")
    original = tmp_path / "original.onnx"
    shutil.copy(path, original)
    before = onnx.load(str(original))
    assert any(n.op_type == "Constant" for n in before.graph.node)

    compact(path)
    after = onnx.load(str(path))
    x = np.random.default_rng(0).random((4, 1, 12, 12), np.float32)
    np.testing.assert_array_equal(_run(path, x), _run(original, x))
    assert path.stat().st_size < original.stat().st_size
    assert not any(n.op_type == "Constant" for n in after.graph.node)
    assert len(after.graph.initializer) < (sum(n.op_type == "Constant" for n in before.graph.node)
                                           + len(before.graph.initializer))
    assert [i.name for i in after.graph.input] == ["input"] and [o.name for o in after.graph.output] == ["logits"]
    convs = lambda m: [n.name for n in m.graph.node if n.op_type == "Conv"]  # noqa: E731
    assert convs(after) == convs(before)  # computing nodes keep their names for the op audit
