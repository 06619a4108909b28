"""An ONNX file as a torch module (onnx2torch): what the TFLite targets and the passes of an ONNX-held model run."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import TensorProto, helper

from edgeship.models.onnx_import import ConstantReshape, torch_from_onnx


def reshaping_graph(path) -> None:
    """A TF-exported graph's pattern: NHWC (N, 6, 4, 1) reshaped to NCHW by a constant shape [-1, 1, 6, 4], a conv,
    then a constant shape with a 0 (ONNX: copy that axis) and a -1."""
    rng = np.random.default_rng(0)
    w = helper.make_tensor("w", TensorProto.FLOAT, [3, 1, 3, 3], rng.normal(size=27).astype(np.float32).tolist())
    s1 = helper.make_tensor("s1", TensorProto.INT64, [4], [-1, 1, 6, 4])
    s2 = helper.make_tensor("s2", TensorProto.INT64, [2], [0, -1])
    nodes = [helper.make_node("Reshape", ["x", "s1"], ["r"]),
             helper.make_node("Conv", ["r", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Reshape", ["c", "s2"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 6, 4, 1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 72])], [w, s1, s2])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def test_constant_reshape_shapes_are_folded_so_torch_export_traces_the_model(tmp_path):
    """onnx2torch's Reshape reads its shape tensor at run time, which torch.export (litert-torch) refuses as a
    data-dependent guard; shapes that are graph constants become Python ints, results unchanged."""
    reshaping_graph(tmp_path / "m.onnx")
    gm = torch_from_onnx(tmp_path / "m.onnx")
    assert sum(isinstance(m, ConstantReshape) for m in gm.modules()) == 2
    x = np.random.default_rng(1).normal(size=(5, 6, 4, 1)).astype(np.float32)
    want = ort.InferenceSession(str(tmp_path / "m.onnx")).run(None, {"x": x})[0]
    with torch.no_grad():
        got = gm(torch.from_numpy(x))
    assert np.abs(got.numpy() - want).max() < 1e-5
    program = torch.export.export(gm, (torch.from_numpy(x[:1]),))  # raised 'Could not guard on data-dependent ...'
    assert tuple(program.module()(torch.from_numpy(x[:1])).shape) == (1, 72)


def test_a_flatten_computed_from_the_input_shape_is_frozen_for_a_fixed_shape_export(tmp_path):
    """A Paddle/TF export's flatten: Shape -> Slice -> Concat -> Reshape. At the example's shape (litert-torch exports
    at batch 1) it becomes a constant reshape; torch.export then traces it and the values are unchanged."""
    import copy

    from edgeship.models.onnx_import import freeze_shapes

    ints = lambda name, v: helper.make_tensor(name, TensorProto.INT64, [len(v)], v)  # noqa: E731
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Slice", ["s", "zero", "one", "zero"], ["n"]),
             helper.make_node("Concat", ["n", "minus1"], ["shape"], axis=0),
             helper.make_node("Reshape", ["x", "shape"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 12])],
                              [ints("zero", [0]), ints("one", [1]), ints("minus1", [-1])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "f.onnx"))
    gm = torch_from_onnx(tmp_path / "f.onnx")
    x = torch.randn(1, 3, 4)
    frozen = copy.deepcopy(gm)
    assert freeze_shapes(frozen, (x,)) >= 1
    assert any(isinstance(m, ConstantReshape) for m in frozen.modules())
    assert torch.equal(frozen(x), gm(x)) and torch.equal(frozen(x), x.reshape(1, 12))
    torch.export.export(frozen, (x,))
    assert gm(torch.zeros(5, 3, 4)).shape == (5, 12)  # the original keeps its dynamic batch
