"""ONNX-INT8: torch -> ONNX (the FP32 exporter) -> ONNX Runtime's pre-processing (``quant_pre_process``:
shape inference and graph optimization) -> ``quantize_static`` in QDQ format with per-channel weights,
a calibration reader over our calibration set and the recipe's calibration method. A QAT model
already carries its fake quantization: the TorchScript exporter writes it as QuantizeLinear /
DequantizeLinear pairs, so it is exported directly with no second calibration.

Calibration methods (``QuantSettings.method``) map to ONNX Runtime's ``CalibrationMethod``:
minmax -> MinMax, percentile -> Percentile (``CalibPercentile``), entropy -> Entropy. ONNX Runtime
has no MSE calibrator: a recipe asking for ``mse`` on an ONNX INT8 target is refused when it loads,
naming the formats that have it (OpenVINO's NNCF searches the range minimizing the L2 error).

The calibration reader (``OrtCalibrationReader``) is ONNX Runtime's ``CalibrationDataReader`` protocol
over the shared calibration array (``edgeship.calibration.readers``).

Activations are uint8, weights int8 (U8S8, ONNX Runtime's x86 default). With int8 activations ORT
rewrites the QDQ pairs to uint8 itself but skips a QuantizeLinear read by several consumers (a
residual branch), and then runs those convolutions and adds in float: the op audit caught 7 float
convolutions in the Fashion-MNIST MobileNetV2 that way; with uint8 from the start there are none.

Mixed precision (``QuantSettings.float_layers``, from the mixed_precision pass): the Conv/Gemm nodes of those modules
(found by the exporter's scope names, ``onnx_scope``) are ``nodes_to_exclude``: the file keeps their weights float,
between a DequantizeLinear and a QuantizeLinear. ONNX Runtime's own graph optimizer (``WeightBiasQuantization``,
since 1.21) would quantize exactly such weights back to int8, per tensor, when the session starts; so the artifact
records ``runtime_config: {disabled_optimizers: [WeightBiasQuantization]}``, which edgeship's runners (verification,
host and device benchmarks) apply, and the op audit, run with the same setting, lists those layers as float compute
ops. Anyone loading the file with ONNX Runtime elsewhere must pass ``disabled_optimizers`` too, or those layers run
as per-tensor INT8 (worse than the per-channel INT8 the rest has).

A target's ``float_ops`` (ONNX op types: ``[Pow, Sqrt]``) adds every node of those types in the pre-processed graph
to ``nodes_to_exclude``, with the same ``runtime_config``; a type the graph lacks fails the target, listing the types
it has. The route names the nodes.

Weights use 7 of their 8 bits (``reduce_range``): on x86 CPUs without VNNI (AVX2, most AVX-512 parts) ONNX
Runtime multiplies uint8 activations by int8 weights with VPMADDUBSW, whose int16 sums of two products saturate
(255 * 127 * 2 > 32767), and outputs drift wherever activations and weights are both large. Measured on MTCNN's ONet
(benchmarks/zoo, this 2-core AVX2 machine): box relative error 0.205 with 8-bit weights, 0.080 with 7-bit ones
(face decisions 93.5% -> 99% in agreement); tests/targets/test_onnx_int8.py has a layer that saturates.

Depthwise convolutions get a multiple of 16 channels (``align_depthwise``, both routes): see
edgeship/targets/onnx_align.py for why (ONNX Runtime's fused int8 depthwise kernel) and what it measured.

Runtime: onnxruntime, CPU. The interface stays float32 NCHW; the input/output quantization
parameters in the description are those of the graph's first QuantizeLinear / last DequantizeLinear.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeship.calibration.quant import QuantSettings
from edgeship.calibration.readers import check_calibration, check_calibration_inputs, iter_batches
from edgeship.errors import TargetError
from edgeship.logs import captured, failure
from edgeship.targets.base import Artifact, Backend, LowerContext, Runner, audit, check_float_ops, describe, require
from edgeship.targets.onnx import compact, embed_metadata, export_onnx, io_description, ort_runner
from edgeship.targets.onnx_align import _initializer_values, align_file
from edgeship.targets.onnx_hardswish import int8_hardswish
from edgeship.targets.onnx_hardswish import route as hardswish_route
from edgeship.targets.onnx_prelu import prelu_route, regrid_mix, split_prelu, split_route, tile_slopes, vectorize_prelu

if TYPE_CHECKING:
    from torch import nn

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
CALIB_CHUNK = 64  # samples whose intermediate outputs ORT holds at once
REDUCE_RANGE = True  # 7-bit weights: see the module docstring
ORT_METHODS = {"minmax": "MinMax", "percentile": "Percentile", "entropy": "Entropy"}
# ONNX Runtime's WeightBiasQuantization optimizer (since 1.21) quantizes the float weights of a Conv/Gemm that reads a
# DequantizeLinear and feeds a QuantizeLinear, per tensor: what nodes_to_exclude kept float must be run without it
MIXED_RUNTIME_CONFIG = {"disabled_optimizers": ["WeightBiasQuantization"]}


class OrtCalibrationReader:
    """ONNX Runtime's ``CalibrationDataReader`` protocol: ``get_next`` -> ``{input_name: batch}`` (every graph input)
    until exhausted, ``rewind`` starts over, ``set_range`` serves ``CalibStridedMinMax``."""

    def __init__(self, calib: np.ndarray | list[np.ndarray], input_name: str | list[str], batch_size: int = 16):
        arrays = [calib] if isinstance(calib, np.ndarray) else list(calib)
        self.names = [input_name] if isinstance(input_name, str) else list(input_name)
        self.arrays = [np.ascontiguousarray(a, np.float32 if a.dtype.kind == "f" else a.dtype) for a in arrays]
        self.calib = self.arrays[0]
        self.batch_size = batch_size
        self.start, self.end = 0, len(self.calib)
        self.rewind()

    def get_next(self) -> dict | None:
        return next(self._it, None)

    def rewind(self) -> None:
        parts = [iter_batches(a[self.start:self.end], self.batch_size, dtype=a.dtype) for a in self.arrays]
        self._it = (dict(zip(self.names, batches)) for batches in zip(*parts))

    def set_range(self, start_index: int, end_index: int) -> None:
        self.start, self.end = start_index, end_index
        self.rewind()

    def __len__(self) -> int:
        return len(self.calib)

    def __iter__(self) -> OrtCalibrationReader:
        return self

    def __next__(self) -> dict:
        batch = self.get_next()
        if batch is None:
            raise StopIteration
        return batch


def ort_reader(calib: np.ndarray, input_name: str, batch_size: int = 16) -> OrtCalibrationReader:
    """A calibration reader over an image classifier's ``calib`` (checked first)."""
    return OrtCalibrationReader(check_calibration(calib), input_name, batch_size)


