"""FP32 ONNX through the shared backend template: exporter, onnx.checker, metadata_props, ONNX Runtime."""

from __future__ import annotations

import json

import onnx
from template import BackendTemplate


def onnx_description(art) -> dict:
    props = {p.key: p.value for p in onnx.load(str(art.path), load_external_data=False).metadata_props}
    return json.loads(props["edgeship"])


class TestOnnxFP32(BackendTemplate):
    FORMAT, PRECISION = "onnx", "fp32"
    RUNTIME_MODULE = RUNTIME_PACKAGE = "onnxruntime"

    def embedded_description(self, art):
        return onnx_description(art)

    def test_checker_and_opset(self, lowered):
        art = lowered["art"]
        onnx.checker.check_model(str(art.path))
        assert art.meta["opset"] == 17
