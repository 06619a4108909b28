"""Per-layer profiles for bench_runner.py ``--profile``: each runtime's own counters turned into one table.

Self-contained like bench_runner.py (standard library only; it runs beside it on devices): ONNX Runtime's profiler
JSON (per node: op, provider, duration), OpenVINO's PERF_COUNT (node type, execution type such as jit_avx2_I8) and,
for LiteRT, whose Python interpreter has no per-op timer, its C API's profiler (litert_timer.py: XNNPACK's operators
by their own names, ``tflite_timed``) or, where that is missing, its op list with each op's input dtype, untimed;
both say whether the XNNPACK delegate took an op (``not_delegated``: the ops left to LiteRT's builtin kernels).
Compute layers (convolutions, matrix multiplications, fully connected) get the arithmetic their kernel ran in; in an
INT8 artifact a float one is a float fallback.
"""

from __future__ import annotations

import json
import os

# the layers whose arithmetic decides an INT8 model's speed, by runtime; each runtime's name for the integer kernels
ORT_FLOAT_COMPUTE = {"Conv", "FusedConv", "NhwcFusedConv", "ConvTranspose", "MatMul", "FusedMatMul", "Gemm",
                     "FusedGemm"}
ORT_INT_COMPUTE = {"QLinearConv", "NhwcQLinearConv", "QLinearMatMul", "QGemm", "MatMulInteger", "ConvInteger",
                   "DynamicQuantizeMatMul", "MatMulIntegerToFloat"}
OV_COMPUTE = {"Convolution", "GroupConvolution", "Deconvolution", "FullyConnected", "MatMul",
              "FullyConnectedQuantizedLegacy", "FullyConnectedCompressed"}
TFLITE_COMPUTE = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "BATCH_MATMUL", "TRANSPOSE_CONV", "CONV_3D"}


def ort_layers(sess) -> tuple[str, list[dict]]:
    path = sess.end_profiling()
    with open(path) as f:
        events = json.load(f)
    os.remove(path)
    rows: dict = {}
    for e in events:
        name = e.get("name", "")
        if e.get("cat") != "Node" or not name.endswith("_kernel_time"):
            continue
        args = e.get("args") or {}
        row = rows.setdefault(name[: -len("_kernel_time")], {"op": args.get("op_name", "?"),
                                                             "kernel": args.get("provider"), "us": [],
                                                             "in": _ort_shape(args.get("input_type_shape")),
                                                             "out": _ort_shape(args.get("output_type_shape"))})
        row["us"].append(float(e.get("dur", 0)))
    out = []
    for name, r in rows.items():
        precision = "int8" if r["op"] in ORT_INT_COMPUTE else "float" if r["op"] in ORT_FLOAT_COMPUTE else None
        out.append({"name": name, "op": r["op"], "kernel": r["kernel"], "precision": precision,
                    "compute": precision is not None, "us": _mid_mean(r["us"]), "calls": len(r["us"]),
                    "in": r["in"], "out": r["out"]})
    return "onnxruntime profiler (enable_profiling)", out


def _ort_shape(ports) -> list[int] | None:
    """The first port's dimensions from the profiler's ``[{"float": [1, 3, 32, 32]}, ...]``."""
    try:
        return [int(d) for d in next(iter(ports[0].values()))]
    except (TypeError, IndexError, StopIteration, ValueError, AttributeError):
        return None


def _ov_precision_of(exec_type: str) -> str | None:
    t = exec_type.lower()
    if "i8" in t or "u8" in t:
        return "int8"
    if "f32" in t or "bf16" in t or "f16" in t:
        return "float"
    return None