def graph_input_names(path: Path) -> list[str]:
    onnx = require("onnx", "onnx", "onnx")
    g = onnx.load(str(path), load_external_data=False).graph
    fed = {i.name for i in g.initializer}
    return [i.name for i in g.input if i.name not in fed]


def ort_calibration(quant: QuantSettings) -> tuple[Any, dict]:
    """(CalibrationMethod, extra_options) for ``quantize_static`` from QuantSettings (a method ONNX Runtime
    has: ``OnnxInt8.calibration_methods``)."""
    q = require("onnxruntime.quantization", "onnxruntime", "onnx")
    symmetric = bool(quant.symmetric_activations)  # unset: asymmetric uint8, MLAS's fast u8s8 kernels
    extra = {"ActivationSymmetric": symmetric, "WeightSymmetric": quant.symmetric_weights,
             "CalibTensorRangeSymmetric": symmetric}
    if quant.method == "percentile":
        extra["CalibPercentile"] = float(quant.percentile)
    return getattr(q.CalibrationMethod, ORT_METHODS[quant.method]), extra


def count_ops(path: Path) -> dict[str, int]:
    onnx = require("onnx", "onnx", "onnx")
    counts: dict[str, int] = {}
    for n in onnx.load(str(path), load_external_data=False).graph.node:
        counts[n.op_type] = counts.get(n.op_type, 0) + 1
    return counts


