"""TFLite: FP32, FP16, dynamic-range INT8, full-integer INT8 (int8 input and output) and full-integer
INT8 with a float interface, run with LiteRT's interpreter (XNNPACK).

Route (one for every precision): torch.fx trace of the BN-folded model -> TF ops in NHWC
(``edgeship.targets.torch2tf``, whose docstring says why no converter package is used) ->
``tf.lite.TFLiteConverter.from_concrete_functions``:

- ``fp32``: no optimization; ``fp16``: weights stored as float16 (the runtime computes in fp32);
- ``dynamic_int8``: int8 weights, float activations quantized on the fly (TFLite leaves weights
  under 1024 elements in float);
- ``int8`` / ``int8_float_io``: full integer; ``LowerContext.calib`` (normalized NCHW float32,
  transposed to NHWC) is the representative data set and TFLite's calibrator takes each tensor's
  min/max (``quant.method: minmax``). TFLiteConverter has no other calibrator, so for
  ``percentile`` edgeship computes histogram percentiles of every tensor over the same samples and
  puts them in FakeQuant ops (the QAT route below); ``entropy``/``mse`` are a clear TargetError.
  Weights per-channel symmetric unless ``quant.per_channel`` is false; activations asymmetric int8
  (TFLite's scheme, whatever ``symmetric_activations`` says). ``int8`` has int8 input and output
  tensors; ``int8_float_io`` keeps float32 ones (QUANTIZE/DEQUANTIZE at the edges).

Mixed precision (``QuantSettings.float_layers``, from the mixed_precision pass), on the torch.fx lowering only:
``int8_float_io`` with min/max calibration keeps those layers float through TFLite's selective quantization
(``QuantizationDebugger`` with ``denylisted_nodes``: QUANTIZE/DEQUANTIZE around each float layer, which the op audit
lists); the other full-integer cases (int8 interface, percentile, QAT, the litert-torch route) fail with that reason
rather than quantize every layer.

QAT models: the pipeline hands over ``LowerContext.learned`` (``calibration.quant.LearnedQuantization``,
from the qat pass): the float module with BN folded and the learned ranges; a FakeQuant op with the learned
range follows each quantized tensor in the TF graph (tensors QAT did not range, such as the input or a residual
add, get their min/max over the calibration samples), and TFLiteConverter turns that graph into
int8 without a representative data set: no recalibration of what QAT learned. The float
precisions of a QAT model (fp32, fp16, dynamic_int8) lower the stripped float model (QAT's weights,
no activation quantization), as ``edgeship.run`` verifies float targets after QAT against that
copy; with FakeQuant ops in the graph ``Optimize.DEFAULT`` would make any of them a full-int8 file.

Layout: the .tflite's input is NHWC (TFLite's native layout; no transposes inside the model).
It is recorded as ``inputs[0].layout`` in ``model.json`` and in the ``edgeship`` metadata entry
embedded in the flatbuffer. The runner ``load()`` returns takes normalized NCHW float32 like every
other backend's, transposes to NHWC, quantizes with the input tensor's scale/zero point and
dequantizes int8 outputs.

Runtime: ``ai_edge_litert.interpreter`` (XNNPACK, ``num_threads``); ``tflite_runtime`` when only
that is installed.
"""

from __future__ import annotations

import csv
import importlib
import io
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgeship.calibration.readers import check_calibration, check_calibration_inputs, iter_batches
from edgeship.errors import TargetError
from edgeship.logs import captured, failure
from edgeship.targets import litert, tflite_hardswish
from edgeship.targets.base import Artifact, Backend, LowerContext, Runner, audit, describe, require

if TYPE_CHECKING:
    from torch import nn

    from edgeship.targets import torch2tf

FMT = "tflite"
FULL_INT8 = ("int8", "int8_float_io")
METADATA_NAME = "edgeship"
_DTYPES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 7: "int16", 9: "int8"}