def ov_layers(counted: dict, compiled=None) -> tuple[str, list[dict]]:
    """Each executed node's counters; with the ``compiled`` model, also each node's first input and output shape
    (NCHW, from the runtime model: what a latency calibration matches to the kernels of the IR)."""
    shapes = ov_shapes(compiled) if compiled is not None else {}
    out = []
    for name, (node_type, exec_type, us) in counted.items():
        compute = node_type in OV_COMPUTE
        out.append({"name": name, "op": node_type, "kernel": exec_type, "compute": compute,
                    "precision": _ov_precision_of(exec_type) if compute else None, "us": _mid_mean(us),
                    "calls": len(us), **shapes.get(name, {})})
    return "openvino per-layer counters (PERF_COUNT)", out


def ov_shapes(compiled) -> dict[str, dict]:
    """Node name -> {"in": first input's shape, "out": first output's shape} of the compiled (runtime) model."""
    def shape(port):
        try:
            return [int(d) for d in port.get_partial_shape().to_shape()]
        except Exception:  # a dynamic or absent port: no shape to match
            return None

    out = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        out[op.get_friendly_name()] = {"in": shape(op.input(0)) if op.get_input_size() else None,
                                       "out": shape(op.output(0)) if op.get_output_size() else None}
    return out


def delegated(ops: list[dict]) -> dict[int, int]:
    """Operator index -> the delegate partition (DELEGATE node) that runs it. The interpreter keeps the replaced
    operators in its list; a DELEGATE node's inputs are its partition's inputs (boundary tensors and constants), so
    walking back from its outputs through their producers, stopping at those inputs, finds the operators it took."""
    producer = {int(t): op["index"] for op in ops if op["op_name"] != "DELEGATE" for t in op["outputs"]}
    by_index = {op["index"]: op for op in ops}
    taken: dict[int, int] = {}
    for d in (op for op in ops if op["op_name"] == "DELEGATE"):
        stop = {int(t) for t in d["inputs"]}
        todo = [int(t) for t in d["outputs"]]
        while todo:
            t = todo.pop()
            k = producer.get(t)
            if t in stop or k is None or k in taken:
                continue
            taken[k] = d["index"]
            todo += [int(i) for i in by_index[k]["inputs"] if int(i) >= 0]
    return taken


XNN_COMPUTE = ("Convolution", "Deconvolution", "Fully Connected", "Dynamic Fully Connected", "Batch Matrix Multiply")
XNN_INT = {"QC8", "QS8", "QU8", "QD8", "QC4", "QC8W", "QC4W", "QB4W"}


def _xnn_precision(op: str) -> str | None:
    """The arithmetic an XNNPACK operator's name states (``Convolution (NHWC, QC8) IGEMM``: int8)."""
    inside = op[op.find("(") + 1:op.find(")")] if "(" in op else ""
    tokens = {t.strip() for t in inside.split(",")}
    return "int8" if tokens & XNN_INT else "float" if tokens & {"F32", "F16", "BF16"} else None


def tflite_timed(timed: list[dict], note: str, runs: int | None = None) -> tuple[str, list[dict]]:
    """Rows of ``litert_timer.timed_ops``: each operator XNNPACK (or LiteRT's builtin kernels) ran, by its own
    name, with its time per inference over the profiled runs (``_whole_us_mean``; ``runs``: how many runs one
    reading averages, where it is a mean already)."""
    out = []
    for i, r in enumerate(timed):
        compute = r["delegated"] and r["op"].startswith(XNN_COMPUTE)
        out.append({"name": f"{i}:{r['op']}", "op": r["op"], "kernel": "XNNPACK" if r["delegated"] else "builtin",
                    "compute": compute, "precision": _xnn_precision(r["op"]) if compute else None,
                    "us": _whole_us_mean(r["us"]), "calls": runs or len(r["us"]), "delegated": r["delegated"]})
    return note, out


