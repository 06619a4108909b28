"""OpenVINO weight-only compression (``openvino`` precisions ``weights_int8`` and ``weights_int4``): the IR of the
FP32 route (``openvino.convert_model``) with its weights compressed by ``nncf.compress_weights``, which needs no
calibration data; activations stay float, and the CPU plugin dequantizes the weights as it computes (or quantizes
activations dynamically for MatMuls, where its kernels do).

- ``weights_int8``: ``CompressWeightsMode.INT8_SYM``, every MatMul/Convolution/Embedding, per output channel;
- ``weights_int4``: ``CompressWeightsMode.INT4_SYM`` with ``ratio=1``, ``all_layers=True`` and per-channel scales
  (``group_size=-1``: the default groups of 128 need input widths divisible by 128). NNCF compresses only MatMuls
  (Linear layers) to 4 bits; convolutions always get 8 bits (NNCF's rule; asymmetric, its backup mode), so on a
  CNN this is mostly INT8.

A QAT model is lowered from its float view (``LowerContext.learned.float_model``): weight compression has no use for
learned activation ranges. No op audit (None): the arithmetic is float by design. Runtime: the OpenVINO backend's
(``INFERENCE_PRECISION_HINT=f32``), as for every OpenVINO IR edgeship writes.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from edgeship.logs import captured
from edgeship.targets.base import Artifact, LowerContext, describe, require
from edgeship.targets.openvino import RUNTIME_CONFIG, OpenVINO, _error, convert, describe_io, write_ir

if TYPE_CHECKING:
    from torch import nn

DECOMPRESSION = ("Convert", "Subtract", "Multiply", "Reshape", "Transpose", "Unsqueeze")
MODES = {"weights_int8": ("INT8_SYM", {}),
         "weights_int4": ("INT4_SYM", {"ratio": 1.0, "group_size": -1, "all_layers": True})}


def compress(om, precision: str, ctx: LowerContext):
    nncf = require("nncf", "nncf", "openvino")
    mode, kw = MODES[precision]
    try:
        with captured(ctx.log_path):
            return nncf.compress_weights(om, mode=getattr(nncf.CompressWeightsMode, mode), **kw)
    except Exception as e:
        raise _error("nncf.compress_weights", e, ctx.log_path) from None


def weight_types(om) -> dict[str, int]:
    """Element type -> count of the weights of the model's products (the constant behind each convolution's and
    matrix product's weight input, through the decompression ops NNCF puts in front of it)."""
    counts: dict[str, int] = {}
    for op in om.get_ordered_ops():
        if op.get_type_name() not in ("Convolution", "GroupConvolution", "MatMul"):
            continue
        node = op.input_value(1).get_node()
        while node.get_type_name() in DECOMPRESSION:
            node = node.input_value(0).get_node()
        t = node.get_element_type().get_type_name() if node.get_type_name() == "Constant" else "activation"
        counts[t] = counts.get(t, 0) + 1
    return counts


class OpenVINOWeights(OpenVINO):
    precisions = tuple(MODES)
    calibrated = ()
    calibration_methods = ()

    def lower(self, model: nn.Module, ctx: LowerContext, out_dir: Path) -> Artifact:
        ov = require("openvino", "openvino", "openvino")
        precision = ctx.target.precision
        if ctx.learned is not None:  # a QAT model: its float view
            model = ctx.learned.float_model
        om = compress(convert(model, ctx), precision, ctx)
        inputs, outputs = describe_io(om)
        mode, kw = MODES[precision]
        meta = describe(ctx, "openvino", precision, inputs, outputs, runtime="openvino", quantization=None,
                        route=f"openvino.convert_model -> nncf.compress_weights({mode}, {kw or 'defaults'})",
                        weight_quantization={"mode": mode.lower(), "weight_constants": weight_types(om),
                                             "activations": "float"},
                        runtime_config=RUNTIME_CONFIG, openvino_version=ov.get_version())
        return write_ir(om, meta, ctx, out_dir)

    def op_audit(self, artifact: Artifact) -> dict | None:
        return None