# ---------------------------------------------------------------------------------- runtime
def interpreter_class():
    """LiteRT's interpreter, else the old ``tflite_runtime``; neither names the package to install."""
    for package in ("ai_edge_litert", "tflite_runtime"):
        try:
            require(package, "ai-edge-litert", FMT)  # the package itself: its submodule may be cached
            return require(f"{package}.interpreter", "ai-edge-litert", FMT).Interpreter
        except TargetError:
            continue
    raise TargetError(f"{FMT}: no TFLite runtime is installed (neither ai_edge_litert nor tflite_runtime)",
                      "pip install ai-edge-litert")


def open_interpreter(path: Path, threads: int | None = None, delegates: bool = True):
    cls = interpreter_class()
    kw = {"num_threads": threads} if threads else {}
    if not delegates:  # every operator stays visible (the XNNPACK delegate replaces them by DELEGATE)
        resolver = importlib.import_module(cls.__module__).OpResolverType
        kw["experimental_op_resolver_type"] = resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    try:
        with captured(Path(os.devnull)):  # "Created TensorFlow Lite XNNPACK delegate" and friends
            it = cls(model_path=str(path), **kw)
            it.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        msg = " ".join(str(e).split())[:200]
        raise TargetError(f"{FMT}: {cls.__module__.split('.')[0]} cannot open {path} ({msg})",
                          "re-export the target; the file is not a valid .tflite model") from None
    return it


def make_runner(it, layout: str, output_order: list[int] | None = None,
                input_order: list[int] | None = None) -> Runner:
    """Graph inputs (preprocessed, the torch model's layout and dtypes) -> every output as float32 (or the integer
    type the model returns). Quantized int8/uint8 tensors are quantized on the way in and dequantized on the way out
    with their own scale and zero point; ``layout`` NHWC (NLC) transposes an NCHW image (NCL signal) input to
    channels last (the torch.fx lowering's);
    ``input_order``/``output_order``: the interpreter's details in the model's order (default: as listed)."""
    ins = it.get_input_details()
    ins = [ins[i] for i in input_order] if input_order is not None else ins
    outs = it.get_output_details()
    outs = [outs[i] for i in output_order] if output_order is not None else outs
    batch = {"n": int(ins[0]["shape"][0])}

    def quantize(x: np.ndarray, d: dict) -> np.ndarray:
        scale, zp = d["quantization"]
        info = np.iinfo(d["dtype"])
        return np.clip(np.round(x / scale) + zp, info.min, info.max).astype(d["dtype"])

    def invoke(arrays: list[np.ndarray]) -> list[np.ndarray]:
        if len(arrays[0]) != batch["n"]:
            for d, a in zip(ins, arrays):
                it.resize_tensor_input(d["index"], [len(a), *a.shape[1:]])
            it.allocate_tensors()
            batch["n"] = len(arrays[0])
        for d, a in zip(ins, arrays):
            quantized = np.dtype(d["dtype"]).kind in "iu" and d["quantization"][0] and a.dtype.kind == "f"
            it.set_tensor(d["index"], np.ascontiguousarray(quantize(a, d) if quantized else a, d["dtype"]))
        it.invoke()
        result = []
        for d in outs:
            y = it.get_tensor(d["index"])
            scale, zp = d["quantization"]
            if np.dtype(d["dtype"]).kind in "iu" and scale:
                result.append((y.astype(np.float32) - zp) * np.float32(scale))
            else:
                result.append(np.array(y))
        return result

    fixed_batch = int(ins[0].get("shape_signature", ins[0]["shape"])[0]) == 1  # exported at batch 1 (litert-torch)

    def run(*inputs: np.ndarray) -> list[np.ndarray]:
        arrays = [np.asarray(a) for a in inputs]
        if layout in ("NHWC", "NLC"):  # the torch.fx lowering's: channels last
            arrays[0] = np.moveaxis(arrays[0], 1, -1)
        if not fixed_batch or len(arrays[0]) == 1:
            return invoke(arrays)
        per_sample = [invoke([a[i:i + 1] for a in arrays]) for i in range(len(arrays[0]))]  # as a device runs it
        return [np.concatenate([p[k] for p in per_sample]) for k in range(len(outs))]

    return run