def tflite_benchmark_ops(ops: list[dict], runs: int) -> tuple[str, list[dict]]:
    """The operator table of TFLite's ``benchmark_model --enable_op_profiling=true`` on a device
    (``android.parse_op_profile``) as LiteRT's rows. Builds from TF 2.9.1 on itemize XNNPACK's operators (by its
    names, ``Delegate/<name>:<i>``) beside the delegate's own row, which sums them and is left out; an older build's
    delegate row stays, one layer for everything XNNPACK ran. Each time is the table's average per run, read like
    ``_whole_us_mean``'s (the profiler's readings are whole microseconds truncated: + 0.5 us)."""
    itemized = any(o["name"].startswith("Delegate/") for o in ops)
    timed = []
    for o in ops:
        inside = o["name"].startswith("Delegate/")
        summed = not inside and "delegate" in o["type"].lower()  # TfLiteXNNPackDelegate: the whole partition
        if itemized and summed:
            continue
        timed.append({"op": o["type"] if inside or summed else o["type"].split("/")[0], "delegated": inside or summed,
                      "us": [o["avg_ms"] * 1e3]})
    note = ("tflite benchmark_model --enable_op_profiling on the device: average per run, "
            + ("XNNPACK's operators itemized" if itemized else
               "XNNPACK's operators not itemized by this build (before TF 2.9.1): one row for its partition"))
    return tflite_timed(timed, note, runs)


def _whole_us_mean(values: list[float]) -> float:
    """An operator's time from XNNPACK's readings, whole microseconds truncated (``xnn_get_elapsed_time`` divides
    nanoseconds by 1000): a reading r means a time in [r, r + 1) us, so the mean reading, without runs the machine
    interrupted (above three times the median plus 2 us), plus half a microsecond. A 0.3 us operator reads 0 in
    every run and is given 0.5 us; the error of any one operator is under half a microsecond."""
    cut = 3 * _median(values) + 2
    kept = [v for v in values if v <= cut]
    return (sum(kept) / len(kept) if kept else 0.0) + 0.5


def tflite_profiled(interpreter, timer, path: str, threads: int, runs: int, inputs: list[bytes]) -> tuple[str, list]:
    """LiteRT's operators timed by its C API's profiler over ``runs`` inferences (``timer``: litert_timer.py), or,
    where that profiler is missing or refuses the model, the interpreter's op list untimed, saying why."""
    timed, note = timer.timed_ops(path, threads, runs, inputs)
    if timed is None:
        source, rows = tflite_layers(interpreter)
        return f"{source}; the C API profiler: {note}", rows
    return tflite_timed(timed, note)


def tflite_layers(interpreter) -> tuple[str, list[dict]]:
    """Each operator with its input dtype and where it runs: in XNNPACK (LiteRT's default delegate) or in LiteRT's
    builtin kernels (an operator XNNPACK does not take, which also splits the graph into several partitions). The
    runner's profile where LiteRT's C API profiler is missing (``litert_timer``): no times."""
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    ops = interpreter._get_ops_details()  # the only op list the Python interpreter exposes
    partitions = sum(op["op_name"] == "DELEGATE" for op in ops)
    taken = delegated(ops) if partitions else {}
    out = []
    for op in ops:
        if op["op_name"] == "DELEGATE":
            continue
        first = next((tensors[i] for i in op["inputs"] if i >= 0 and i in tensors), None)
        dtype = str(getattr(first["dtype"], "__name__", first["dtype"])) if first else ""
        compute = op["op_name"] in TFLITE_COMPUTE
        precision = ("int8" if dtype in ("int8", "uint8", "int16") else "float" if dtype.startswith("float")
                     else None) if compute else None
        where = "XNNPACK" if op["index"] in taken else "builtin"
        out.append({"name": f"{op['index']}:{op['op_name']}", "op": op["op_name"],
                    "kernel": f"{dtype} {where}".strip(), "compute": compute, "precision": precision, "us": None,
                    "calls": None, "delegated": op["index"] in taken})
    return (f"litert op list, {partitions} XNNPACK partition(s) (no per-op timer here: "
            "no times)"), out


