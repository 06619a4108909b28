"""Dynamic and weight-only quantization as target precisions, through the shared backend template: ONNX Runtime's
``quantize_dynamic`` (``onnx dynamic_int8``) and NNCF's ``compress_weights`` (``openvino weights_int8`` /
``weights_int4``); TFLite's ``dynamic_int8`` runs the template in test_tflite.py. Plus what these precisions
promise: integer weights in the file, no calibration data read, a QAT model lowered from its float view."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from template import BackendTemplate, context, digits_task, qat_model
from test_onnx import onnx_description
from test_openvino import OpenVINOTemplate

from edgeship.calibration.quant import QuantSettings
from edgeship.pipeline.qat import QAT
from edgeship.targets.base import get_backend


class TestOnnxDynamicInt8(BackendTemplate):
    FORMAT, PRECISION = "onnx", "dynamic_int8"
    RUNTIME_MODULE = RUNTIME_PACKAGE = "onnxruntime"
    MAX_ABS_LOGIT_DIFF = 0.5
    BATCH_ATOL = 0.1  # ORT's DynamicQuantizeLinear takes one range per tensor: the batch's other samples count

    def embedded_description(self, art):
        return onnx_description(art)

    def test_integer_products_and_int8_weights(self, lowered):
        g = onnx.load(str(lowered["art"].path)).graph
        ops = [n.op_type for n in g.node]
        assert ops.count("ConvInteger") == 3 and ops.count("DynamicQuantizeLinear") >= 4
        assert ops.count("MatMulInteger") + ops.count("DynamicQuantizeMatMul") == 1  # the classifier
        int8 = [i for i in g.initializer if i.data_type == onnx.TensorProto.INT8 and len(i.dims) >= 2]
        assert len(int8) == 4 and not [i for i in g.initializer if i.data_type == onnx.TensorProto.FLOAT
                                       and len(i.dims) >= 2]
        assert lowered["art"].meta["weight_quantization"]["weights"].startswith("int8")


class TestOpenVINOWeightsInt8(OpenVINOTemplate):
    PRECISION = "weights_int8"
    MAX_ABS_LOGIT_DIFF = 0.5

    def test_weights_stored_as_int8(self, lowered):
        types = lowered["art"].meta["weight_quantization"]["weight_constants"]
        assert types == {"i8": 4}, types  # the three convolutions and the classifier


class TestOpenVINOWeightsInt4(OpenVINOTemplate):
    PRECISION = "weights_int4"
    MIN_AGREEMENT = 0.95

    def test_convolutions_int8_classifier_int4(self, lowered):
        types = lowered["art"].meta["weight_quantization"]["weight_constants"]
        assert types == {"u8": 3, "i4": 1}, types  # NNCF keeps convolutions at 8 bits (asymmetric)


@pytest.mark.parametrize("fmt,precision", [("onnx", "dynamic_int8"), ("openvino", "weights_int8")])
def test_no_calibration_data_needed(fmt, precision, tmp_path):
    """One calibration sample (far below what a calibrated precision accepts) is enough: nothing reads it."""
    ctx = context(tmp_path, fmt, precision, QuantSettings(), calib=digits_task()["calib"][:1])
    out = tmp_path / "out"
    out.mkdir()
    art = get_backend(fmt, precision).lower(digits_task()["model"], ctx, out)
    assert art.meta["quantization"] is None and art.size_bytes() > 0


@pytest.mark.parametrize("fmt,precision", [("onnx", "dynamic_int8"), ("openvino", "weights_int8")])
def test_qat_model_lowered_from_its_float_view(fmt, precision, tmp_path):
    """After QAT the weights are on the int8 grid already; the artifact has no fake quantization of activations
    and agrees with the float view."""
    q = qat_model()
    ctx = context(tmp_path, fmt, precision, QuantSettings(qat=True))
    ctx.learned = QAT.learned_quantization(q)
    out = tmp_path / "out"
    out.mkdir()
    backend = get_backend(fmt, precision)
    art = backend.lower(q, ctx, out)
    x = digits_task()["x_test"]
    import torch

    with torch.no_grad():
        ref = ctx.learned.float_model(torch.from_numpy(x)).numpy()
    got = backend.load(art, threads=1)(x)[0]
    assert (got.argmax(1) == ref.argmax(1)).mean() > 0.97
    if fmt == "onnx":
        ops = {n.op_type for n in onnx.load(str(art.path)).graph.node}
        assert "QuantizeLinear" not in ops and "ConvInteger" in ops
    assert np.isfinite(got).all()