# ---------------------------------------------------------------------------- the flatbuffer
def _flatbuffer_utils():
    from tensorflow.lite.tools import flatbuffer_utils

    return flatbuffer_utils


def io_description(model, layout: str | None = "NHWC") -> tuple[list[dict], list[dict]]:
    """Inputs and outputs of a parsed ModelT: name, shape (-1 = any batch), dtype, quantization; in the signature's
    order where the file has one (litert-torch's args_<k>/output_<k> follow the torch order)."""
    sg = model.subgraphs[0]
    ins, outs = list(sg.inputs), list(sg.outputs)
    if model.signatureDefs:
        sig = model.signatureDefs[0]

        def ordered(maps) -> list[int]:
            key = lambda m: litert.signature_position(m.name.decode() if isinstance(m.name, bytes) else m.name)  # noqa: E731
            return [m.tensorIndex for m in sorted(maps, key=key)]

        ins, outs = ordered(sig.inputs), ordered(sig.outputs)

    def one(i: int, layout: str | None) -> dict:
        t = sg.tensors[i]
        shp = [int(d) for d in (t.shapeSignature if t.shapeSignature is not None else t.shape)]
        q = t.quantization
        quant = None
        if q is not None and q.scale is not None and len(q.scale):
            quant = {"scale": float(q.scale[0]), "zero_point": int(q.zeroPoint[0])}
        name = t.name.decode() if isinstance(t.name, bytes) else t.name
        return {"name": name, "shape": shp, "dtype": _DTYPES.get(t.type, str(t.type)), "layout": layout,
                "quantization": quant}

    return [one(i, layout) for i in ins], [one(i, None) for i in outs]


def _pack(model) -> bytes:
    """Serialize a ModelT, storing identical vectors once and buffer data 16-byte aligned.

    Sharing one offset between tables is valid FlatBuffers; it matters for int8 files, where every
    per-channel tensor carries an int64 zero-point vector (all zeros for symmetric weights).
    """
    import flatbuffers

    class SharingBuilder(flatbuffers.Builder):
        def __init__(self, size: int):
            super().__init__(size)
            self.seen: dict = {}

        def CreateNumpyVector(self, x):  # noqa: N802 (flatbuffers' name)
            key = (x.dtype.str, x.size, x.tobytes())
            if key not in self.seen:
                align = 16 if x.dtype == np.uint8 and x.size >= 16 else x.dtype.alignment
                self.StartVector(x.itemsize, x.size, align)
                payload = x.astype(x.dtype.newbyteorder("<"), copy=False).tobytes()
                self.head -= len(payload)
                self.Bytes[self.head:self.head + len(payload)] = payload
                self.vectorNumElems = x.size
                self.seen[key] = self.EndVector()
            return self.seen[key]

    builder = SharingBuilder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def embed_metadata(model, meta: dict) -> bytes:
    """Add (or replace) the ``edgeship`` metadata entry: the description, JSON in a buffer."""
    from tensorflow.lite.python import schema_py_generated as schema

    buf = schema.BufferT()
    buf.data = np.frombuffer(json.dumps(meta, default=str).encode(), np.uint8)
    model.buffers.append(buf)
    entry = schema.MetadataT()
    entry.name = METADATA_NAME
    entry.buffer = len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if m.name not in (METADATA_NAME, METADATA_NAME.encode())]
    model.metadata.append(entry)
    return _pack(model)


def read_metadata(path: Path) -> dict | None:
    """The embedded description, read with the flatbuffer schema (needs tensorflow)."""
    model = _flatbuffer_utils().read_model(str(path))
    for m in model.metadata or []:
        name = m.name.decode() if isinstance(m.name, bytes) else m.name
        if name == METADATA_NAME:
            return json.loads(bytes(model.buffers[m.buffer].data).decode())
    return None


