"""A large PReLU reaches ONNX Runtime as Relu(x) + slope * Min(x, 0) (``targets.onnx_prelu``): the same function
bit for bit, a time that does not follow its input's signs, read by the predictor as the PReLU it replaces."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import helper, numpy_helper

from edgeship.devices.calibrate import lower
from edgeship.devices.in_context import kernel_times
from edgeship.devices.kernels import Kernel, read
from edgeship.devices.layer_profile import ort_layers
from edgeship.targets.onnx import export_onnx
from edgeship.targets.onnx_prelu import MARK, MIN_ELEMENTS, tile_slopes, vectorize_prelu


def _session(path, profile: bool = False) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.enable_profiling = 1, profile
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _prelu_graph(path, slopes: dict[str, np.ndarray], shape: list[int]) -> None:
    """x -> PRelu(slope) for each slope in turn: a chain over one (1, C, H, W) map."""
    nodes, inits, x = [], [], "x"
    for name, s in slopes.items():
        inits.append(numpy_helper.from_array(s.astype(np.float32), f"{name}_s"))
        nodes.append(helper.make_node("PRelu", [x, f"{name}_s"], [f"{name}_y"], name=name))
        x = f"{name}_y"
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, shape)],
                          [helper.make_tensor_value_info(x, onnx.TensorProto.FLOAT, shape)], inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_the_rewrite_is_the_same_function_bit_for_bit_for_any_slope(tmp_path):
    """Per-channel slopes below 0, between 0 and 1 and above 1 (MTCNN's trained slopes span -1.3 to 1.3), a
    shared one, over inputs of both signs, zeros and infinities: ONNX Runtime's outputs of the rewritten graph
    equal its PRelu's exactly; a PReLU over fewer than MIN_ELEMENTS is left as it is."""
    c = 32
    per_channel = np.linspace(-1.3, 1.3, c).reshape(c, 1, 1)
    _prelu_graph(tmp_path / "big.onnx", {"a": per_channel, "b": np.array([0.25])}, [1, c, 24, 24])
    _prelu_graph(tmp_path / "small.onnx", {"a": per_channel}, [1, c, 8, 8])
    original = {p: _session(tmp_path / p) for p in ("big.onnx", "small.onnx")}
    assert len(vectorize_prelu(tmp_path / "big.onnx")) == 8  # two PReLUs of 24 * 24 * 32 = 18432 elements
    assert c * 24 * 24 >= MIN_ELEMENTS > c * 8 * 8
    assert vectorize_prelu(tmp_path / "small.onnx") == []
    ops = [n.op_type for n in onnx.load(str(tmp_path / "big.onnx")).graph.node]
    assert ops == ["Relu", "Min", "Mul", "Add"] * 2
    rng = np.random.default_rng(0)
    for name, shape in (("big.onnx", (1, c, 24, 24)), ("small.onnx", (1, c, 8, 8))):
        x = rng.standard_normal(shape).astype(np.float32)
        x.flat[:4] = [0.0, -0.0, np.inf, -np.inf]
        want = original[name].run(None, {"x": x})[0]
        got = _session(tmp_path / name).run(None, {"x": x})[0]
        finite = np.isfinite(want)  # (ONNX Runtime's PRelu gives NaN for an infinity: onnxruntime issue 28489)
        assert np.array_equal(got[finite], want[finite]), name
        assert np.isinf(got.flat[2]) and got.flat[2] > 0


@pytest.mark.slow
def test_mtcnn_onet_prelus_run_vectorized_in_both_onnx_artifacts_and_read_as_prelus(tmp_path):
    """MTCNN's pretrained output network (facenet-pytorch's weights) at its 48 x 48 input: its two PReLUs over
    46 x 46 x 32 and 21 x 21 x 64 maps are rewritten (the three smaller ones are not), in the FP32 artifact and,
    kept float, in the INT8 one; the outputs match torch's; the kernel reader gives the same element-wise kernels as
    from the graph with PRelu nodes; ONNX Runtime's counters of the rewritten nodes give each of those two PReLUs its
    time (in_context.kernel_times), as one row."""
    from benchmarks.zoo.models import mtcnn_onet

    model = mtcnn_onet().eval()
    x = torch.rand(1, 3, 48, 48) * 2 - 1
    with torch.no_grad():
        want = [t.numpy() for t in model(x)]
    plain = export_onnx(model, x, tmp_path / "plain.onnx", tmp_path / "export.log")
    plain_kernels = read(plain, "onnx")
    assert sum(n.op_type == "PRelu" for n in onnx.load(str(plain)).graph.node) == 5
    for precision, tol in (("fp32", 1e-4), ("int8", 0.1)):
        d = lower(model, (3, 48, 48), "onnx", precision, tmp_path / precision, "onet", tmp_path / f"w{precision}")
        graph = onnx.load(str(d / "model.onnx")).graph
        marked = [n for n in graph.node if MARK in n.name]
        tiles = ["Expand"] if precision == "int8" else []  # tile_slopes: INT8 only
        assert sorted(n.op_type for n in marked) == sorted(["Relu", "Min", "Mul", "Add", *tiles] * 2), precision
        assert sum(n.op_type == "PRelu" for n in graph.node) == 3
        if precision == "int8":  # kept float: no quantize or dequantize between the rewritten nodes
            made = {o: n.op_type for n in graph.node for o in n.output}
            assert all(made.get(i) in (None, "Relu", "Min", "Mul", "Expand") for n in marked
                       if n.op_type in ("Mul", "Add") for i in n.input)
        ks, unmodelled = read(d / "model.onnx", "onnx")
        assert unmodelled == {} and Counter(k.type for k in ks) == Counter(k.type for k in plain_kernels[0])
        assert Counter(k for k in ks if k.type == "eltwise") == Counter(k for k in plain_kernels[0]
                                                                         if k.type == "eltwise"), precision
        sess = _session(d / "model.onnx", profile=True)
        got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
        for g, w in zip(got, want):
            assert np.abs(g - w).max() <= tol * max(1.0, np.abs(w).max()), precision
        for _ in range(5):
            sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
        times = kernel_times(ks, ort_layers(sess)[1], "onnx")
        big = [i for i, k in enumerate(ks) if k.type == "eltwise" and k.hin * k.win * k.cin >= MIN_ELEMENTS]
        assert [ks[i] for i in big] == [Kernel("eltwise", 46, 46, 32, 32, 1), Kernel("eltwise", 21, 21, 64, 64, 1)]
        assert all((times[i] or 0) > 0 for i in big), (precision, times)


@pytest.mark.slow
def test_int8_slopes_are_repeated_along_the_width_as_the_session_loads(tmp_path):
    """MTCNN P-Net (pretrained) at 48 x 64 in an INT8 file: its two PReLUs over 16384 elements or more (10 x 46 x 62,
    32 x 19 x 27) get their slopes through an Expand to 1 x C x 1 x W, which the file stores as C values and ONNX
    Runtime folds as it loads (no Expand left in its optimized graph: the channels-last Mul then broadcasts over H
    alone); the outputs equal those of the same file with the slopes as they were, bit for bit; the FP32 file keeps
    them untouched."""
    import shutil

    from benchmarks.zoo.models import mtcnn_pnet

    model = mtcnn_pnet().eval()
    d = lower(model, (3, 48, 64), "onnx", "int8", tmp_path / "int8", "pnet", tmp_path / "w8")
    m = onnx.load(str(d / "model.onnx"))
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    expands = [n for n in m.graph.node if n.op_type == "Expand"]
    # (46 x 62 positions: under onnx_align.NARROW_MIN_POSITIONS, so the first convolution keeps its 10 channels)
    assert [inits[n.input[1]].tolist() for n in expands] == [[1, 10, 1, 62], [1, 32, 1, 27]]
    assert [inits[n.input[0]].size for n in expands] == [10, 32]
    assert "2 slope(s) repeated along the width" in json.loads((d / "model.json").read_text())["meta"]["route"]
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(d / "model.onnx"), so, providers=["CPUExecutionProvider"])
    assert not any(n.op_type == "Expand" for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node)
    # the same file, the slopes as they were
    for n in expands:
        mul = next(c for c in m.graph.node if n.output[0] in c.input)
        mul.input[1] = n.input[0]
    for n in expands:
        m.graph.node.remove(n)
    onnx.save(m, str(tmp_path / "untiled.onnx"))
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 48, 64)).astype(np.float32)
    got, want = (_session(p).run(None, {"input": x}) for p in (d / "model.onnx", tmp_path / "untiled.onnx"))
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    assert tile_slopes(tmp_path / "untiled.onnx") == 2  # and the function itself tiles them again
    f = lower(model, (3, 48, 64), "onnx", "fp32", tmp_path / "fp32", "pnet", tmp_path / "w32")
    shutil.copyfile(f / "model.onnx", tmp_path / "fp32.onnx")
    assert not any(n.op_type == "Expand" for n in onnx.load(str(tmp_path / "fp32.onnx")).graph.node)