def onnx_scope(model: nn.Module, name: str) -> str:
    """The scope the TorchScript exporter gives module ``name``'s nodes: one part per module on the path, each the
    path relative to the nearest enclosing module that is not a container (``layers.0.conv1.0`` ->
    ``/layers/layers.0/conv1/conv1.0``)."""
    from torch import nn  # heavy: only when layers are kept float

    parts, scope, anchor = name.split("."), [], 0
    for i in range(1, len(parts) + 1):
        scope.append(".".join(parts[anchor:i]))
        if not isinstance(model.get_submodule(".".join(parts[:i])), (nn.Sequential, nn.ModuleList, nn.ModuleDict)):
            anchor = i
    return "/" + "/".join(scope)


def float_layer_nodes(model: nn.Module, layers: tuple[str, ...], path: Path) -> list[str]:
    """The Conv/Gemm/MatMul nodes of the ONNX file at ``path`` that compute the modules ``layers``."""
    onnx = require("onnx", "onnx", "onnx")
    nodes = [n for n in onnx.load(str(path), load_external_data=False).graph.node if n.op_type in ("Conv", "Gemm",
                                                                                                   "MatMul")]
    out = []
    for layer in layers:
        prefix = onnx_scope(model, layer) + "/"
        hits = [n.name for n in nodes if n.name.startswith(prefix)]
        if not hits:
            raise TargetError(f"onnx int8: float layer {layer!r} has no Conv/Gemm/MatMul node in the exported graph "
                              f"(looked for {prefix}...)", "name conv/linear modules in the mixed_precision pass")
        out += hits
    return out


def typed_nodes(path: Path, op_types: list[str], target: str) -> list[str]:
    """The nodes of the ONNX file at ``path`` whose type is one of ``op_types`` (a target's ``float_ops``); a type
    the graph lacks fails the target, listing the types it has."""
    onnx = require("onnx", "onnx", "onnx")
    nodes = onnx.load(str(path), load_external_data=False).graph.node
    check_float_ops(op_types, {n.op_type for n in nodes}, target, "ONNX graph")
    return [n.name for n in nodes if n.op_type in op_types]


def quantize_onnx(fp32_path: Path, out_path: Path, calib: np.ndarray | list[np.ndarray], quant, work_dir: Path,
                  log_path: Path, exclude: list[str] | None = None, float_ops: list[str] | None = None,
                  target: str = "onnx int8") -> list[str]:
    """Pre-process and statically quantize ``fp32_path`` (QDQ, float interface) into ``out_path``. ``calib``: the
    samples of the graph's one input, or of every input in the graph's order; the nodes named in ``exclude`` and
    those of the op types ``float_ops`` (in the pre-processed graph, the one quantized) stay float. Returns the
    nodes kept float by type."""
    require("onnxruntime", "onnxruntime", "onnx")
    q = require("onnxruntime.quantization", "onnxruntime", "onnx")
    from onnxruntime.quantization.shape_inference import quant_pre_process

    method, extra = ort_calibration(quant)
    # ORT's calibrators keep every collected output in memory and its histogram collectors need
    # equal batch shapes: feed single samples and let ORT reduce them chunk by chunk
    # (CalibStridedMinMax works for every method; the chunk must divide the sample count).
    reader = OrtCalibrationReader(calib, graph_input_names(fp32_path), batch_size=1)
    n = len(reader)
    extra["CalibStridedMinMax"] = max(d for d in range(1, min(CALIB_CHUNK, n) + 1) if n % d == 0)
    pre = work_dir / "preprocessed.onnx"
    try:
        with captured(log_path):
            quant_pre_process(str(fp32_path), str(pre))
            typed = typed_nodes(pre, list(float_ops), target) if float_ops else []
            q.quantize_static(str(pre), str(out_path), reader, quant_format=q.QuantFormat.QDQ,
                              per_channel=quant.per_channel, activation_type=q.QuantType.QUInt8,
                              weight_type=q.QuantType.QInt8, calibrate_method=method, extra_options=extra,
                              nodes_to_exclude=list(exclude or []) + typed, reduce_range=REDUCE_RANGE)
    except TargetError:
        raise
    except Exception as e:
        msg = failure(e, log_path)
        raise TargetError(f"onnx int8: ONNX Runtime quantization failed: {msg}",
                          f"see the log {log_path}; try another calibration method or the qat pass") from None
    return typed