# ------------------------------------------------------------------------------- conversion
def qat_fake_quant(lowering: torch2tf.Lowering, learned: dict, calib: np.ndarray) -> tuple[dict, dict]:
    """A FakeQuant range for every tensor QAT quantized (``activation_ranges`` keys are fx node names
    of ``fold_and_strip``'s graph; a module path or "input" is accepted too), plus calibration min/max
    for any tensor the TFLite graph needs a range for and QAT left without one."""
    ranges, used = {}, {"learned": 0, "observed": 0}
    nodes = list(lowering.gm.graph.nodes)
    from edgeship.models.graph import layer_of
    from edgeship.targets import torch2tf as t2tf  # torch and TensorFlow: imported when a model is lowered

    for n in nodes:
        keys = (n.name, str(n.target) if n.op == "call_module" else None, layer_of(n),
                "input" if n.op == "placeholder" else None)
        hit = next((k for k in keys if k is not None and k in learned), None)
        if hit is not None and lowering.kinds.get(n.name) not in (None, "const", "meta"):
            r = learned[hit]
            ranges[n.name] = (float(r["min"]), float(r["max"])) if isinstance(r, dict) else tuple(map(float, r))
            used["learned"] += 1
    if learned and not used["learned"]:
        raise TargetError(f"{FMT}: none of the {len(learned)} QAT activation ranges matches a tensor of the traced "
                          f"model (e.g. {next(iter(learned))!r})", "report this model to the edgeship maintainers")
    missing = [p for p in lowering.fake_quant_points() if p not in ranges]
    if missing:
        observed = t2tf.observe_ranges(lowering.gm, calib)
        for p in missing:
            if p in observed:
                ranges[p] = observed[p]
                used["observed"] += 1
    return ranges, used


def one_signal(ctx: LowerContext) -> bool:
    """Whether the model takes one float 1-D signal (an ``io:`` input of layout NCL, from data, fixed length) and
    gives one output, with no constant arguments: a 1-D model the torch.fx lowering takes."""
    sig = ctx.signature
    x = sig.inputs[0]
    return (len(sig.inputs) == 1 and len(sig.outputs) == 1 and not sig.call_kwargs and x.layout == "NCL"
            and x.dtype == "float32" and x.fill is None and not x.dynamic and len(x.shape) == 2)


def signal_model(model: nn.Module, ctx: LowerContext) -> nn.Module:
    """The module the torch.fx lowering traces for a 1-D model: the user's own, not the ``IOModel`` an ``io:`` recipe
    wraps it in (its ``*inputs`` and flattened outputs do not trace; one input, one output and no constant arguments
    need neither)."""
    from edgeship.models.io import IOModel  # torch: imported when a model is lowered

    return model.model if isinstance(model, IOModel) and one_signal(ctx) else model


def channels_last(ctx: LowerContext) -> str:
    """The torch.fx lowering's input layout: NLC for a 1-D signal, NHWC for an image."""
    return "NLC" if len(ctx.input_shape) == 2 else "NHWC"


def lowering_problem(model: nn.Module, ctx: LowerContext) -> str | None:
    """Why the torch.fx lowering cannot take this model (then the litert-torch route does), or None. A model with
    another signature than one image or one 1-D signal in and class logits out, or an operator outside the lowering's
    set; a QAT model and a TorchScript one always take the lowering (its errors are theirs: litert-torch needs an
    nn.Module to export and carries no QAT ranges)."""
    import torch  # heavy: imported when a model is lowered

    from edgeship.targets import torch2tf  # torch and TensorFlow: imported when a model is lowered

    if not (ctx.signature.image or one_signal(ctx)):
        return ""  # no reason to give: the lowering takes one image or one signal only
    if ctx.learned is not None or isinstance(model, torch.jit.ScriptModule):
        return None
    try:
        torch2tf.Lowering(torch2tf.trace(model, ctx.example), ctx.input_shape)
    except TargetError as e:
        return e.problem.removeprefix(f"{FMT}: ")
    return None


