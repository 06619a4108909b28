"""FP32 ONNX: ``torch.onnx.export(dynamo=False)`` (the exporter whose files ONNX Runtime's quantizer
and the other converters accepted most easily when the project's routes were chosen), and for a model that exporter
cannot take (an ``nn.LSTMCell`` with a dynamic batch) the torch.export-based one (``dynamo=True``, opset 18);
``onnx.checker``, metadata embedded as ``metadata_props``, run with ONNX Runtime on the CPU."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgeship.errors import TargetError
from edgeship.logs import captured, failure
from edgeship.recipe import IOSpec
from edgeship.targets.base import Artifact, Backend, LowerContext, Runner, describe, require
from edgeship.targets.onnx_prelu import prelu_route, vectorize_prelu

if TYPE_CHECKING:
    import torch
    from torch import nn

OPSET = 17
DYNAMO_OPSET = 18  # the dynamo exporter's own opset (it converts down poorly)
INPUT_NAME, OUTPUT_NAME = "input", "logits"


def graph_names(sig: IOSpec | None) -> tuple[list[str], list[str], dict[str, dict[int, str]]]:
    """(input names, output names, dynamic axes) of the exported graph: the batch axis of every tensor, and each
    input's own dynamic axes (a sample's axis ``i`` is the graph's ``i + 1``)."""
    if sig is None or sig.image:
        return [INPUT_NAME], [OUTPUT_NAME], {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}
    dyn = {i.name: {0: "batch", **{a + 1: n for a, n in i.dynamic.items()}} for i in sig.inputs}
    dyn.update({o.name: {0: "batch"} for o in sig.outputs})
    return [i.name for i in sig.inputs], [o.name for o in sig.outputs], dyn


def export_onnx(model: nn.Module, example: torch.Tensor | tuple, path: Path, log_path: Path, opset: int = OPSET,
                sig: IOSpec | None = None) -> Path:
    """torch -> ONNX with a dynamic batch axis (and the signature's own dynamic axes, names); raises TargetError
    naming the operator on failure. ``example``: one sample of the input, or of every input (a tuple)."""
    import torch  # heavy: imported when a model is lowered, not when the registry is read

    from edgeship.models.graph import layer_of_op
    from edgeship.models.load import exportable

    onnx = require("onnx", "onnx", "onnx")
    path.parent.mkdir(parents=True, exist_ok=True)
    inputs, outputs, dynamic = graph_names(sig)
    args = example if isinstance(example, tuple) else (example,)
    try:
        with captured(log_path), torch.no_grad():
            torch.onnx.export(exportable(model), args, str(path), dynamo=False, opset_version=opset,
                              input_names=inputs, output_names=outputs, dynamic_axes=dynamic)
    except Exception as e:  # exporter errors name the unsupported operator; we add the layer
        msg = failure(e, log_path)
        op = re.search(r"operator '([^']+)'", msg) or re.search(r"unrecognized namespace (\w+::\w+)", msg)
        layer = layer_of_op(model, op.group(1)) if op else None
        if op and layer:
            msg = f"operator {op.group(1)} in layer '{layer}' is not supported (opset {opset})"
        dynamo_error = _export_dynamo(model, args, path, log_path, inputs, outputs, dynamic)
        if dynamo_error is not None:
            raise TargetError(f"onnx: torch.onnx.export failed: {msg} (the dynamo exporter failed too: "
                              f"{dynamo_error})",
                              f"replace the unsupported operator or drop the ONNX targets; log: {log_path}") from None
    try:
        onnx.checker.check_model(str(path))
    except Exception as e:
        raise TargetError(f"onnx: the exported file fails onnx.checker: {str(e).splitlines()[0][:200]}",
                          "report this model to the edgeship maintainers") from None
    return path


def _export_dynamo(model: nn.Module, args: tuple, path: Path, log_path: Path, inputs: list[str], outputs: list[str],
                   dynamic: dict[str, dict[int, str]]) -> str | None:
    """The torch.export-based exporter, for a model the TorchScript exporter cannot take (e.g. ``nn.LSTMCell`` with a
    dynamic batch: 'unsafe_chunk, unknown dimension size'); it writes opset 18. None when it worked, else why not."""
    import torch  # heavy: imported when a model is lowered

    from edgeship.models.load import exportable

    path.unlink(missing_ok=True)
    module = exportable(model)
    try:
        with captured(log_path), torch.no_grad():
            print("onnx: the TorchScript exporter failed (above); exporting with torch.onnx.export(dynamo=True)")
            torch.onnx.export(module, args, str(path), dynamo=True, opset_version=DYNAMO_OPSET,
                              input_names=inputs, output_names=outputs, verbose=False,
                              dynamic_shapes=_dynamic_shapes(module, [dynamic.get(n, {}) for n in inputs]))
        return None
    except Exception as e:
        return failure(e, log_path)


def _dynamic_shapes(module: nn.Module, axes: list[dict[int, str]]) -> dict:
    """torch.export's ``dynamic_shapes`` for the graph inputs' dynamic axes, keyed by ``forward``'s parameter names (a
    ``forward(*inputs)``, as ``models.io.IOModel`` has, takes them all under its one name)."""
    import inspect

    import torch  # heavy: imported when a model is lowered

    specs = [{a: torch.export.Dim.DYNAMIC for a in ax} for ax in axes]
    params = list(inspect.signature(module.forward).parameters.values())
    if params and params[0].kind is inspect.Parameter.VAR_POSITIONAL:
        return {params[0].name: tuple(specs)}
    return {p.name: spec for p, spec in zip(params, specs)}