def _qparams(node, vals: dict) -> dict | None:
    if node is None or len(node.input) < 2 or node.input[1] not in vals:
        return None
    scale = vals[node.input[1]]
    zp = vals.get(node.input[2]) if len(node.input) > 2 else None
    return {"scale": scale.reshape(-1).tolist() if scale.size > 1 else float(scale),
            "zero_point": (zp.reshape(-1).tolist() if zp.size > 1 else int(zp)) if zp is not None else 0,
            "dtype": str(zp.dtype) if zp is not None else "uint8",
            "where": f"inside the graph ({node.op_type}); the interface is float32"}


def qdq_io_params(path: Path) -> tuple[dict | None, dict | None]:
    """Quantization parameters of the QuantizeLinear reading the input and of the DequantizeLinear
    producing the output (None where the graph has none there)."""
    onnx = require("onnx", "onnx", "onnx")
    g = onnx.load(str(path), load_external_data=False).graph
    vals = _initializer_values(g)
    consumers = {}
    producer = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
        for o in n.output:
            producer[o] = n
    q_in = next((n for n in consumers.get(g.input[0].name, []) if n.op_type == "QuantizeLinear"), None)
    out = producer.get(g.output[0].name)
    dq_out = out if out is not None and out.op_type == "DequantizeLinear" else None
    return _qparams(q_in, vals), _qparams(dq_out, vals)


def optimized_graph(path: Path, disabled_optimizers: list[str] | None = None):
    """The graph ONNX Runtime's CPU provider runs: QDQ groups fused into QLinearConv, QGemm, ...
    (extended optimizations: the fusions, without the hardware-specific layout rewrites)."""
    ort = require("onnxruntime", "onnxruntime", "onnx")
    onnx = require("onnx", "onnx", "onnx")
    with tempfile.TemporaryDirectory(prefix="edgeship-ort-audit-") as tmp:
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        so.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"],
                             **({"disabled_optimizers": disabled_optimizers} if disabled_optimizers else {}))
        return onnx.load(so.optimized_model_filepath).graph


def _makes_int(node) -> bool:
    """Ops whose output is quantized: QuantizeLinear and the fused quantized kernels (QGemm only
    when it has an output scale; without one it dequantizes)."""
    if node.op_type in ("QuantizeLinear", "DynamicQuantizeLinear") or node.op_type.startswith("QLinear"):
        return True
    return node.op_type == "QGemm" and len(node.input) > 7 and bool(node.input[7])


def float_ops(path: Path, disabled_optimizers: list[str] | None = None) -> dict:
    """Every op of ONNX Runtime's optimized graph that still computes on float data (its data input
    is a float graph input, a float constant, a DequantizeLinear output or another float op's),
    besides the QuantizeLinear/DequantizeLinear at the float interface."""
    onnx = require("onnx", "onnx", "onnx")
    g = optimized_graph(path, disabled_optimizers)
    float_types = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE,
                   onnx.TensorProto.BFLOAT16}
    is_float = {i.name: i.type.tensor_type.elem_type in float_types for i in g.input}
    is_float.update({i.name: i.data_type in float_types for i in g.initializer})
    listed, total, counts = [], 0, {}
    for n in g.node:  # topologically sorted
        counts[n.op_type] = counts.get(n.op_type, 0) + 1
        data_float = bool(n.input) and is_float.get(n.input[0], False)
        if n.op_type == "Constant":
            out_float = bool(n.attribute) and n.attribute[0].t.data_type in float_types
        elif n.op_type == "DequantizeLinear":
            out_float = True
        elif _makes_int(n) or n.op_type in ("Shape", "Size"):
            out_float = False
        else:
            out_float = data_float
        for o in n.output:
            is_float[o] = out_float
        if n.op_type in QDQ_OPS + ("Constant", "Shape", "Size"):
            continue
        total += 1
        if data_float:
            listed.append({"name": n.name, "op": n.op_type})
    return audit("onnxruntime CPU (optimized graph)", total, listed, op_counts=counts)