def convert(model: nn.Module, ctx: LowerContext, precision: str,
            learned: dict | None = None) -> tuple[bytes, dict]:
    """torch -> .tflite bytes (without our metadata) and notes on how it was made.

    ``learned`` (full-integer precisions only): QAT activation ranges for the (float, BN-folded)
    ``model``; FakeQuant ops carry them and TFLite takes its scales from those instead of a
    representative data set.
    """
    from edgeship.targets import torch2tf  # torch and TensorFlow: imported when a model is lowered

    qat = learned is not None
    method = ctx.quant.method
    mixed = precision in FULL_INT8 and bool(ctx.quant.float_layers)
    if mixed and (precision != "int8_float_io" or qat or method != "minmax"):
        raise TargetError(f"{FMT} {precision}: layers kept float (mixed precision: {', '.join(ctx.quant.float_layers)})"
                          " need TFLite's selective quantization, which this route reaches only for int8_float_io "
                          "with minmax calibration and no QAT",
                          "use precision int8_float_io (or the onnx / openvino int8 targets) for mixed precision")
    if precision in FULL_INT8 and not qat:
        check_calibration(ctx.calib, ndim=len(ctx.input_shape) + 1)  # bad calibration data is bad input, before work
    tf = require("tensorflow", "tensorflow", FMT)
    gm = torch2tf.trace(model, ctx.example)
    lowering = torch2tf.Lowering(gm, ctx.input_shape)  # unsupported operators fail here
    notes: dict = {"route": f"torch.fx (BN folded) -> TF ops, {channels_last(ctx)} (edgeship.targets.torch2tf) "
                            "-> tf.lite.TFLiteConverter"}
    fake_quant = qat or method == "percentile"
    if qat:
        lowering.fake_quant, counts = qat_fake_quant(lowering, learned, ctx.calib)
        notes["calibration"] = {"source": "qat", "fake_quant_ranges": counts,
                                "note": "QAT ranges in FakeQuant ops; calibration min/max only where QAT has none"}
    elif precision in FULL_INT8 and method == "percentile":
        ranges = torch2tf.observe_ranges(gm, ctx.calib, percentile=ctx.quant.percentile)
        lowering.fake_quant = {p: ranges[p] for p in lowering.fake_quant_points() if p in ranges}
        notes["calibration"] = {"source": "percentile", "samples": int(len(ctx.calib)),
                                "percentile": ctx.quant.percentile,
                                "note": "edgeship's histogram percentiles in FakeQuant ops (TFLite's calibrator "
                                        "only does min/max)"}
    elif precision in FULL_INT8:
        notes["calibration"] = {"source": "representative_dataset", "samples": int(len(ctx.calib)),
                                "calibrator": "TFLite min/max"}

    module, fn = lowering.build()
    conv = tf.lite.TFLiteConverter.from_concrete_functions([fn], module)
    if precision != "fp32":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    if precision == "fp16":
        conv.target_spec.supported_types = [tf.float16]
    if precision in FULL_INT8:
        if not fake_quant:
            calib = ctx.calib
            layout = channels_last(ctx)
            conv.representative_dataset = lambda: ([b] for b in iter_batches(calib, 1, layout))
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if precision == "int8":
            conv.inference_input_type = tf.int8
            conv.inference_output_type = tf.int8
        if ctx.quant is not None and not ctx.quant.per_channel:
            conv._experimental_disable_per_channel = True  # no public switch in TFLiteConverter
    try:
        if mixed:
            flat, notes["float_layers"] = selective(tf, conv, model, ctx)
        else:
            flat = conv.convert()
    except TargetError:
        raise
    except Exception as e:
        msg = failure(e, ctx.log_path)
        raise TargetError(f"{FMT}: TFLiteConverter failed ({precision}): {msg}",
                          f"see the conversion log {ctx.log_path}") from None
    notes["converter"] = f"tensorflow {tf.__version__}"
    return flat, notes


