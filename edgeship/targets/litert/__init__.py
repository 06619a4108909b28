"""The TFLite route through Google's maintained converters: litert-torch (torch.export -> LiteRT) for the graph, its
PT2E quantization (torchao's ``prepare_pt2e``/``convert_pt2e`` with litert-torch's ``PT2EQuantizer``) for full-integer
INT8 with int8 inputs and outputs, and ai-edge-quantizer (the LiteRT model quantizer litert-torch installs) for
dynamic-range INT8 and for full-integer INT8 behind a float interface.

It covers what the hand-written torch.fx lowering (``targets/torch2tf``) does not: several inputs and outputs, 1-D and
sequence models, LSTMs, attention, PReLU, asymmetric padding. The TFLite backend uses the lowering for image
classifiers whose operators it covers (measured faster at full INT8 on the demo model: benchmarks/results) and for
QAT models (it carries the learned ranges), and this route for everything else.

Interface: the inputs keep the torch layout (no NHWC transpose) and the torch dtypes (int64 ids become int32); a
quantized input or output carries its scale and zero point, which ``make_runner`` applies.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from edgeship.errors import TargetError
from edgeship.logs import captured, failure
from edgeship.targets.base import LowerContext, require

FMT = "tflite"
PRECISIONS = ("fp32", "dynamic_int8", "int8", "int8_float_io")


def _torch():
    return require("torch", "torch", FMT)


def _convert(model: Any, ctx: LowerContext, exported: bool = False, **kw: Any) -> bytes:
    """``exported``: a PT2E program, which refuses train()/eval() (it is already in eval mode)."""
    litert = require("litert_torch", "litert-torch", FMT)
    torch = _torch()
    with _failing_as(ctx, "litert-torch could not convert the model", "drop the tflite targets for this model"):
        with torch.no_grad():
            edge = litert.convert(model if exported else model.eval(), ctx.examples, **kw)
        return bytes(edge.model_content())


@contextlib.contextmanager
def _failing_as(ctx: LowerContext, what: str, fix: str) -> Iterator[None]:
    """A converter's exception as this target's one-line TargetError, its traceback in the target's log."""
    try:
        yield
    except TargetError:
        raise
    except Exception as e:
        msg = failure(e, ctx.log_path)
        raise TargetError(f"{FMT}: {what}: {msg}", f"see the log {ctx.log_path}; {fix}") from None


def _core_softmax(graph: Any, torch: Any) -> None:
    """``aten.softmax.int`` (what torch.export keeps of ``F.softmax``) as ``aten._softmax`` (the op it decomposes to),
    the one litert-torch's PT2EQuantizer annotates with the range LiteRT's int8 SOFTMAX demands (scale 1/256, zero
    point -128). Unannotated, a softmax at a model's output stayed float32 in a full-integer file (MTCNN P-Net's
    score map: a DEQUANTIZE and a float SOFTMAX), and one inside a network was observed by its consumer (a 48-channel
    score map got 1/4096, a file LiteRT would not prepare: "output->params.scale not near 1.f / 256"). A softmax
    whose input the quantizer leaves float (after a PReLU) stays float whole, which LiteRT runs."""
    for node in graph.graph.nodes:
        if node.op == "call_function" and node.target == torch.ops.aten.softmax.int and len(node.args) == 2 \
                and node.kwargs.get("dtype") is None:
            node.target = torch.ops.aten._softmax.default
            node.args = (*node.args, False)
    graph.recompile()


def _pt2e_int8(model: Any, ctx: LowerContext, calib: list[np.ndarray]) -> bytes:
    """Full-integer INT8 (int8 inputs and outputs) through PT2E: calibrated on every calibration sample."""
    torch = _torch()
    require("torchao", "torchao", FMT)
    from litert_torch.quantize import quant_config
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=ctx.quant.per_channel))
    dtypes = [e.dtype for e in ctx.examples]
    with _failing_as(ctx, "PT2E quantization failed", "try dynamic_int8 or int8_float_io for this model"):
        with torch.no_grad():
            graph = torch.export.export(model.eval(), ctx.examples).module()
            _core_softmax(graph, torch)
            prepared = prepare_pt2e(graph, quantizer)
            for i in range(len(calib[0])):  # one sample at a time: the program was exported at batch 1
                prepared(*[torch.from_numpy(np.ascontiguousarray(a[i:i + 1])).to(d) for a, d in zip(calib, dtypes)])
            quantized = convert_pt2e(prepared, fold_quantize=False)
    return _convert(quantized, ctx, exported=True, quant_config=quant_config.QuantConfig(pt2e_quantizer=quantizer))