class OnnxInt8(Backend):
    polyphase_taps = {"int8": (None, 128)}  # a Conv1d at 64-128 taps per phase ran 0.94-0.97x
    format = "onnx"
    precisions = ("int8",)
    runtime_modules = (("onnxruntime", "onnxruntime"),)
    device_loader = "load_onnx"
    calibrated = ("int8",)
    calibration_methods = tuple(ORT_METHODS)

    def lower(self, model: nn.Module, ctx: LowerContext, out_dir: Path) -> Artifact:
        path = out_dir / "model.onnx"
        qat = ctx.quant.qat
        self.check_calibration_method("int8", ctx.quant, ctx.target.name)
        exclude: list[str] = []
        if qat:  # the fake quantization becomes QDQ as it is exported
            export_onnx(model, ctx.example, path, ctx.log_path, sig=ctx.signature)
            if not count_ops(path).get("DequantizeLinear"):
                raise TargetError("onnx int8: the model is marked QAT but its export holds no "
                                  "QuantizeLinear/DequantizeLinear nodes",
                                  "run the qat pass on this model, or drop qat to calibrate it instead")
            split = [] if "PRelu" in (ctx.target.float_ops or []) else split_prelu(path)  # on the QAT grid
            vector_prelu = vectorize_prelu(path)
            route = "qat: fake quantization exported as QDQ (no calibration)" + split_route(split)
        else:
            calib = check_calibration_inputs(ctx.inputs, ctx.signature.inputs)
            fp32 = ctx.work_dir / "fp32.onnx"
            if ctx.source_onnx is not None:  # the user's own file (its large PReLUs rewritten below)
                shutil.copyfile(ctx.source_onnx, fp32)
            else:
                export_onnx(model, ctx.examples, fp32, ctx.log_path, sig=ctx.signature)
            exclude = float_layer_nodes(model, ctx.quant.float_layers, fp32) if ctx.quant.float_layers else []
            # int8: a convolution's PReLU as two halves the quantizer takes (not where the recipe keeps it float)
            split = [] if "PRelu" in (ctx.target.float_ops or []) else split_prelu(fp32, set(exclude))
            vector_prelu = vectorize_prelu(fp32)  # float, as the quantizer leaves a PReLU (onnx_prelu)
            typed = quantize_onnx(fp32, path, calib, ctx.quant, ctx.work_dir, ctx.log_path, exclude + vector_prelu,
                                  ctx.target.float_ops, f"onnx int8 ({ctx.target.name})")
            if split:  # the mix weights 1 and -slope on their own int8 grid, not the quantizer's
                regrid_mix(path, fp32)
            route = (f"onnxruntime quantize_static QDQ, {ctx.quant.method} calibration on {len(ctx.calib)} samples"
                     + split_route(split))
            if exclude:
                route += f"; kept float (nodes_to_exclude): {', '.join(exclude)}"
            if typed:
                route += (f"; kept float (float_ops {', '.join(ctx.target.float_ops)}): {len(typed)} nodes "
                          f"({', '.join(typed)})")
            exclude += typed
        tiled = tile_slopes(path) if vector_prelu else 0
        route += prelu_route(vector_prelu, int8=True, tiled=tiled) + align_file(path)
        # after the alignment (which reads a HardSwish as one op); not what the recipe keeps float
        route += hardswish_route(int8_hardswish(path, set(exclude) | set(ctx.target.float_ops or [])))
        compact(path)
        inputs, outputs, opset = io_description(path)
        inputs[0]["quantization"], outputs[0]["quantization"] = qdq_io_params(path)
        extra = {"runtime_config": MIXED_RUNTIME_CONFIG} if not qat and exclude else {}
        meta = describe(ctx, "onnx", "int8", inputs, outputs, opset=opset, runtime="onnxruntime",
                        quant_format="QDQ", route=route, **extra)
        embed_metadata(path, {"edgeship": meta})
        art = Artifact(ctx.target.name, "onnx", "int8", out_dir, "model.onnx", ["model.onnx"], meta)
        art.write_sidecar()
        return art

    def load(self, artifact: Artifact, threads: int | None = None) -> Runner:
        return ort_runner(artifact.path, threads, artifact.meta.get("runtime_config"))

    def op_audit(self, artifact: Artifact) -> dict | None:
        disabled = (artifact.meta.get("runtime_config") or {}).get("disabled_optimizers")
        return float_ops(artifact.path, disabled)