def selective(tf, conv, model: nn.Module, ctx: LowerContext) -> tuple[bytes, dict]:
    """Full-integer conversion with ``ctx.quant.float_layers`` left float: TFLite's selective quantization
    (``tf.lite.experimental.QuantizationDebugger`` with ``denylisted_nodes``). The quantizer names each node by its
    output tensor, which carries the torch module path of its layer (torch2tf's name scopes); a layer whose name does
    not appear (the classifier's output is the graph output) is found by its position among the convolutions and
    fully connected ops, which follow torch's execution order. Returns (the model, {layer: node})."""
    import torch  # heavy: imported when a model is lowered

    from edgeship.models.graph import forward_with_hooks  # torch: deferred with it

    debug = tf.lite.experimental
    calib = ctx.calib[:8]
    names = debug.QuantizationDebugger(converter=conv, debug_dataset=lambda: (
        [b] for b in iter_batches(calib, 1, channels_last(ctx))))
    names.run()
    dump = io.StringIO()
    names.layer_statistics_dump(dump)  # CSV: op_name, ..., tensor_name (the node names denylisted_nodes takes)
    rows = list(csv.DictReader(io.StringIO(dump.getvalue())))
    nodes = [r["tensor_name"] for r in rows if r["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")]
    order: list[str] = []
    forward_with_hooks(model, ctx.example, [m.register_forward_pre_hook(lambda mod, inp, name=name: order.append(name))
                                            for name, m in model.named_modules()
                                            if isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Linear))])
    found = {}
    for layer in ctx.quant.float_layers:
        by_name = [n for n in nodes if any(part.startswith(f"{layer}/") for part in n.split(";"))]
        if by_name:
            found[layer] = by_name[0]
        elif layer in order and len(order) == len(nodes):
            found[layer] = nodes[order.index(layer)]
        else:
            raise TargetError(f"{FMT}: float layer {layer!r} has no node in the converted model",
                              "name conv/linear modules in the mixed_precision pass")
    options = debug.QuantizationDebugOptions(denylisted_nodes=list(found.values()))
    dataset = lambda: ([b] for b in iter_batches(calib, 1, channels_last(ctx)))  # noqa: E731
    flat = debug.QuantizationDebugger(converter=conv, debug_dataset=dataset,
                                      debug_options=options).get_nondebug_quantized_model()
    return flat, found