def compact(path: Path) -> None:
    """Rewrite ``path`` without what a runtime does not read, so the file is mostly tensor bytes: Constant
    nodes become initializers, identical constants are stored once (the QAT export repeats every
    per-channel zero-point vector), tensors get short names, Q/DQ nodes short names (computing nodes keep
    theirs: the op audit names them), doc strings and value_info go. On the demo model this takes the INT8
    file from 112 KB to 76 KB (-32%) and the FP32 one from 208 KB to 200 KB; outputs are bit-identical."""
    onnx = require("onnx", "onnx", "onnx")
    from onnx import numpy_helper

    m = onnx.load(str(path))
    g = m.graph
    keep = {v.name for v in g.input} | {v.name for v in g.output}
    nodes, tensors = [], list(g.initializer)
    for n in g.node:
        if n.op_type == "Constant" and len(n.attribute) == 1 and n.attribute[0].name == "value":
            t = onnx.TensorProto()
            t.CopyFrom(n.attribute[0].t)
            t.name = n.output[0]
            tensors.append(t)
        else:
            nodes.append(n)
    alias: dict[str, str] = {}
    first: dict[tuple, str] = {}
    unique = []
    for t in tensors:
        key = (t.data_type, tuple(t.dims), numpy_helper.to_array(t).tobytes())
        if key in first and t.name not in keep:
            alias[t.name] = first[key]
        else:
            first.setdefault(key, t.name)
            unique.append(t)
    names: dict[str, str] = {}

    def short(name: str) -> str:
        if not name or name in keep:
            return name
        name = alias.get(name, name)
        return names.setdefault(name, f"t{len(names)}")

    for t in unique:
        t.name = short(t.name)
        t.ClearField("doc_string")
    for i, n in enumerate(nodes):
        n.input[:] = [short(x) for x in n.input]
        n.output[:] = [short(x) for x in n.output]
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            n.name = f"q{i}"
        n.ClearField("doc_string")
    del g.node[:]
    g.node.extend(nodes)
    del g.initializer[:]
    g.initializer.extend(unique)
    del g.value_info[:]
    onnx.checker.check_model(m)
    onnx.save(m, str(path))


def embed_metadata(path: Path, meta: dict) -> None:
    onnx = require("onnx", "onnx", "onnx")
    m = onnx.load(str(path))
    del m.metadata_props[:]
    for k, v in meta.items():
        entry = m.metadata_props.add()
        entry.key, entry.value = k, json.dumps(v) if not isinstance(v, str) else v
    onnx.save(m, str(path))


def io_description(path: Path) -> tuple[list[dict], list[dict], int]:
    onnx = require("onnx", "onnx", "onnx")
    m = onnx.load(str(path), load_external_data=False)

    def one(v) -> dict:
        t = v.type.tensor_type
        shape = [d.dim_param or d.dim_value for d in t.shape.dim]
        return {"name": v.name, "shape": shape, "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name,
                "layout": "NCHW" if len(shape) == 4 else None, "quantization": None}

    opset = max((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), default=0)
    return [one(i) for i in m.graph.input], [one(o) for o in m.graph.output], opset


ORT_TYPES = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(int32)": np.int32,
             "tensor(uint8)": np.uint8, "tensor(int8)": np.int8, "tensor(float16)": np.float16}


def ort_runner(path: Path, threads: int | None = None, runtime_config: dict | None = None) -> Runner:
    """Graph inputs in order -> every output (each input cast to the type the graph declares). ``runtime_config``
    (the artifact's ``meta["runtime_config"]``) may name ``disabled_optimizers`` (mixed-precision INT8 artifacts need
    one off, see targets/onnx_int8.py)."""
    ort = require("onnxruntime", "onnxruntime", "onnx")
    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    so.log_severity_level = 4  # a failed run raises with ORT's message: no second copy on the console
    disabled = list((runtime_config or {}).get("disabled_optimizers") or [])
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"],
                                **({"disabled_optimizers": disabled} if disabled else {}))
    feeds = [(i.name, ORT_TYPES.get(i.type, np.float32)) for i in sess.get_inputs()]

    def run(*inputs: np.ndarray) -> list[np.ndarray]:
        return sess.run(None, {name: np.ascontiguousarray(a, dtype) for (name, dtype), a in zip(feeds, inputs)})

    return run


class OnnxFP32(Backend):
    polyphase_taps = {"fp32": (64, 128)}
    format = "onnx"
    precisions = ("fp32",)
    runtime_modules = (("onnxruntime", "onnxruntime"),)
    device_loader = "load_onnx"

    def lower(self, model: nn.Module, ctx: LowerContext, out_dir: Path) -> Artifact:
        path = out_dir / "model.onnx"
        if ctx.source_onnx is not None:  # the user's own file (its large PReLUs rewritten below, same outputs)
            shutil.copyfile(ctx.source_onnx, path)
        else:
            export_onnx(model, ctx.examples, path, ctx.log_path, sig=ctx.signature)
        route = prelu_route(vectorize_prelu(path), int8=False)
        compact(path)
        inputs, outputs, opset = io_description(path)
        meta = describe(ctx, "onnx", "fp32", inputs, outputs, opset=opset, runtime="onnxruntime",
                        **({"route": route.lstrip("; ")} if route else {}))
        embed_metadata(path, {"edgeship": meta})
        art = Artifact(ctx.target.name, "onnx", "fp32", out_dir, "model.onnx", ["model.onnx"], meta)
        art.write_sidecar()
        return art

    def load(self, artifact: Artifact, threads: int | None = None) -> Runner:
        return ort_runner(artifact.path, threads)
