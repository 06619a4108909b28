"""A target's ``float_ops``: operator types, in the target format's own names, that its INT8 quantizer leaves float
(ONNX Runtime ``nodes_to_exclude``, NNCF ``IgnoredScope(types=...)``). The model: a spectrum-magnitude front
(sqrt(re^2 + im^2), as an STFT magnitude computes it) before the digits CNN, calibrated and run on the digits set."""

from __future__ import annotations

import copy

import onnx
import openvino as ov
import pytest
import torch
from pydantic import ValidationError
from template import context, digits_task

from edgeship.calibration.quant import QuantSettings
from edgeship.errors import TargetError
from edgeship.recipe import TargetSpec
from edgeship.targets.base import get_backend


class Magnitude(torch.nn.Module):
    """``sqrt(re(x)^2 + im(x)^2 + eps)`` (Pow, Add, Sqrt), then the trained digits CNN."""

    def __init__(self, trunk: torch.nn.Module):
        super().__init__()
        self.re = torch.nn.Conv2d(1, 1, 3, padding=1, bias=False)
        self.im = torch.nn.Conv2d(1, 1, 3, padding=1, bias=False)
        with torch.no_grad():  # re passes the image through, im adds a little of its neighbourhood
            self.re.weight.zero_()
            self.re.weight[0, 0, 1, 1] = 1.0
            self.im.weight.fill_(0.05)
        self.trunk = trunk

    def forward(self, x):
        return self.trunk(torch.sqrt(self.re(x) ** 2 + self.im(x) ** 2 + 1e-6))


def lower(tmp, fmt: str, float_ops: list[str]):
    ctx = context(tmp, fmt, "int8", QuantSettings())
    ctx.target = TargetSpec(name="t", format=fmt, precision="int8", float_ops=float_ops)
    (tmp / "out").mkdir()
    model = Magnitude(copy.deepcopy(digits_task()["model"])).eval()
    return model, get_backend(fmt, "int8").lower(model, ctx, tmp / "out")


def agreement(model, art, fmt: str) -> float:
    x = digits_task()["x_test"]
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy().argmax(1)
    out = get_backend(fmt, "int8").load(art, threads=1)(x)[0]
    return float((out.argmax(1) == ref).mean())


def onnx_inputs(path) -> dict[str, list[str]]:
    """Each Pow/Add/Sqrt node -> the op types producing its inputs (graph inputs and constants: their names)."""
    g = onnx.load(str(path)).graph
    producer = {o: n.op_type for n in g.node for o in n.output}
    return {n.name: [producer.get(i, "const") for i in n.input] for n in g.node if n.op_type in ("Pow", "Add", "Sqrt")}


def test_onnx_int8_keeps_float_ops_float(tmp_path):
    _, plain = lower(tmp_path / "plain", "onnx", [])
    before = onnx_inputs(plain.path)
    assert any("DequantizeLinear" in v for k, v in before.items() if "Add" in k or "Sqrt" in k)  # uint8 between
    model, art = lower(tmp_path / "kept", "onnx", ["Pow", "Add", "Sqrt"])
    after = onnx_inputs(art.path)
    assert len(after) >= 4
    # Pow reads the convolution's output; from there to Sqrt nothing is quantized
    assert all("DequantizeLinear" not in v and "QuantizeLinear" not in v for k, v in after.items() if "Pow" not in k)
    g = onnx.load(str(art.path)).graph
    producer = {o: n.op_type for n in g.node for o in n.output}
    assert all(producer.get(n.input[0]) == "DequantizeLinear" for n in g.node if n.op_type == "Conv")  # still INT8
    assert "kept float (float_ops Pow, Add, Sqrt)" in art.meta["route"]
    assert art.meta["runtime_config"] == {"disabled_optimizers": ["WeightBiasQuantization"]}
    assert agreement(model, art, "onnx") >= 0.95


def openvino_inputs(path) -> dict[str, list[str]]:
    om = ov.Core().read_model(str(path))
    return {op.get_friendly_name(): [i.get_source_output().get_node().get_type_name() for i in op.inputs()]
            for op in om.get_ordered_ops() if op.get_type_name() in ("Power", "Sqrt")}


def test_openvino_int8_keeps_float_ops_float(tmp_path):
    _, plain = lower(tmp_path / "plain", "openvino", [])
    assert all("FakeQuantize" in v for v in openvino_inputs(plain.path).values())  # NNCF quantizes them
    model, art = lower(tmp_path / "kept", "openvino", ["Power", "Sqrt"])
    after = openvino_inputs(art.path)
    assert len(after) == 3 and all("FakeQuantize" not in v for v in after.values())
    om = ov.Core().read_model(str(art.path))
    convs = [op for op in om.get_ops() if op.get_type_name() == "Convolution"]
    # the convolutions keep INT8 weights (i8 constant -> Convert -> Multiply by the scales)
    assert len(convs) == 5 and all(op.input_value(1).get_node().get_type_name() == "Multiply" for op in convs)
    assert "kept float (ignored_scope types): Power x2, Sqrt x1" in art.meta["route"]
    assert agreement(model, art, "openvino") >= 0.95


@pytest.mark.parametrize(("fmt", "ops", "missing", "listed"), [
    ("onnx", ["Sqrt", "Power"], "Power", "Pow"),  # OpenVINO's name on an ONNX target
    ("openvino", ["Pow"], "Pow", "Power"),
])
def test_a_type_the_graph_lacks_fails_the_target_listing_its_types(tmp_path, fmt, ops, missing, listed):
    with pytest.raises(TargetError, match=rf"float_ops {missing} not in the .*whose op types are .*\b{listed}\b") as e:
        lower(tmp_path, fmt, ops)
    assert "\n" not in str(e.value)
    assert list((tmp_path / "out").iterdir()) == []


def test_float_ops_only_on_int8_onnx_and_openvino():
    with pytest.raises(ValidationError, match="float_ops applies to int8 onnx and openvino targets, not tflite int8"):
        TargetSpec(name="t", format="tflite", precision="int8", float_ops=["Sqrt"])
    with pytest.raises(ValidationError, match="not onnx fp32"):
        TargetSpec(name="t", format="onnx", precision="fp32", float_ops=["Sqrt"])
    assert TargetSpec(name="t", format="openvino", precision="int8", float_ops=["Sqrt"]).float_ops == ["Sqrt"]