class TFLite(Backend):
    polyphase_taps = {"int8": (16, 128), "int8_float_io": (16, 128)}  # fp32: 1.00-1.04x
    format = FMT
    precisions = ("fp32", "fp16", "dynamic_int8", "int8", "int8_float_io")
    runtime_modules = (("ai_edge_litert.interpreter", "ai-edge-litert"),
                       ("tflite_runtime.interpreter", "tflite-runtime"))
    device_loader = "load_tflite"
    calibrated = FULL_INT8
    calibration_methods = ("minmax", "percentile")

    def lower(self, model: nn.Module, ctx: LowerContext, out_dir: Path) -> Artifact:
        precision = ctx.target.precision
        self.check_calibration_method(precision, ctx.quant, ctx.target.name)
        if ctx.quant.qat and ctx.learned is None:
            raise TargetError(f"{FMT}: the model is QAT but its learned ranges were not handed over",
                              "lower a QAT model through the pipeline (edgeship export), which passes "
                              "LowerContext.learned")
        problem = lowering_problem(signal_model(model, ctx), ctx)
        with captured(ctx.log_path):
            if problem is None:  # an image classifier within the torch.fx lowering's operators (or a QAT model)
                learned = None
                if ctx.learned is not None:  # QAT: lower the float view; its ranges go into FakeQuant ops
                    model, learned = ctx.learned.float_model, dict(ctx.learned.activation_ranges)
                flat, notes = convert(signal_model(model, ctx), ctx, precision,
                                      learned if precision in FULL_INT8 else None)
                runner_note = (f"edgeship's runner takes normalized {'NCL' if one_signal(ctx) else 'NCHW'} float32, "
                               f"transposes to {channels_last(ctx)}, quantizes int8 inputs and dequantizes int8 "
                               "outputs")
            else:
                calib = ctx.inputs
                if precision in FULL_INT8:
                    calib = check_calibration_inputs(ctx.inputs, ctx.signature.inputs)
                try:
                    flat, notes = litert.convert(model, ctx, precision, calib)
                except TargetError as e:
                    if not problem:
                        raise
                    raise TargetError(f"{FMT}: no route converts this model: the torch.fx lowering: {problem}; "
                                      f"{e.problem.removeprefix(FMT + ': ')}", e.fix) from None
                if problem:
                    notes["lowering"] = f"the torch.fx lowering could not take this model ({problem})"
                runner_note = ("edgeship's runner feeds the inputs in the torch layout and order, quantizes int8 "
                               "inputs and dequantizes int8 outputs")
            fbu = _flatbuffer_utils()
            parsed = fbu.read_model_from_bytearray(bytearray(flat))
            if precision in FULL_INT8:  # XNNPACK takes no int8 HARD_SWISH
                unfused = tflite_hardswish.unfuse_hardswish(parsed)
                notes["route"] = notes.get("route", "") + tflite_hardswish.route(unfused)
            torch_layout = "NCL" if one_signal(ctx) else "NCHW"
            inputs, outputs = io_description(parsed, channels_last(ctx) if problem is None else torch_layout)
            meta = describe(ctx, FMT, precision, inputs, outputs, source_layout=torch_layout,
                            **({} if precision in FULL_INT8 else {"quantization": None}),
                            runner=runner_note, runtime="ai_edge_litert (XNNPACK) or tflite_runtime", **notes)
            if problem is None and one_signal(ctx):  # the file takes the signal channels last; NCL is torch's side
                meta["inputs"][0]["layout"] = "NLC"
            data = embed_metadata(parsed, meta)
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp = out_dir / ".model.tflite.partial"
        tmp.write_bytes(data)
        os.replace(tmp, out_dir / "model.tflite")
        art = Artifact(ctx.target.name, FMT, precision, out_dir, "model.tflite", ["model.tflite"], meta)
        art.write_sidecar()
        return art

    def load(self, artifact: Artifact, threads: int | None = None) -> Runner:
        it = open_interpreter(artifact.path, threads)
        if str(artifact.meta.get("route", "")).startswith("litert"):
            ins, outs = litert.signature_order(it)
            return make_runner(it, "NCHW", output_order=outs, input_order=ins)
        layout = (artifact.meta.get("inputs") or [{}])[0].get("layout") or "NHWC"
        return make_runner(it, layout)

    def op_audit(self, artifact: Artifact) -> dict | None:
        """Every operator with a float input or output, delegates off so each one is visible.
        ``interface``: the QUANTIZE/DEQUANTIZE at the edges of an ``int8_float_io`` model."""
        if artifact.precision not in FULL_INT8:
            return None
        it = open_interpreter(artifact.path, delegates=False)
        tensors = {t["index"]: t for t in it.get_tensor_details()}
        graph_in = {d["index"] for d in it.get_input_details()}
        graph_out = {d["index"] for d in it.get_output_details()}
        ops = it._get_ops_details()  # no public API lists the operators
        counts: dict[str, int] = {}
        float_ops = []
        for op in ops:
            kind = op["op_name"]
            counts[kind] = counts.get(kind, 0) + 1
            ios = [i for i in (*op["inputs"], *op["outputs"]) if i >= 0 and i in tensors]
            floats = [tensors[i]["name"] for i in ios if np.dtype(tensors[i]["dtype"]).kind == "f"]
            if floats:
                outs = [tensors[i]["name"] for i in op["outputs"] if i in tensors]
                interface = (kind == "QUANTIZE" and set(op["inputs"]) <= graph_in) or \
                            (kind == "DEQUANTIZE" and set(op["outputs"]) <= graph_out)
                float_ops.append({"name": outs[0] if outs else f"{kind}#{op['index']}", "op": kind,
                                  "index": int(op["index"]), "float_tensors": floats, "interface": bool(interface)})
        runtime = interpreter_class().__module__.split(".")[0]
        return audit(runtime, len(ops), float_ops, op_counts=counts,
                     float_ops_inside=[o["name"] for o in float_ops if not o["interface"]])