def _edge_quantizer(fp32: bytes, ctx: LowerContext, recipe_name: str, calib: list[np.ndarray] | None) -> bytes:
    """ai-edge-quantizer on the FP32 .tflite: ``dynamic_wi8_afp32`` or ``static_wi8_ai8`` (calibrated)."""
    require("ai_edge_quantizer", "ai-edge-quantizer", FMT)
    from ai_edge_quantizer import quantizer, recipe

    path = ctx.work_dir / "fp32.tflite"
    path.write_bytes(fp32)
    with _failing_as(ctx, f"ai-edge-quantizer ({recipe_name}) failed", "try another tflite precision"):
        qt = quantizer.Quantizer(str(path))
        qt.load_quantization_recipe(getattr(recipe, recipe_name)())
        if calib is None:
            result = qt.quantize()
        else:
            interp = require("ai_edge_litert.interpreter", "ai-edge-litert", FMT).Interpreter(model_path=str(path))
            signature = list(interp.get_signature_list())[0]
            names = sorted(interp.get_signature_list()[signature]["inputs"], key=signature_position)
            samples = [{n: a[i:i + 1].astype(_tfl_dtype(a)) for n, a in zip(names, calib)}
                       for i in range(len(calib[0]))]
            stats = qt.calibrate({signature: samples})
            result = qt.quantize(stats)
        out = ctx.work_dir / "quantized.tflite"
        result.export_model(str(out), overwrite=True)
        return out.read_bytes()


def _tfl_dtype(a: np.ndarray) -> Any:
    return np.int32 if a.dtype == np.int64 else a.dtype  # litert-torch downcasts int64 inputs to int32


def signature_position(name: str) -> int:  # public: the TFLite backend orders described inputs with it
    """``args_3`` / ``output_2`` -> 3 / 2 (litert-torch's signature names, in the torch argument order)."""
    tail = name.rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def _at_example_shapes(model: Any, ctx: LowerContext) -> Any:
    """A model converted from ONNX computes some shapes at run time (``Shape -> Slice -> Concat -> Reshape``), which
    torch.export refuses as data-dependent: litert-torch exports at the examples' shapes, so a copy with those
    computations frozen to constants goes instead (``models.onnx_import.freeze_shapes``)."""
    if not any(type(m).__name__ == "OnnxShape" for m in model.modules()):
        return model
    import copy

    from edgeship.models.onnx_import import freeze_shapes

    frozen = copy.deepcopy(model)
    print(f"tflite: froze {freeze_shapes(frozen, ctx.examples)} shape computations of the ONNX model at the "
          f"example's shapes {[tuple(e.shape) for e in ctx.examples]}")
    return frozen


def convert(model: Any, ctx: LowerContext, precision: str, calib: list[np.ndarray]) -> tuple[bytes, dict]:
    """torch -> .tflite bytes (without edgeship's metadata) and notes on how it was made."""
    if precision not in PRECISIONS:
        raise TargetError(f"{FMT}: {precision} is not available on the litert-torch route (it has "
                          f"{', '.join(PRECISIONS)}), which this model needs (its operators or signature are outside "
                          "the torch.fx lowering)", "use another tflite precision for this model")
    if precision in ("int8", "int8_float_io") and ctx.quant.float_layers:  # PT2EQuantizer takes no None config
        raise TargetError(f"{FMT} {precision}: layers kept float (mixed precision: {', '.join(ctx.quant.float_layers)})"
                          " need TFLite's selective quantization, which only the torch.fx lowering reaches; this "
                          "model takes the litert-torch route, whose quantizers would quantize every layer",
                          "use the onnx or openvino int8 targets for mixed precision on this model")
    notes: dict = {"route": "litert-torch (torch.export -> LiteRT)"}
    with captured(ctx.log_path):
        model = _at_example_shapes(model, ctx)
        if precision == "int8":
            flat = _pt2e_int8(model, ctx, calib)
            notes["calibration"] = {"source": "PT2E min/max observers", "samples": int(len(calib[0]))}
            notes["route"] += " with PT2E INT8 (int8 inputs and outputs)"
        else:
            flat = _convert(model, ctx)
            if precision == "dynamic_int8":
                flat = _edge_quantizer(flat, ctx, "dynamic_wi8_afp32", None)
                notes["route"] += ", ai-edge-quantizer dynamic_wi8_afp32"
            elif precision == "int8_float_io":
                flat = _edge_quantizer(flat, ctx, "static_wi8_ai8", calib)
                notes["calibration"] = {"source": "ai-edge-quantizer min/max", "samples": int(len(calib[0]))}
                notes["route"] += ", ai-edge-quantizer static_wi8_ai8 (float interface)"
    return flat, notes


def signature_order(it: Any) -> tuple[list[int], list[int]]:
    """Positions of the interpreter's input and output details in the torch argument / output order (litert-torch
    names them args_<k> and output_<k>; the interpreter may list them in another order)."""
    sig = it._get_full_signature_list()  # tensor indices per signature name; no public API returns them
    key = next(iter(sig))
    by_index_in = {d["index"]: k for k, d in enumerate(it.get_input_details())}
    by_index_out = {d["index"]: k for k, d in enumerate(it.get_output_details())}
    ins = [by_index_in[i] for _, i in sorted(sig[key]["inputs"].items(), key=lambda kv: signature_position(kv[0]))]
    outs = [by_index_out[i] for _, i in sorted(sig[key]["outputs"].items(), key=lambda kv: signature_position(kv[0]))]
    return ins, outs