def _median(values: list[float]) -> float:
    v = sorted(values)
    return (v[len(v) // 2] + v[(len(v) - 1) // 2]) / 2 if v else 0.0


def _mid_mean(values: list[float]) -> float:
    """The mean of the middle half of ``values`` (their median for fewer than four): robust to a run the machine
    interrupted like the median, and finer than the runtimes' whole microseconds, which a median keeps (a 2.4 us
    layer read as 2 or 3 us each run has the median 2, and a middle mean near 2.4)."""
    v = sorted(values)
    if len(v) < 4:
        return _median(v)
    q = len(v) // 4
    return sum(v[q:len(v) - q]) / (len(v) - 2 * q)


WARM_RUNS = 3  # uncounted inferences before each counted one (ov_counted)


def ov_counted(request, counted: dict) -> None:
    """``WARM_RUNS`` inferences, then one whose counters are added to ``counted`` (``ov_count``). Reading the
    counters after every inference runs Python code between two inferences that a timed loop does not run, and
    the next inference starts with colder caches: on the AMX host the layers of random architectures then summed
    to a median 1.55x their p50 at 1 thread (1.0-3.0x, the smallest the most), and to 0.92x (0.74-1.08x) when each
    counted inference follows three uncounted ones (benchmarks/results/counters_vs_p50.json)."""
    for _ in range(WARM_RUNS):
        request.infer()
    request.infer()
    ov_count(request, counted)


def ov_count(request, counted: dict) -> None:
    """Add the last inference's executed nodes to ``counted`` (node -> [type, execution type, [us per run]])."""
    for p in request.get_profiling_info():
        if p.status == p.Status.EXECUTED:
            counted.setdefault(p.node_name, [p.node_type, p.exec_type, []])[2].append(p.real_time.total_seconds() * 1e6)


def layer_profile(source: str, rows: list[dict], int8_artifact: bool, top: int = 15) -> dict:
    """Each layer's time per inference over the profiled runs (their middle mean, ``_mid_mean``; the first, cold
    run does not count), the slowest ``top`` of them (every layer where there are no times), and the compute
    layers of an INT8 artifact that ran in float kernels (a quantized model that is not all integer)."""
    timed = bool(rows) and all(r["us"] is not None for r in rows)
    total = sum(r["us"] for r in rows) if timed else None
    layers = []
    for r in rows:
        ms = round(r["us"] / 1e3, 5) if timed else None
        layers.append({"name": r["name"], "op": r["op"], "kernel": r["kernel"], "precision": r["precision"],
                       "ms": ms, "share": round(r["us"] / total, 4) if timed and total else None,
                       "float_fallback": bool(int8_artifact and r["compute"] and r["precision"] == "float")})
    if timed:
        layers.sort(key=lambda r: -r["ms"])
    fallbacks = [r["name"] for r in layers if r["float_fallback"]]
    kept = layers[:top] if timed else layers
    kept += [r for r in layers[top:] if r["float_fallback"]] if timed else []
    by_op: dict = {}
    for r in layers:
        by_op[r["op"]] = round(by_op.get(r["op"], 0.0) + (r["ms"] or 0.0), 5)
    runs = max((r["calls"] or 0 for r in rows), default=0)
    # LiteRT: the operators its default delegate (XNNPACK) did not take, which run in its builtin kernels
    delegating = any("delegated" in r for r in rows)
    not_delegated = [r["name"] for r in rows if not r.get("delegated", True)] if delegating else None
    return {"source": source, "runs": runs, "total_ms": round(total / 1e3, 5) if timed and total else None,
            "layer_count": len(layers), "compute_layers": sum(1 for r in rows if r["compute"]),
            "int8_compute_layers": sum(1 for r in rows if r["compute"] and r["precision"] == "int8"),
            "float_fallbacks": fallbacks, "not_delegated": not_delegated, "by_op_ms": by_op if timed else None,
            "layers": kept}
