"""ONNX dynamic INT8 (``onnx`` precision ``dynamic_int8``): weights stored as int8, activations quantized at run
time, per batch, from their own min/max (no calibration data). torch -> ONNX (the FP32 exporter) -> ONNX Runtime's
pre-processing (``quant_pre_process``) -> ``onnxruntime.quantization.quantize_dynamic`` (int8 weights, per output
channel). ONNX Runtime rewrites MatMul/Gemm into ``DynamicQuantizeLinear`` + ``MatMulInteger`` (or its fused
``DynamicQuantizeMatMul``) and Conv into ``ConvInteger``; the op types quantized are ``DYNAMIC_OPS`` by default,
every type ONNX Runtime's dynamic quantizer has. Meant for Linear- or recurrent-heavy models, where weights, not
activations, dominate the bytes moved (benchmarks/results/methods.json has what it does to a CNN and to an MLP).

A QAT model is lowered from its float view (``LowerContext.learned.float_model``), as TFLite's ``dynamic_int8``
does: its learned activation ranges do not apply to ranges measured at run time.

The activation range is one per tensor, so a sample's logits depend slightly on the other samples of its batch
(up to 0.03 on the digits CNN between batch 1 and 7; a device running batch 1 gets the batch-1 numbers).

The op audit is not applicable (None): dynamic quantization computes each quantized product in integers but keeps
float tensors between them by design. Runtime: onnxruntime, CPU, as the other ONNX precisions.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from edgeship.errors import TargetError
from edgeship.logs import captured, failure
from edgeship.targets.base import Artifact, Backend, LowerContext, Runner, describe, require
from edgeship.targets.onnx import compact, embed_metadata, export_onnx, io_description, ort_runner

if TYPE_CHECKING:
    from torch import nn

DYNAMIC_OPS = ("MatMul", "Gemm", "Conv", "Attention", "LSTM", "GRU", "Gather", "EmbedLayerNormalization")
WEIGHTS = {"weights": "int8, symmetric, per output channel",
           "activations": "uint8, per tensor, min/max of each batch at run time (DynamicQuantizeLinear)"}


def quantize_dynamic(fp32_path: Path, out_path: Path, work_dir: Path, log_path: Path,
                     op_types: tuple[str, ...] = DYNAMIC_OPS, exclude: tuple[str, ...] = ()) -> None:
    """Pre-process and dynamically quantize ``fp32_path`` into ``out_path`` (nodes named in ``exclude`` stay float)."""
    q = require("onnxruntime.quantization", "onnxruntime", "onnx")
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = work_dir / "preprocessed.onnx"
    try:
        with captured(log_path):
            quant_pre_process(str(fp32_path), str(pre))
            q.quantize_dynamic(str(pre), str(out_path), op_types_to_quantize=list(op_types), per_channel=True,
                               weight_type=q.QuantType.QInt8, nodes_to_exclude=list(exclude))
    except Exception as e:
        msg = failure(e, log_path)
        raise TargetError(f"onnx dynamic_int8: ONNX Runtime quantize_dynamic failed: {msg}",
                          f"see the log {log_path}; or use precision int8 (static) for this model") from None


class OnnxDynamic(Backend):
    format = "onnx"
    precisions = ("dynamic_int8",)
    runtime_modules = (("onnxruntime", "onnxruntime"),)
    device_loader = "load_onnx"

    def lower(self, model: nn.Module, ctx: LowerContext, out_dir: Path) -> Artifact:
        require("onnxruntime", "onnxruntime", "onnx")
        if ctx.learned is not None:  # a QAT model: its float view (ranges are measured at run time here)
            model = ctx.learned.float_model
        fp32 = export_onnx(model, ctx.example, ctx.work_dir / "fp32.onnx", ctx.log_path)
        path = out_dir / "model.onnx"
        quantize_dynamic(fp32, path, ctx.work_dir, ctx.log_path)
        compact(path)
        inputs, outputs, opset = io_description(path)
        meta = describe(ctx, "onnx", "dynamic_int8", inputs, outputs, opset=opset, runtime="onnxruntime",
                        quantization=None, weight_quantization=WEIGHTS,
                        route="onnxruntime quantize_dynamic (int8 weights per channel, activations at run time)")
        embed_metadata(path, {"edgeship": meta})
        art = Artifact(ctx.target.name, "onnx", "dynamic_int8", out_dir, "model.onnx", ["model.onnx"], meta)
        art.write_sidecar()
        return art

    def load(self, artifact: Artifact, threads: int | None = None) -> Runner:
        return ort_runner(artifact.path, threads)
