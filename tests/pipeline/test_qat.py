"""`qat`: the fake-quantized model exports to a clean QDQ graph that ONNX Runtime and OpenVINO run as
INT8 without a second calibration, and its helpers give the TFLite route the same weights and ranges."""

from __future__ import annotations

import io

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from models import ConcatNet
from onnx import numpy_helper

from edgeship.errors import EdgeshipError
from edgeship.models.load import model_stats
from edgeship.pipeline.qat import (
    QAT,
    ActQuant,
    QATConfig,
    activation_ranges,
    fold_and_strip,
    weight_max,
    weight_scale,
)
from edgeship.pipeline.training import evaluate, predict, top1
from edgeship.targets.onnx import export_onnx
from helpers import x86_has_vnni


@pytest.fixture
def qat_result(digits_ctx):
    model, ctx = digits_ctx
    out = QAT().run(model, QATConfig(epochs=2, lr=1e-3, calib_samples=256), ctx)
    return model, ctx, out


def test_qat_keeps_accuracy_and_says_qat(qat_result):
    model, ctx, out = qat_result
    assert out.quant.qat and out.quant.per_channel and out.quant.symmetric_weights
    assert out.metrics["quantized_layers"] == 4 and out.metrics["batch_norm"] == "folded"
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in out.model.modules())
    shape = ctx.input_shape
    assert model_stats(out.model, shape)["macs"] >= 0.95 * model_stats(model, shape)["macs"]  # convs still counted
    assert evaluate(out.model, ctx.data["val"]) >= evaluate(model, ctx.data["val"]) - 0.03
    torch.save(out.model, buf := io.BytesIO())  # the stage cache pickles whole modules
    buf.seek(0)
    again = torch.load(buf, weights_only=False)
    x = ctx.data["test"].x
    assert torch.equal(predict(again, x), predict(out.model, x))


def test_qat_exports_a_qdq_graph_onnxruntime_runs_as_int8(qat_result, tmp_path):
    _, ctx, out = qat_result
    x, y = ctx.data["test"].x, ctx.data["test"].y.numpy()
    path = export_onnx(out.model, x[:1], tmp_path / "qat.onnx", tmp_path / "export.log")
    g = onnx.load(str(path)).graph
    producer = {o: n for n in g.node for o in n.output}
    consumers = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    constants = {n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in g.node if n.op_type == "Constant"}
    compute = [n for n in g.node if n.op_type in ("Conv", "Gemm")]
    assert len(compute) == 4
    for n in compute:  # DequantizeLinear feeds input and weight; the weight is an int8 constant
        x_dq, w_dq = producer[n.input[0]], producer[n.input[1]]
        assert x_dq.op_type == w_dq.op_type == "DequantizeLinear", n.name
        group = next((a.i for a in n.attribute if a.name == "group"), 1)
        depthwise = group > 1 and group == constants[w_dq.input[0]].shape[0]
        assert constants[w_dq.input[0]].dtype == np.int8
        assert np.abs(constants[w_dq.input[0]]).max() == (127 if depthwise else 64), n.name  # 7-bit but depthwise
        assert constants[w_dq.input[1]].shape == (constants[w_dq.input[0]].shape[0],)  # per channel
        after = consumers[n.output[0]][0]
        if after.op_type in ("Relu", "Clip"):
            after = consumers[after.output[0]][0]
        assert after.op_type == "QuantizeLinear", n.name

    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node]
    assert ops.count("QLinearConv") == 3 and "QGemm" in ops and "Conv" not in ops and "Gemm" not in ops
    logits = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    torch_logits = predict(out.model, x).numpy()
    assert (logits.argmax(1) == torch_logits.argmax(1)).mean() >= 0.99
    assert abs(top1(logits, y) - top1(torch_logits, y)) <= 0.01


def test_openvino_runs_the_qdq_file_in_int8(qat_result, tmp_path):
    ov = pytest.importorskip("openvino")
    _, ctx, out = qat_result
    x = ctx.data["test"].x
    path = export_onnx(out.model, x[:1], tmp_path / "qat.onnx", tmp_path / "export.log")
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_NUM_THREADS": 1})
    convs = [op.get_rt_info()["runtimePrecision"].astype(str) for op in compiled.get_runtime_model().get_ops()
             if op.get_rt_info()["layerType"].astype(str) == "Convolution"]
    assert len(convs) == 3 and set(convs) <= {"u8", "i8"}, convs
    logits = compiled(x.numpy())[0]
    assert (logits.argmax(1) == predict(out.model, x).numpy().argmax(1)).mean() >= 0.98


def test_fold_and_strip_gives_the_learned_int8_weights_in_float(qat_result):
    _, ctx, out = qat_result
    plain = fold_and_strip(out.model)
    assert not any(isinstance(m, ActQuant) for m in plain.modules())
    assert all(type(m) in (torch.nn.Conv2d, torch.nn.Linear) for m in plain.modules()
               if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))
    for m in plain.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            w = m.weight.detach()
            q = w / weight_scale(w, weight_max(m)).view(-1, *([1] * (w.dim() - 1)))
            assert torch.allclose(q, q.round(), atol=1e-3)  # on the int8 grid already
    x = ctx.data["test"].x
    agree = (predict(plain, x).argmax(1) == predict(out.model, x).argmax(1)).float().mean()
    assert agree >= 0.95


def test_activation_ranges_are_keyed_by_graph_node(qat_result):
    _, _, out = qat_result
    ranges = activation_ranges(out.model)
    plain_nodes = {n.name for n in fold_and_strip(out.model).graph.nodes}
    assert next(iter(ranges)) == "x"  # the model input comes first
    assert set(ranges) <= plain_nodes
    assert "features_0_2" in ranges and ranges["features_0_2"]["module"] == "features.0.2"
    assert "classifier" in ranges  # the logits are quantized too
    for key, r in ranges.items():
        assert r["scale"] > 0 and -128 <= r["zero_point"] <= 127 and r["min"] <= 0 <= r["max"], key
    pooled = [k for k, r in ranges.items() if r["shared_with"]]
    assert pooled, "max pool / flatten reuse their producer's range"


def test_qat_on_a_concatenating_model_exports_qdq(digits_ctx, tmp_path):
    _, ctx = digits_ctx
    model = ConcatNet().eval()
    ctx.teacher = model
    out = QAT().run(model, QATConfig(epochs=1, samples=128, calib_samples=64), ctx)
    path = export_onnx(out.model, ctx.data["val"].x[:1], tmp_path / "c.onnx", tmp_path / "c.log")
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "c_opt.onnx")
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node]
    assert ops.count("QLinearConv") == 4 and "Conv" not in ops


def test_qat_twice_is_bad_input(qat_result):
    _, ctx, out = qat_result
    with pytest.raises(EdgeshipError, match="already carries fake quantization"):
        QAT().run(out.model, QATConfig(epochs=0), ctx)


@pytest.mark.slow  # two QAT models, each exported and compiled by ONNX Runtime and OpenVINO
def test_qat_weights_leave_room_for_x86_int16_sums(digits_ctx, tmp_path, monkeypatch):
    """Without VNNI (AVX2, most AVX-512 parts) ONNX Runtime and OpenVINO multiply uint8 activations by int8 weights
    with VPMADDUBSW, which adds two products into a saturating int16. A layer reading the digits' pixels (many at
    the top of their range, so many activations at 255) with large weights of one sign: with QAT's 7-bit weights both
    x86 runtimes compute what the QDQ graph says (float arithmetic on its dequantized values: ONNX Runtime with
    every optimization off, what an ARM device's int32 sums give) within one step of the quantized logits; with the
    8-bit weights QAT used before, on such a CPU, they do not."""
    import openvino as ov

    from edgeship.pipeline import qat

    _, ctx = digits_ctx
    x = ctx.data["test"].x.numpy()
    train = ctx.data["train"]
    means = torch.stack([train.x[train.y == c].flatten(1).mean(0) for c in range(10)])  # nearest class mean, as
    weight, bias = 0.6 + 0.15 * means, -0.075 * (means ** 2).sum(1)  # a linear layer: every weight in ~[0.45, 1]

    def lowered(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
        with torch.no_grad():
            model[1].weight.copy_(weight)
            model[1].bias.copy_(bias)
        out = QAT().run(model.eval(), QATConfig(epochs=0, calib_samples=256), ctx)  # ranges only, no training
        path = export_onnx(out.model, torch.from_numpy(x[:1]), tmp_path / f"{name}.onnx", tmp_path / "export.log")
        runs = []
        for level in (ort.GraphOptimizationLevel.ORT_ENABLE_ALL, ort.GraphOptimizationLevel.ORT_DISABLE_ALL):
            so = ort.SessionOptions()
            so.graph_optimization_level = level
            runs.append(ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]).run(None,
                                                                                                   {"input": x})[0])
        openvino = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(x)[0]
        step = float(activation_ranges(out.model)[next(reversed(activation_ranges(out.model)))]["scale"])
        return runs[0], openvino, runs[1], step

    ort_x86, ov_x86, graph, step = lowered("7bit")
    assert weight.min() > 0.3 and (graph.argmax(1) == ctx.data["test"].y.numpy()).mean() > 0.8  # a classifier
    for got in (ort_x86, ov_x86):
        assert np.abs(got - graph).max() <= 1.01 * step
    monkeypatch.setattr(qat, "WMAX_REDUCED", qat.WMAX)  # every weight on [-127, 127]: what saturates
    ort8, ov8, graph8, step8 = lowered("8bit")
    if not x86_has_vnni():  # this layer saturates VPMADDUBSW: the test's layer is one that would catch the bug
        for got in (ort8, ov8):
            assert np.abs(got - graph8).max() > 3 * step8
